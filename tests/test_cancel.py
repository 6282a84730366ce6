"""cancel_task in every non-terminal status."""

from __future__ import annotations

import asyncio

import pytest

from taskmesh import TaskCancelledError, TaskNotFoundError, TaskStatus
from tests import semantics_tasks as st
from tests.helpers import wait_until

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)


def test_cancel_pending(tm):
    t = tm.register_task(st.noop, defer=True)
    assert tm.cancel_task_sync(t) is True
    assert tm.get_task_status(t) is TaskStatus.CANCELLED
    assert tm.get_task_error(t) is None
    assert tm.cancel_task_sync(t) is False  # terminal
    tm.execute_task_sync(t)  # no-op on a terminal task
    assert tm.get_task_status(t) is TaskStatus.CANCELLED


def test_cancel_waiting_and_cascade(tm, worker_factory):
    gate = tm.register_task(st.noop, defer=True)
    dependent = tm.register_task(st.noop, dependencies=[gate])
    downstream = tm.register_task(st.noop, dependencies=[dependent])
    assert tm.cancel_task_sync(dependent) is True
    assert tm.get_task_status(downstream) is TaskStatus.CANCELLED
    assert tm.get_task_error(downstream).type == "DependencyFailedError"
    tm.execute_task_sync(gate)
    worker_factory("--burst").wait(30)
    assert tm.get_task_status(gate) is TaskStatus.COMPLETED
    assert tm.get_task_status(dependent) is TaskStatus.CANCELLED


def test_cancel_queued_never_runs(tm, rds, redis_server, worker_factory, namespace):
    key = f"{namespace}:ran"
    t = tm.register_task(st.stamp, redis_server.url, key, "x")
    assert tm.get_task_status(t) is TaskStatus.QUEUED
    assert tm.cancel_task_sync(t) is True
    worker_factory("--burst").wait(30)
    assert rds.llen(key) == 0
    assert tm.get_task_status(t) is TaskStatus.CANCELLED
    with pytest.raises(TaskCancelledError):
        tm.wait_for_task_sync(t, timeout=5)


def test_cancel_scheduled_retry(tm, worker_factory):
    t = tm.register_task(st.fail, max_retries=3, retry_delay=60)
    worker_factory()
    wait_until(lambda: tm.get_task_status(t) is TaskStatus.SCHEDULED, what="SCHEDULED")
    assert tm.cancel_task_sync(t) is True
    assert tm.get_task_status(t) is TaskStatus.CANCELLED
    assert tm.get_metrics()["queues"]["default"]["scheduled"] == 0


def test_cancel_running_async_task(tm, rds, redis_server, worker_factory, namespace):
    key = f"{namespace}:async"
    t = tm.register_task(st.async_mark_then_sleep, redis_server.url, key, 30)
    worker_factory()
    assert rds.blpop([key], timeout=15)[1] == b"started"

    async def cancel_and_wait():
        assert await tm.cancel_task(t) is True
        with pytest.raises(TaskCancelledError):
            await tm.wait_for_task(t, timeout=10)

    asyncio.run(cancel_and_wait())
    assert rds.blpop([key], timeout=5)[1] == b"cancelled"
    assert tm.get_task_status(t) is TaskStatus.CANCELLED
    assert tm.cancel_task_sync(t) is False


def test_cancel_running_cooperative_thread_task(tm, rds, redis_server, worker_factory, namespace):
    key = f"{namespace}:coop"
    t = tm.register_task(st.cooperative, redis_server.url, key, executor_type="thread_pool")
    worker_factory()
    assert rds.blpop([key], timeout=15)[1] == b"started"
    assert tm.get_task_status(t) is TaskStatus.RUNNING
    assert tm.cancel_task_sync(t) is True
    with pytest.raises(TaskCancelledError):
        tm.wait_for_task_sync(t, timeout=10)
    assert rds.blpop([key], timeout=5)[1] == b"saw-cancelled"
    assert tm.get_task_result(t) is None  # the function returned; its result is dropped


def test_cancel_unknown_id(tm):
    with pytest.raises(TaskNotFoundError):
        tm.cancel_task_sync("nope")
