"""Reliability and security defects found by an independent attack (issue 8).

Each test here failed before its fix. They run against the suite's private
redis-server and real ``taskmesh worker`` processes (tests/conftest.py).
"""

from __future__ import annotations

import pytest

from taskmesh import SerializationError, TaskFailedError, TaskManager, TaskStatus
from tests import bad_tasks, tasks
from tests.conftest import RedisServer, namespace_snapshot

WAIT = 20.0


# ---- 17: registration catches everything, stores nothing ------------------------------

@pytest.mark.parametrize(
    "call, part",
    [
        (lambda tm: tm.register_task(tasks.echo, bad_tasks.ExitOnPickle()), "args[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, bad_tasks.InterruptOnPickle()), "args[1]"),
        (lambda tm: tm.register_task(tasks.echo, kwargs={"x": bad_tasks.ExitOnPickle()}),
         "kwargs['x']"),
        (lambda tm: tm.register_many(tasks.echo, [1, bad_tasks.ExitOnPickle()]), "args[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, name="bad \udc80 name"), "name"),
        (lambda tm: tm.register_task(tasks.echo, 1, description="\udcff"), "description"),
        (lambda tm: tm.register_task(tasks.echo, 1, task_id="id-\ud800"), "task_id"),
        (lambda tm: tm.register_task(tasks.echo, 1, dependencies=["\udc80"]), "dependencies[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, metadata={"k": "\udc80"}), "metadata"),
    ],
    ids=["reduce-systemexit", "reduce-keyboardinterrupt", "kwarg-systemexit", "many",
         "surrogate-name", "surrogate-description", "surrogate-task-id",
         "surrogate-dependency", "surrogate-metadata"],
)
def test_registration_turns_everything_into_serialization_error(tm, rds, namespace, call, part):
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(SerializationError) as info:
        call(tm)
    assert info.value.part == part
    assert part in str(info.value)
    assert namespace_snapshot(rds, namespace) == before


def test_surrogate_in_a_string_argument_round_trips(tm, worker_factory):
    """A lone surrogate or an int over 64 bits inside an *argument* is carried
    intact (that part alone pickled) also when func is a callable."""
    task_id = tm.register_task(tasks.echo, "a\udc80b", 2**70)
    worker_factory("--burst")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == (("a\udc80b", 2**70), {})
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED


# ---- 2: results too large for the limit, or for Redis ---------------------------------

def test_result_over_max_payload_bytes_fails_that_task(tm, worker_factory):
    worker = worker_factory("--burst", "--max-payload-bytes", "4000")
    big = tm.register_task("tests.bad_tasks:return_bytes", 10_000)
    small = tm.register_task("tests.bad_tasks:return_bytes", 10)
    assert tm.wait_for_task_sync(small, timeout=WAIT) == b"\0" * 10
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(big, timeout=WAIT)
    assert info.value.error.type == "PayloadTooLargeError"
    assert "result" in info.value.error.message and "4000" in info.value.error.message
    assert worker.wait() == 0


@pytest.fixture
def small_bulk_redis():
    """A Redis that refuses any argument over 1 MB (proto-max-bulk-len)."""
    server = RedisServer(extra_args=["--proto-max-bulk-len", "1mb"])
    server.start()
    yield server
    server.cleanup()


def test_outcome_redis_refuses_fails_that_task_and_holds_up_no_other(small_bulk_redis,
                                                                     namespace, worker_factory):
    """A 2 MB result passes the worker's limit but Redis drops the connection
    over it: that task ends FAILED (PayloadTooLargeError), and the 20 tasks
    reported alongside it are all reported too."""
    with TaskManager(small_bulk_redis.url, namespace=namespace) as tm:
        big = tm.register_task("tests.bad_tasks:return_bytes", 2 * 1024 * 1024)
        huge_error = tm.register_task("tests.bad_tasks:raise_huge_message", 2 * 1024 * 1024)
        others = tm.register_many("tests.bad_tasks:return_bytes", list(range(20)))
        worker = worker_factory("--concurrency", "30", "--max-payload-bytes", str(8 << 20),
                                url=small_bulk_redis.url)
        assert [tm.wait_for_task_sync(t, timeout=WAIT) for t in others] == [
            b"\0" * n for n in range(20)]
        with pytest.raises(TaskFailedError) as info:
            tm.wait_for_task_sync(big, timeout=WAIT)
        assert info.value.error.type == "PayloadTooLargeError"
        assert "result" in info.value.error.message
        with pytest.raises(TaskFailedError) as info:
            tm.wait_for_task_sync(huge_error, timeout=WAIT)
        assert info.value.error.type == "ValueError"  # message capped, so it fits
        assert len(info.value.error.message) < 100_000
        assert worker.returncode is None
