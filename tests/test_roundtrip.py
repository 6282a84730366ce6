"""Round trips through a real Redis and real worker processes (SPEC §2)."""

from __future__ import annotations

import asyncio
import time

import pytest

from taskmesh import (
    TaskCancelledError,
    TaskFailedError,
    TaskInfo,
    TaskManager,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
)
from tests import tasks
from tests.conftest import namespace_keys

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)

WAIT = 20.0  # generous upper bound on any single wait; never a sleep


def run(coro_fn):
    """Runs ``coro_fn()`` in a fresh event loop."""
    return asyncio.run(coro_fn())


@pytest.mark.parametrize(
    "func",
    [tasks.add, tasks.async_add, "tests.tasks:add", "tests.tasks:async_add"],
    ids=["sync-callable", "async-callable", "sync-import-string", "async-import-string"],
)
def test_round_trip_sync_and_async(tm, worker_factory, func):
    task_id = tm.register_task(func, 2, 3)
    worker_factory("--burst")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 5
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
    assert tm.get_task_result(task_id) == 5
    assert tm.get_task_error(task_id) is None


@pytest.mark.parametrize("executor_type", ["async", "thread_pool", "sequential"])
def test_round_trip_each_executor(tm, worker_factory, executor_type):
    ids = [tm.register_task(tasks.add, 1, 1, executor_type=executor_type),
           tm.register_task("tests.tasks:add", 2, 2, executor_type=executor_type)]
    if executor_type != "thread_pool":
        ids.append(tm.register_task(tasks.async_add, 3, 3, executor_type=executor_type))
    worker_factory("--burst")
    assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [2, 4, 6][:len(ids)]


def test_thread_pool_runs_coroutine_function(tm, worker_factory):
    """An ``async def`` given executor_type="thread_pool" must still run (its
    coroutine awaited, in a pool thread or on the loop), never come back as an
    unawaited coroutine object that then fails to serialize."""
    task_id = tm.register_task(tasks.async_add, 2, 3, executor_type="thread_pool")
    worker_factory("--burst")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 5


def test_async_execute_and_wait(backend, namespace, worker_factory):
    worker_factory()

    async def main():
        async with backend.manager(namespace=namespace) as tm:
            deferred = tm.register_task(tasks.async_add, 20, 22, defer=True)
            assert tm.get_task_status(deferred) is TaskStatus.PENDING
            result = await tm.execute_task(deferred, wait=True, timeout=WAIT)
            queued = tm.register_task(tasks.add, 1, 2)
            # execute_task on a task that is not PENDING is a no-op (and may wait)
            again = await tm.execute_task(queued, wait=True, timeout=WAIT)
            waited = await tm.wait_for_task(queued, timeout=WAIT)
            return result, again, waited

    assert run(main) == (42, 3, 3)


def test_kwargs_and_tuples_survive(tm, worker_factory):
    args = ((1, 2), [3, 4], {"k": (5, 6)}, b"raw", None, 1.5, 2**70)
    kwargs = {"t": (7, (8, 9)), "l": [10, (11,)], "s": "text"}
    echo_ids = [tm.register_task(func, *args, kwargs=kwargs)
                for func in (tasks.echo, tasks.async_echo)]
    types_id = tm.register_task(tasks.types_of, (1,), [2], kwargs={"t": (3,)})
    worker_factory("--burst")
    for task_id in echo_ids:
        got_args, got_kwargs = tm.wait_for_task_sync(task_id, timeout=WAIT)
        assert got_args == args
        assert type(got_args) is tuple
        assert type(got_args[0]) is tuple
        assert type(got_args[1]) is list
        assert type(got_args[2]["k"]) is tuple
        assert got_kwargs == kwargs
        assert type(got_kwargs["t"]) is tuple and type(got_kwargs["t"][1]) is tuple
        assert type(got_kwargs["l"][1]) is tuple
    # and what the function itself received (not just what it returned)
    assert tm.wait_for_task_sync(types_id, timeout=WAIT) == (["tuple", "list"], {"t": "tuple"})


