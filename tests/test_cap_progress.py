"""The cluster-wide concurrency cap, and progress seen while a task runs."""

from __future__ import annotations

import pytest

from taskmesh import TaskStatus
from tests import semantics_tasks as st
from tests.helpers import wait_until

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)


def test_cap_holds_across_two_workers(tm, rds, redis_server, worker_factory, namespace):
    tm.set_max_concurrent_tasks(2)
    counter, marks = f"{namespace}:running", f"{namespace}:marks"
    ids = tm.register_many(st.capped, [(redis_server.url, counter, marks, 0.15)] * 16)
    w1 = worker_factory("--burst", "--concurrency", "10")
    w2 = worker_factory("--burst", "--concurrency", "10")
    assert w1.wait(60) == 0 and w2.wait(60) == 0
    high_water = max(int(x) for x in rds.lrange(marks, 0, -1))
    assert high_water == 2  # never above the cap, and the cap was reached
    assert {tm.get_task_status(i) for i in ids} == {TaskStatus.COMPLETED}
    assert tm.get_metrics()["max_concurrent_tasks"] == 2


def test_cap_validation_and_removal(tm):
    with pytest.raises(ValueError):
        tm.set_max_concurrent_tasks(0)
    tm.set_max_concurrent_tasks(3)
    assert tm.get_metrics()["max_concurrent_tasks"] == 3
    tm.set_max_concurrent_tasks(None)
    assert tm.get_metrics()["max_concurrent_tasks"] is None


def test_progress_seen_by_producer_while_running(tm, rds, redis_server, worker_factory, namespace):
    gate = f"{namespace}:gate"
    t = tm.register_task(st.progress_then_wait, redis_server.url, gate,
                         executor_type="thread_pool")
    worker_factory()
    wait_until(lambda: tm.get_task_progress(t) == (0.25, "quarter"), what="progress 0.25")
    assert tm.get_task_status(t) is TaskStatus.RUNNING
    assert tm.update_task_progress(t, 0.5, "from producer") is True
    assert tm.get_task_progress(t) == (0.5, "from producer")
    rds.rpush(gate, "go")
    assert tm.wait_for_task_sync(t, timeout=10) == "done"
    assert tm.update_task_progress(t, 0.9) is False  # terminal: nothing recorded
    assert tm.get_task_progress(t) == (0.5, "from producer")
    with pytest.raises(ValueError):
        tm.update_task_progress(t, 1.5)
