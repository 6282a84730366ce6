"""``taskmesh worker --burst`` (SPEC §3, §10)."""

from __future__ import annotations

import time

from taskmesh import TaskStatus
from tests import tasks

WAIT = 30.0


def test_burst_exits_zero_when_drained(tm, worker_factory):
    ids = [tm.register_task(tasks.add, i, 1, executor_type=ex)
           for i, ex in enumerate(["async", "thread_pool", "sequential"] * 5)]
    ids += [tm.register_task(tasks.async_add, i, 1) for i in range(5)]
    worker = worker_factory("--burst", "--concurrency", "4")
    assert worker.wait(WAIT) == 0
    # every task finished before the worker exited: no waiting needed
    assert [tm.get_task_status(i) for i in ids] == [TaskStatus.COMPLETED] * len(ids)
    assert [tm.get_task_result(i) for i in ids] == [i + 1 for i in range(15)] + \
        [i + 1 for i in range(5)]


def test_burst_with_failures_still_exits_zero(tm, worker_factory):
    ok = tm.register_task(tasks.add, 1, 1)
    bad = tm.register_task(tasks.fail)
    assert worker_factory("--burst").wait(WAIT) == 0
    assert tm.get_task_status(ok) is TaskStatus.COMPLETED
    assert tm.get_task_status(bad) is TaskStatus.FAILED


def test_burst_ignores_waiting_and_pending(tm, worker_factory):
    """WAITING and PENDING tasks do not keep a burst worker alive (SPEC §10)."""
    blocker = tm.register_task(tasks.add, 1, 1, defer=True)
    waiting = tm.register_task(tasks.add, 2, 2, dependencies=[blocker])
    assert tm.get_task_status(waiting) is TaskStatus.WAITING
    started = time.monotonic()
    assert worker_factory("--burst").wait(WAIT) == 0
    assert time.monotonic() - started < 10
    assert tm.get_task_status(blocker) is TaskStatus.PENDING
    assert tm.get_task_status(waiting) is TaskStatus.WAITING


def test_burst_on_empty_queue_exits_promptly(worker_factory):
    started = time.monotonic()
    worker = worker_factory("--burst")
    assert worker.wait(WAIT) == 0
    # interpreter start-up included; an idle burst worker must not linger
    assert time.monotonic() - started < 6.0, worker.log()


def test_burst_runs_dependency_chain(tm, worker_factory):
    """A dependent promoted while the burst worker runs is drained too."""
    first = tm.register_task(tasks.add, 1, 1)
    second = tm.register_task(tasks.add, 2, 2, dependencies=[first])
    third = tm.register_task(tasks.add, 3, 3, dependencies=[second])
    assert worker_factory("--burst", "--concurrency", "1").wait(WAIT) == 0
    assert [tm.get_task_status(i) for i in (first, second, third)] == [TaskStatus.COMPLETED] * 3
    assert tm.get_task(first).finished_at <= tm.get_task(second).started_at
    assert tm.get_task(second).finished_at <= tm.get_task(third).started_at