def test_args_keyword_and_func_keyword(tm, worker_factory):
    a = tm.register_task(tasks.add, args=(4, 5))
    b = tm.register_task(func=tasks.add, name="by keyword", args=[6, 7])
    c = tm.register_task(name="import by keyword", func="tests.tasks:add", kwargs={"a": 1, "b": 2})
    worker_factory("--burst")
    assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in (a, b, c)] == [9, 13, 3]
    assert tm.get_task(b).name == "by keyword"


def test_register_many(tm, worker_factory):
    ids = tm.register_many(tasks.echo, [(1, 2), [3, 4], 5, ((6,),)], kwargs={"k": 1},
                           priority=TaskPriority.HIGH, tags=["batch"])
    assert len(ids) == len(set(ids)) == 4
    assert all(tm.get_task(i).tags == ["batch"] for i in ids)
    worker_factory("--burst")
    results = [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids]
    # a tuple item is unpacked as positional args; any other item is one argument
    assert results == [((1, 2), {"k": 1}), (([3, 4],), {"k": 1}), ((5,), {"k": 1}),
                       (((6,),), {"k": 1})]
    assert tm.register_many(tasks.add, []) == []


def test_none_result(tm, worker_factory):
    task_id = tm.register_task(tasks.return_none)
    worker_factory("--burst")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) is None
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
    assert tm.get_task_result(task_id) is None


def test_wait_timeout_raises_timeout_error(backend, namespace):
    # No worker: the task stays QUEUED and the wait must give up.
    async def main():
        async with backend.manager(namespace=namespace) as tm:
            task_id = tm.register_task(tasks.add, 1, 2)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await tm.wait_for_task(task_id, timeout=0.3)
            elapsed = time.monotonic() - started
            with pytest.raises(TimeoutError):
                await tm.execute_task(task_id, wait=True, timeout=0.2)
            return task_id, elapsed

    task_id, elapsed = run(main)
    assert 0.25 <= elapsed < 3.0
    with backend.manager(namespace=namespace) as tm:
        with pytest.raises(TimeoutError):
            tm.wait_for_task_sync(task_id, timeout=0.2)
        assert tm.get_task_status(task_id) is TaskStatus.QUEUED


@pytest.mark.parametrize("func", [tasks.fail, tasks.async_fail, "tests.tasks:fail"])
def test_failure_carries_task_error(tm, worker_factory, func):
    task_id = tm.register_task(func, "it broke")
    worker_factory("--burst")
    with pytest.raises(TaskFailedError) as excinfo:
        tm.wait_for_task_sync(task_id, timeout=WAIT)
    err = excinfo.value.error
    assert err.type == "ValueError"
    assert err.message == "it broke"
    assert err.attempt == 1
    assert "ValueError" in (err.traceback or "")
    assert excinfo.value.task_id == task_id
    assert tm.get_task_status(task_id) is TaskStatus.FAILED
    assert tm.get_task_result(task_id) is None
    stored = tm.get_task_error(task_id)
    assert stored is not None and stored.type == "ValueError" and stored.message == "it broke"
    assert tm.get_task(task_id).error == stored


def test_sync_twins(tm, worker_factory):
    deferred = tm.register_task(tasks.add, 5, 6, defer=True)
    to_cancel = tm.register_task(tasks.add, 0, 0, defer=True)
    worker_factory()
    assert tm.execute_task_sync(deferred, wait=True, timeout=WAIT) == 11
    assert tm.wait_for_task_sync(deferred, timeout=WAIT) == 11

    assert tm.cancel_task_sync(to_cancel) is True
    assert tm.get_task_status(to_cancel) is TaskStatus.CANCELLED
    assert tm.cancel_task_sync(to_cancel) is False  # already terminal
    assert tm.cancel_task_sync(deferred) is False  # completed
    with pytest.raises(TaskCancelledError):
        tm.wait_for_task_sync(to_cancel, timeout=WAIT)
    with pytest.raises(TaskCancelledError):
        tm.execute_task_sync(to_cancel, wait=True, timeout=WAIT)
    # execute without waiting returns None
    other = tm.register_task(tasks.add, 1, 1, defer=True)
    assert tm.execute_task_sync(other) is None
    assert tm.wait_for_task_sync(other, timeout=WAIT) == 2


