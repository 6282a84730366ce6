"""Bad input raises before anything is stored (SPEC §2, §10); unknown ids
raise TaskNotFoundError everywhere."""

from __future__ import annotations

import asyncio
import threading

import pytest

from taskmesh import (
    PayloadTooLargeError,
    SerializationError,
    TaskManager,
    TaskmeshError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
)
from tests import tasks
from tests.conftest import namespace_keys, namespace_snapshot


def _generator():
    yield 1


class NotCallable:
    pass


LOCK = threading.Lock()


def _closure_over_lock():
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    return uses_lock


BAD_REGISTRATIONS = [
    # (id, exception, args, kwargs)
    ("func-int", TypeError, (42,), {}),
    ("func-none", TypeError, (None,), {}),
    ("func-object", TypeError, (NotCallable(),), {}),
    ("func-bad-import-string", TypeError, ("not an import string",), {}),
    ("func-bad-import-string-2", TypeError, ("module:",), {}),
    ("func-keyword-not-callable", TypeError, (), {"func": 3.5}),
    ("priority-bool", TypeError, (tasks.add, 1, 2), {"priority": True}),
    ("priority-float", TypeError, (tasks.add, 1, 2), {"priority": 5.0}),
    ("priority-str", TypeError, (tasks.add, 1, 2), {"priority": "high"}),
    ("star-args-and-args", TypeError, (tasks.add, 1), {"args": (2,)}),
    ("priority-negative", ValueError, (tasks.add, 1, 2), {"priority": -1}),
    ("priority-256", ValueError, (tasks.add, 1, 2), {"priority": 256}),
    ("max-retries-negative", ValueError, (tasks.add, 1, 2), {"max_retries": -1}),
    ("retry-delay-negative", ValueError, (tasks.add, 1, 2), {"retry_delay": -0.5}),
    ("timeout-zero", ValueError, (tasks.add, 1, 2), {"timeout": 0}),
    ("timeout-negative", ValueError, (tasks.add, 1, 2), {"timeout": -1.0}),
    ("retry-backoff-below-1", ValueError, (tasks.add, 1, 2), {"retry_backoff": 0.5}),
    ("name-empty", ValueError, (tasks.add, 1, 2), {"name": ""}),
    ("name-blank", ValueError, (tasks.add, 1, 2), {"name": "   "}),
    ("executor-unknown", ValueError, (tasks.add, 1, 2), {"executor_type": "forked"}),
    ("dependency-unknown", TaskNotFoundError, (tasks.add, 1, 2), {"dependencies": ["nope"]}),
    ("retry-delay-nan", ValueError, (tasks.add, 1, 2), {"retry_delay": float("nan")}),
    ("timeout-bool", TypeError, (tasks.add, 1, 2), {"timeout": True}),
    ("max-retries-float", TypeError, (tasks.add, 1, 2), {"max_retries": 1.5}),
    ("kwargs-not-dict", TypeError, (tasks.add,), {"kwargs": [("a", 1)]}),
    ("kwargs-non-str-key", TypeError, (tasks.add,), {"kwargs": {1: 2}}),
    ("args-is-a-string", TypeError, (tasks.add,), {"args": "ab"}),
    ("tags-is-a-string", TypeError, (tasks.add, 1, 2), {"tags": "abc"}),
    ("metadata-not-dict", TypeError, (tasks.add, 1, 2), {"metadata": ["k", "v"]}),
    ("dependencies-is-a-string", TypeError, (tasks.add, 1, 2), {"dependencies": "abc"}),
    ("queue-empty", ValueError, (tasks.add, 1, 2), {"queue": ""}),
    ("task-id-empty", ValueError, (tasks.add, 1, 2), {"task_id": ""}),
    ("func-unpicklable", SerializationError, (_closure_over_lock(),), {}),
    ("arg-lock", SerializationError, (tasks.echo, 1, LOCK), {}),
    ("kwarg-generator", SerializationError, (tasks.echo,), {"kwargs": {"ok": 1, "x": _generator()}}),
]


def _assert_nothing_stored(rds, namespace):
    assert namespace_keys(rds, namespace) == []
    assert namespace_keys(rds, namespace, "task:*") == []
    assert namespace_keys(rds, namespace, "queue:*") == []


@pytest.mark.parametrize("exc_type,args,kwargs",
                         [b[1:] for b in BAD_REGISTRATIONS], ids=[b[0] for b in BAD_REGISTRATIONS])
