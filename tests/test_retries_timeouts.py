"""Retries with backoff, and timeouts in each executor."""

from __future__ import annotations

import time

import pytest

from taskmesh import TaskFailedError, TaskStatus
from tests import semantics_tasks as st
from tests import tasks
from tests.helpers import wait_until

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)


def test_retry_succeeds_on_third_attempt(tm, rds, redis_server, worker_factory, namespace):
    key = f"{namespace}:attempts"
    t = tm.register_task(st.succeed_on_attempt, redis_server.url, key, 3,
                         max_retries=3, retry_delay=0.05)
    worker_factory()
    assert tm.wait_for_task_sync(t, timeout=20) == 3
    info = tm.get_task(t)
    assert info.status is TaskStatus.COMPLETED and info.attempts == 3
    assert tm.get_task_error(t) is None
    assert tm.get_metrics()["totals"]["retried"] == 2


def test_retries_exhausted_record_last_failure(tm, worker_factory):
    t = tm.register_task(st.fail, "always", max_retries=2, retry_delay=0.01)
    worker_factory()
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(t, timeout=20)
    assert info.value.error.type == "ValueError"
    assert info.value.error.message == "always"
    assert info.value.error.attempt == 3
    assert "fail" in info.value.error.traceback
    assert tm.get_task(t).attempts == 3


def test_backoff_delay_is_respected(tm, rds, redis_server, worker_factory, namespace):
    key = f"{namespace}:attempts"
    t = tm.register_task(st.succeed_on_attempt, redis_server.url, key, 3,
                         max_retries=2, retry_delay=0.4, retry_backoff=2.0)
    worker_factory()
    tm.wait_for_task_sync(t, timeout=20)
    starts = [float(x.split()[1]) for x in rds.lrange(key, 0, -1)]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.4 - 0.02
    assert starts[2] - starts[1] >= 0.8 - 0.02


def test_async_timeout_cancels_the_attempt(tm, worker_factory):
    t = tm.register_task(st.async_sleep, 30, timeout=0.3)
    worker_factory()
    began = time.monotonic()
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(t, timeout=20)
    assert info.value.error.type == "TaskTimeoutError"
    assert time.monotonic() - began < 10


def test_async_timeout_is_retried(tm, worker_factory):
    t = tm.register_task(st.async_sleep, 30, timeout=0.2, max_retries=1, retry_delay=0.01)
    worker_factory()
    with pytest.raises(TaskFailedError):
        tm.wait_for_task_sync(t, timeout=20)
    assert tm.get_task(t).attempts == 2


@pytest.mark.parametrize("executor", ["thread_pool", "sequential"])
def test_thread_timeout_fails_at_deadline_and_sets_cancelled(
        tm, rds, redis_server, worker_factory, namespace, executor):
    key = f"{namespace}:coop"
    t = tm.register_task(st.cooperative, redis_server.url, key, timeout=0.3,
                         executor_type=executor)
    worker_factory()
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(t, timeout=20)
    assert info.value.error.type == "TaskTimeoutError"
    # The function saw current_task().cancelled and returned; its result is dropped.
    assert rds.blpop([key], timeout=5) is not None
    assert rds.blpop([key], timeout=5)[1] == b"saw-cancelled"
    assert tm.get_task_result(t) is None
    assert tm.get_task_status(t) is TaskStatus.FAILED


@pytest.mark.parametrize("executor", ["thread_pool", "async", "sequential"])
def test_timed_out_thread_keeps_its_slot_until_it_returns(
        tm, rds, redis_server, worker_factory, namespace, executor):
    """README *Timeouts and threads*: the slot stays taken until the function
    really returns, even with a spare thread (--threads above --concurrency)."""
    key, release = f"{namespace}:hold", f"{namespace}:release"
    held = tm.register_task(st.cooperative_then_hold, redis_server.url, key, release,
                            timeout=0.3, executor_type=executor)
    worker_factory("--concurrency", "1", "--threads", "2")
    assert rds.blpop([key], timeout=20)[1] == b"saw-cancelled"
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(held, timeout=20)
    assert info.value.error.type == "TaskTimeoutError"
    nxt = tm.register_task(tasks.interval, 0, executor_type=executor)
    # A worker that freed the slot at the deadline claims it at once.
    with pytest.raises(AssertionError):
        wait_until(lambda: tm.get_task_status(nxt) is not TaskStatus.QUEUED, timeout=0.5)
    rds.rpush(release, "go")
    started = tm.wait_for_task_sync(nxt, timeout=20)[0]
    returned = float(rds.blpop([key], timeout=5)[1].split()[1])
    assert started >= returned