def test_async_cancel(backend, namespace):
    async def main():
        async with backend.manager(namespace=namespace) as tm:
            pending = tm.register_task(tasks.add, 1, 2, defer=True)
            queued = tm.register_task(tasks.add, 1, 2)
            assert await tm.cancel_task(pending) is True
            assert await tm.cancel_task(queued) is True
            assert await tm.cancel_task(queued) is False
            with pytest.raises(TaskCancelledError):
                await tm.wait_for_task(queued, timeout=WAIT)
            return [tm.get_task_status(i) for i in (pending, queued)]

    assert run(main) == [TaskStatus.CANCELLED, TaskStatus.CANCELLED]


@pytest.mark.single_backend  # counts the raw task keys on the single server
def test_idempotent_task_id(tm, rds, namespace, worker_factory):
    first = tm.register_task(tasks.add, 1, 2, task_id="job-1", name="first")
    second = tm.register_task(tasks.add, 100, 200, task_id="job-1", name="second",
                              priority=TaskPriority.CRITICAL)
    assert first == second == "job-1"
    assert namespace_keys(rds, namespace, "task:*") == [f"taskmesh:{{{namespace}}}:task:job-1".encode()]
    info = tm.get_task("job-1")
    assert info.name == "first" and info.priority == TaskPriority.NORMAL
    worker_factory("--burst").wait(WAIT)
    assert tm.get_task_result("job-1") == 3
    # still idempotent once finished (the record is kept for result_ttl)
    assert tm.register_task(tasks.add, 5, 5, task_id="job-1") == "job-1"
    assert tm.get_task_result("job-1") == 3
    assert tm.get_task_status("job-1") is TaskStatus.COMPLETED


def test_defer_stays_pending_until_execute(tm, worker_factory):
    deferred = tm.register_task(tasks.add, 2, 2, defer=True)
    marker = tm.register_task(tasks.add, 0, 1)
    # A burst worker drains what is runnable and exits: the deferred task
    # is not runnable (and does not keep a burst worker alive).
    assert worker_factory("--burst").wait(WAIT) == 0
    assert tm.get_task_result(marker) == 1
    assert tm.get_task_status(deferred) is TaskStatus.PENDING
    assert tm.get_task(deferred).attempts == 0
    with pytest.raises(TimeoutError):
        tm.wait_for_task_sync(deferred, timeout=0.2)
    assert tm.execute_task_sync(deferred) is None
    assert tm.get_task_status(deferred) is TaskStatus.QUEUED
    assert worker_factory("--burst").wait(WAIT) == 0
    assert tm.wait_for_task_sync(deferred, timeout=WAIT) == 4