def test_bad_registration_raises_and_stores_nothing(tm, rds, namespace, exc_type, args, kwargs):
    with pytest.raises(exc_type):
        tm.register_task(*args, **kwargs)
    _assert_nothing_stored(rds, namespace)


@pytest.mark.parametrize("exc_type,args,kwargs",
                         [b[1:] for b in BAD_REGISTRATIONS if b[0] != "star-args-and-args"],
                         ids=[b[0] for b in BAD_REGISTRATIONS if b[0] != "star-args-and-args"])
def test_bad_registration_next_to_existing_tasks_changes_nothing(tm, rds, namespace, exc_type,
                                                                 args, kwargs):
    """With tasks already stored, a bad registration leaves every key of the
    namespace byte-for-byte unchanged (no record, no counter, no event)."""
    tm.register_task(tasks.add, 1, 1)
    tm.register_task(tasks.add, 1, 1, defer=True, priority=TaskPriority.HIGH)
    before = namespace_snapshot(rds, namespace)
    assert before
    with pytest.raises(exc_type):
        tm.register_task(*args, **kwargs)
    assert namespace_snapshot(rds, namespace) == before


def test_unknown_dependency_among_known_ones_stores_nothing(tm, rds, namespace):
    known = tm.register_task(tasks.add, 1, 1, defer=True)
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(TaskNotFoundError) as excinfo:
        tm.register_task(tasks.add, 2, 2, dependencies=[known, "missing-dep"])
    assert "missing-dep" in str(excinfo.value)
    assert namespace_snapshot(rds, namespace) == before


def test_exceptions_share_the_root(tm):
    with pytest.raises(TaskmeshError):
        tm.register_task(tasks.add, dependencies=["nope"])
    with pytest.raises(TaskmeshError):
        tm.register_task(tasks.echo, LOCK)


@pytest.mark.parametrize(
    "args,kwargs,part",
    [
        ((_closure_over_lock(),), {}, "func"),
        ((tasks.echo, 1, LOCK), {}, "args[1]"),
        ((tasks.echo, LOCK, 2), {}, "args[0]"),
        ((tasks.echo,), {"kwargs": {"ok": 1, "x": _generator()}}, "kwargs['x']"),
        ((tasks.echo,), {"args": [1, 2, _generator()]}, "args[2]"),
    ],
    ids=["func", "args[1]", "args[0]", "kwargs['x']", "args=[...][2]"],
)
def test_serialization_error_names_the_part(tm, rds, namespace, args, kwargs, part):
    with pytest.raises(SerializationError) as excinfo:
        tm.register_task(*args, **kwargs)
    assert excinfo.value.part == part
    assert part in str(excinfo.value)
    _assert_nothing_stored(rds, namespace)


def test_payload_too_large(redis_server, rds, namespace):
    with TaskManager(redis_server.url, namespace=namespace, max_payload_bytes=1000) as small:
        small.register_task(tasks.echo, "x" * 10)  # fits
        before = namespace_snapshot(rds, namespace)
        with pytest.raises(PayloadTooLargeError) as excinfo:
            small.register_task(tasks.echo, "x" * 5000)
        assert isinstance(excinfo.value, SerializationError)
        with pytest.raises(PayloadTooLargeError):
            small.register_task(tasks.echo, kwargs={"blob": b"\0" * 2000})
        assert namespace_snapshot(rds, namespace) == before


def test_payload_too_large_default_limit_is_16_mib(tm, rds, namespace):
    with pytest.raises(PayloadTooLargeError):
        tm.register_task(tasks.echo, b"\0" * (16 * 1024 * 1024 + 1))
    _assert_nothing_stored(rds, namespace)


def test_register_many_validates_everything_first(tm, rds, namespace):
    with pytest.raises(SerializationError) as excinfo:
        tm.register_many(tasks.add, [(1, 2), (3, 4), (LOCK, 5)])
    assert excinfo.value.part == "args[0]"
    with pytest.raises(ValueError):
        tm.register_many(tasks.add, [(1, 2)], priority=300)
    with pytest.raises(TaskNotFoundError):
        tm.register_many(tasks.add, [(1, 2), (3, 4)], dependencies=["nope"])
    with pytest.raises(TypeError):
        tm.register_many(42, [(1, 2)])
    _assert_nothing_stored(rds, namespace)


