"""The dependency resolver, against real Redis and real worker processes."""

from __future__ import annotations

import pytest

from taskmesh import DependencyFailedError, TaskStatus
from taskmesh import scripts
from tests import semantics_tasks as st

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)


def _stamps(rds, key):
    out = {}
    for raw in rds.lrange(key, 0, -1):
        label, start, end = raw.decode().split()
        out[label] = (float(start), float(end))
    return out


def test_diamond_runs_in_dependency_order(tm, rds, redis_server, worker_factory, namespace):
    key = f"{namespace}:stamps"
    url = redis_server.url
    a = tm.register_task(st.stamp, url, key, "a")
    b = tm.register_task(st.stamp, url, key, "b", dependencies=[a])
    c = tm.register_task(st.stamp, url, key, "c", dependencies=[a])
    d = tm.register_task(st.stamp, url, key, "d", dependencies=[b, c])
    assert tm.get_task_status(d) is TaskStatus.WAITING
    worker_factory("--concurrency", "4")
    assert tm.wait_for_task_sync(d, timeout=20) == "d"
    s = _stamps(rds, key)
    assert s["b"][0] >= s["a"][1] and s["c"][0] >= s["a"][1]
    assert s["d"][0] >= max(s["b"][1], s["c"][1])
    for t in (a, b, c, d):
        assert tm.get_task_status(t) is TaskStatus.COMPLETED


def test_failure_cancels_dependents_transitively(tm, worker_factory):
    root = tm.register_task(st.fail, "root broke")
    child = tm.register_task(st.noop, dependencies=[root])
    grandchild = tm.register_task(st.noop, dependencies=[child])
    sibling_ok = tm.register_task(st.noop)
    worker_factory("--burst").wait(30)
    assert tm.get_task_status(root) is TaskStatus.FAILED
    for t, cause in ((child, root), (grandchild, child)):
        assert tm.get_task_status(t) is TaskStatus.CANCELLED
        err = tm.get_task_error(t)
        assert err.type == DependencyFailedError.__name__
        assert cause in err.message
    assert tm.get_task_status(sibling_ok) is TaskStatus.COMPLETED


def test_dependency_state_at_registration(tm, worker_factory):
    done = tm.register_task(st.noop)
    broken = tm.register_task(st.fail)
    worker_factory("--burst").wait(30)
    ready = tm.register_task(st.noop, dependencies=[done])
    assert tm.get_task_status(ready) is TaskStatus.QUEUED
    doomed = tm.register_task(st.noop, dependencies=[done, broken])
    assert tm.get_task_status(doomed) is TaskStatus.CANCELLED
    assert tm.get_task_error(doomed).type == "DependencyFailedError"
    assert broken in tm.get_task_error(doomed).message


def test_deferred_task_with_unfinished_dependency_goes_waiting(tm, worker_factory):
    gate = tm.register_task(st.noop, defer=True)
    dependent = tm.register_task(st.noop, dependencies=[gate], defer=True)
    tm.execute_task_sync(dependent)
    assert tm.get_task_status(dependent) is TaskStatus.WAITING
    tm.execute_task_sync(gate)
    worker_factory()
    assert tm.wait_for_task_sync(dependent, timeout=20) is None
    assert tm.get_task_status(dependent) is TaskStatus.COMPLETED


def test_fan_out_one_root_with_1000_dependents(tm, worker_factory):
    root = tm.register_task(st.noop, defer=True)
    children = tm.register_many(st.noop, range(1000), dependencies=[root])
    assert tm.get_metrics()["tasks"]["waiting"] == 1000
    tm.execute_task_sync(root)
    worker_factory("--burst", "--concurrency", "50").wait(120)
    statuses = {tm.get_task_status(c) for c in children}
    assert statuses == {TaskStatus.COMPLETED}


def test_fan_in_1000_tasks_feed_one(tm, worker_factory):
    sources = tm.register_many(st.noop, range(1000))
    sink = tm.register_task(st.noop, dependencies=sources)
    assert tm.get_task_status(sink) is TaskStatus.WAITING
    worker_factory("--burst", "--concurrency", "50").wait(120)
    assert tm.get_task_status(sink) is TaskStatus.COMPLETED
    last_source = max(tm.get_task(s).finished_at for s in sources)
    assert tm.get_task(sink).started_at >= last_source


def test_unknown_dependency_is_refused(tm):
    with pytest.raises(Exception) as info:
        tm.register_task(st.noop, dependencies=["no-such-task"])
    assert type(info.value).__name__ == "TaskNotFoundError"


@pytest.mark.single_backend  # reads the raw resolve list on the single server
def test_wide_cascade_is_resolved_in_bounded_steps(tm, rds, namespace, worker_factory):
    """One script call handles at most 200 dependents (RESOLVE_BUDGET), so a
    wide fan-out never blocks Redis for long; later calls finish the rest:
    a claim, or (issue 8) the cancelling producer itself, with no worker."""
    root = tm.register_task(st.noop, defer=True)
    children = tm.register_many(st.noop, range(1000), dependencies=[root])
    assert scripts.run(rds, tm.commands.cancel(root)) == 1  # cancel.lua alone
    cancelled_now = sum(tm.get_task_status(c) is TaskStatus.CANCELLED for c in children)
    assert cancelled_now == 200
    assert rds.llen(f"taskmesh:{{{namespace}}}:resolve") == 1
    worker_factory("--burst").wait(60)
    assert {tm.get_task_status(c) for c in children} == {TaskStatus.CANCELLED}
    assert tm.get_task_error(children[-1]).type == "DependencyFailedError"
    assert rds.llen(f"taskmesh:{{{namespace}}}:resolve") == 0