def test_get_task_fields(tm, worker_factory):
    dep = tm.register_task(tasks.add, 0, 0, name="dep")
    before = time.time()
    task_id = tm.register_task(
        tasks.my_function, 1, 2, name="My Task", kwargs={"param1": 1},
        priority=TaskPriority.HIGH, dependencies=[dep], max_retries=3, retry_delay=1.0,
        timeout=60.0, description="a description", tags=["a", "b"],
        metadata={"k": "v", "n": 1}, executor_type="thread_pool",
    )
    info = tm.get_task(task_id)
    assert isinstance(info, TaskInfo)
    assert info.id == task_id
    assert info.name == "My Task"
    assert info.description == "a description"
    assert info.status is TaskStatus.WAITING
    assert info.priority == 10
    assert info.queue == "default"
    assert info.executor_type == "thread_pool"
    assert info.dependencies == [dep]
    assert info.attempts == 0
    assert info.max_retries == 3
    assert info.worker is None
    assert info.created_at is not None and before - 1 <= info.created_at <= time.time() + 1
    assert info.started_at is None and info.finished_at is None
    assert info.progress == 0.0 and info.progress_message is None
    assert info.tags == ["a", "b"]
    assert info.metadata == {"k": "v", "n": 1}
    assert info.error is None

    worker_factory("--burst", "--name", "the-worker")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 4
    info = tm.get_task(task_id)
    assert info.status is TaskStatus.COMPLETED
    assert info.attempts == 1
    assert info.worker == "the-worker"
    assert info.created_at <= info.started_at <= info.finished_at
    assert info.progress == 0.5 and info.progress_message == "Halfway done"
    assert tm.get_task_progress(task_id) == (0.5, "Halfway done")
    assert info.error is None
    # default name: the function's qualified name, or the import string
    assert tm.get_task(dep).name == "dep"
    assert tm.get_task(tm.register_task(tasks.add, 1, 1, defer=True)).name == "add"
    assert tm.get_task(tm.register_task("tests.tasks:add", 1, 1, defer=True)).name \
        == "tests.tasks:add"


def test_progress_from_producer(tm):
    task_id = tm.register_task(tasks.add, 1, 1, defer=True)
    assert tm.get_task_progress(task_id) == (0.0, None)
    assert tm.update_task_progress(task_id, 0.5, message="Halfway done") is True
    assert tm.get_task_progress(task_id) == (0.5, "Halfway done")
    assert tm.update_task_progress(task_id, 1) is True
    assert tm.get_task_progress(task_id) == (1.0, None)
    tm.cancel_task_sync(task_id)
    # terminal: nothing recorded, returns False
    assert tm.update_task_progress(task_id, 0.1, "late") is False
    assert tm.get_task_progress(task_id) == (1.0, None)


def test_namespaces_isolate(backend, worker_factory, namespace):
    ns_a, ns_b = namespace + "a", namespace + "b"
    with backend.manager(namespace=ns_a) as tm_a, \
            backend.manager(namespace=ns_b) as tm_b:
        in_b = tm_b.register_task(tasks.add, 1, 1)
        in_a = tm_a.register_task(tasks.add, 2, 2)
        with pytest.raises(TaskNotFoundError):
            tm_a.get_task(in_b)

        worker_a = worker_factory("--burst", namespace=ns_a)
        assert worker_a.wait(WAIT) == 0
        assert tm_a.get_task_result(in_a) == 4
        # ns A's worker drained its queue and never touched ns B's task
        assert tm_b.get_task_status(in_b) is TaskStatus.QUEUED
        assert tm_b.get_task(in_b).attempts == 0

        worker_b = worker_factory("--burst", namespace=ns_b)
        assert worker_b.wait(WAIT) == 0
        assert tm_b.get_task_result(in_b) == 2


def test_context_manager_closes_workers(backend, namespace):
    with backend.manager(namespace=namespace) as tm:
        handle = tm.start_worker(concurrency=2, lease_timeout=3.0, grace_period=2.0)
        task_id = tm.register_task(tasks.add, 3, 4)
        assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 7
        assert handle.is_alive()
    assert not handle.is_alive()


def test_start_worker_in_process(tm):
    handle = tm.start_worker(concurrency=4, lease_timeout=3.0, grace_period=2.0, name="inproc")
    try:
        ids = [tm.register_task(tasks.add, i, i, executor_type=ex)
               for i, ex in enumerate(["async", "thread_pool", "sequential"])]
        ids.append(tm.register_task("tests.tasks:async_add", 10, 10))
        assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [0, 2, 4, 20]
        assert tm.get_task(ids[0]).worker == "inproc"
    finally:
        assert handle.stop(timeout=WAIT) is True
    assert not handle.is_alive()
    # stopped: new work is not picked up
    later = tm.register_task(tasks.add, 1, 1)
    with pytest.raises(TimeoutError):
        tm.wait_for_task_sync(later, timeout=0.3)
    assert tm.get_task_status(later) is TaskStatus.QUEUED