def test_valid_edge_values_are_accepted(tm):
    """The boundaries themselves are valid (0 and 255, zero delay/retries, backoff 1)."""
    for kwargs in ({"priority": 0}, {"priority": 255}, {"priority": TaskPriority.CRITICAL},
                   {"max_retries": 0, "retry_delay": 0, "retry_backoff": 1},
                   {"timeout": 0.001}, {"executor_type": "sequential"},
                   {"executor_type": "thread_pool"}, {"executor_type": "async"}):
        task_id = tm.register_task(tasks.add, 1, 2, defer=True, **kwargs)
        assert tm.get_task_status(task_id) is TaskStatus.PENDING


# ---- unknown ids -----------------------------------------------------------------------

SYNC_ID_CALLS = {
    "get_task_status": lambda tm, i: tm.get_task_status(i),
    "get_task_result": lambda tm, i: tm.get_task_result(i),
    "get_task_error": lambda tm, i: tm.get_task_error(i),
    "get_task_progress": lambda tm, i: tm.get_task_progress(i),
    "get_task": lambda tm, i: tm.get_task(i),
    "update_task_progress": lambda tm, i: tm.update_task_progress(i, 0.5, "x"),
    "cancel_task_sync": lambda tm, i: tm.cancel_task_sync(i),
    "execute_task_sync": lambda tm, i: tm.execute_task_sync(i),
    "execute_task_sync_wait": lambda tm, i: tm.execute_task_sync(i, wait=True, timeout=5),
    "wait_for_task_sync": lambda tm, i: tm.wait_for_task_sync(i, timeout=5),
}


@pytest.mark.parametrize("call", list(SYNC_ID_CALLS.values()), ids=list(SYNC_ID_CALLS))
def test_unknown_id_raises_task_not_found(tm, rds, namespace, call):
    with pytest.raises(TaskNotFoundError) as excinfo:
        call(tm, "no-such-task")
    assert excinfo.value.task_id == "no-such-task"
    _assert_nothing_stored(rds, namespace)


ASYNC_ID_CALLS = {
    "cancel_task": lambda tm, i: tm.cancel_task(i),
    "execute_task": lambda tm, i: tm.execute_task(i),
    "execute_task_wait": lambda tm, i: tm.execute_task(i, wait=True, timeout=5),
    "wait_for_task": lambda tm, i: tm.wait_for_task(i, timeout=5),
}


@pytest.mark.parametrize("call", list(ASYNC_ID_CALLS.values()), ids=list(ASYNC_ID_CALLS))
def test_unknown_id_raises_task_not_found_async(redis_server, rds, namespace, call):
    async def main():
        async with TaskManager(redis_server.url, namespace=namespace) as tm:
            with pytest.raises(TaskNotFoundError):
                await call(tm, "no-such-task")

    asyncio.run(main())
    _assert_nothing_stored(rds, namespace)


def test_unknown_ids_are_per_namespace(redis_server, namespace):
    with TaskManager(redis_server.url, namespace=namespace + "x") as other, \
            TaskManager(redis_server.url, namespace=namespace) as tm:
        task_id = other.register_task(tasks.add, 1, 1, defer=True)
        with pytest.raises(TaskNotFoundError):
            tm.get_task_status(task_id)
        with pytest.raises(TaskNotFoundError):
            tm.cancel_task_sync(task_id)
        assert other.get_task_status(task_id) is TaskStatus.PENDING


# ---- progress and settings ------------------------------------------------------------------

@pytest.mark.parametrize("progress", [-0.01, 1.01, 2, -1, float("inf"), float("nan")])
def test_progress_out_of_range(tm, rds, namespace, progress):
    task_id = tm.register_task(tasks.add, 1, 1, defer=True)
    tm.update_task_progress(task_id, 0.3, "ok")
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(ValueError):
        tm.update_task_progress(task_id, progress)
    assert tm.get_task_progress(task_id) == (0.3, "ok")
    assert namespace_snapshot(rds, namespace) == before


def test_progress_bounds_accepted(tm):
    task_id = tm.register_task(tasks.add, 1, 1, defer=True)
    assert tm.update_task_progress(task_id, 0) is True
    assert tm.update_task_progress(task_id, 1.0) is True
    assert tm.get_task_progress(task_id) == (1.0, None)


@pytest.mark.parametrize("limit", [0, -1])
def test_set_max_concurrent_tasks_below_one(tm, rds, namespace, limit):
    with pytest.raises(ValueError):
        tm.set_max_concurrent_tasks(limit)
    _assert_nothing_stored(rds, namespace)


def test_constructor_max_concurrent_tasks_below_one(redis_server, rds, namespace):
    with pytest.raises(ValueError):
        TaskManager(redis_server.url, namespace=namespace, max_concurrent_tasks=0)
    _assert_nothing_stored(rds, namespace)
