"""Executors in a real worker process (SPEC §3): sequential never overlaps,
thread_pool runs off the loop thread, async tasks run concurrently, and
``current_task()`` works in each of them."""

from __future__ import annotations

from itertools import pairwise

import pytest

from taskmesh import TaskStatus, current_task
from tests import tasks
from tests.helpers import wait_until

WAIT = 30.0


def _assert_no_overlap(intervals: list[tuple[float, float]]) -> None:
    ordered = sorted(intervals)
    for (s1, e1), (s2, e2) in pairwise(ordered):
        assert s1 <= e1 <= s2 <= e2, f"overlap: [{s1}, {e1}] and [{s2}, {e2}]"


def test_sequential_tasks_never_overlap(tm, worker_factory):
    # Sync and async functions in one sequential lane; with concurrency 10 the
    # worker could run them all at once if the lane did not serialize them.
    funcs = [tasks.interval, tasks.async_interval] * 4
    ids = [tm.register_task(f, 0.15, executor_type="sequential") for f in funcs]
    worker = worker_factory("--burst", "--concurrency", "10")
    results = [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids]
    assert worker.wait(WAIT) == 0

    assert len({pid for *_, pid in results}) == 1  # one worker process ran them all
    _assert_no_overlap([(start, end) for start, end, _, _ in results])
    # one at a time, in claim order (FIFO within one priority)
    starts = [start for start, *_ in results]
    assert starts == sorted(starts)
    # finished in the same order (started_at is claim time: a task may wait
    # claimed in the lane, SPEC §10, so only the function intervals are compared)
    finished = [tm.get_task(i).finished_at for i in ids]
    assert finished == sorted(finished)


def test_sequential_does_not_block_other_executors(tm, worker_factory):
    """While the sequential lane is busy, other executors keep running."""
    seq = [tm.register_task(tasks.interval, 0.4, executor_type="sequential") for _ in range(3)]
    others = [tm.register_task(tasks.async_interval, 0.4) for _ in range(3)]
    worker_factory("--burst", "--concurrency", "10")
    seq_res = [tm.wait_for_task_sync(i, timeout=WAIT) for i in seq]
    other_res = [tm.wait_for_task_sync(i, timeout=WAIT) for i in others]
    _assert_no_overlap([(s, e) for s, e, _, _ in seq_res])
    # the async ones overlapped each other (concurrency) while the lane was serial
    assert max(s for s, *_ in other_res) < min(e for _, e, *_ in other_res)


def test_thread_pool_runs_off_the_loop_thread(tm, worker_factory):
    ids = [tm.register_task(tasks.thread_info, executor_type="thread_pool") for _ in range(3)]
    plain_async = tm.register_task(tasks.thread_info, executor_type="async")
    coro = tm.register_task(tasks.async_thread_info, executor_type="async")
    worker_factory("--burst", "--concurrency", "4")
    for task_id in ids + [plain_async]:
        info = tm.wait_for_task_sync(task_id, timeout=WAIT)
        assert info["is_main"] is False
        assert info["thread"] != info["main_thread"]
        assert info["thread"].startswith("taskmesh-task")
    # a coroutine function runs on the loop, which is the worker's main thread
    info = tm.wait_for_task_sync(coro, timeout=WAIT)
    assert info["is_main"] is True and info["loop_running"] is True


def test_async_tasks_run_concurrently(tm, worker_factory):
    ids = [tm.register_task(tasks.async_interval, 0.5) for _ in range(20)]
    worker = worker_factory("--burst", "--concurrency", "20")
    results = [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids]
    assert worker.wait(WAIT) == 0
    assert all(tm.get_task_status(i) is TaskStatus.COMPLETED for i in ids)
    infos = [tm.get_task(i) for i in ids]
    wall = max(i.finished_at for i in infos) - min(i.started_at for i in infos)
    assert wall < 3.0, f"20 x 0.5 s async tasks took {wall:.2f} s (serial would be 10 s)"
    # they really were in flight together
    assert max(s for s, *_ in results) < min(e for _, e, *_ in results)


@pytest.mark.parametrize("executor_type", ["async", "thread_pool", "sequential"])
def test_current_task_in_every_executor(tm, worker_factory, executor_type):
    sync_id = tm.register_task(tasks.context_info, name="ctx-sync", metadata={"m": 1},
                               executor_type=executor_type)
    async_id = None
    if executor_type != "thread_pool":
        async_id = tm.register_task(tasks.async_context_info, name="ctx-async",
                                    metadata={"m": 2}, executor_type=executor_type)
    worker_factory("--burst")

    info = tm.wait_for_task_sync(sync_id, timeout=WAIT)
    assert info == {"task_id": sync_id, "attempt": 1, "name": "ctx-sync", "metadata": {"m": 1},
                    "cancelled": False, "recorded": True, "thread": info["thread"]}
    assert tm.get_task_progress(sync_id) == (0.25, "from a thread")
    if async_id is not None:
        info = tm.wait_for_task_sync(async_id, timeout=WAIT)
        assert info == {"task_id": async_id, "attempt": 1, "name": "ctx-async",
                        "metadata": {"m": 2}, "cancelled": False, "recorded": True,
                        "thread": info["thread"]}
        assert tm.get_task_progress(async_id) == (0.75, "from a coroutine")


def test_current_task_outside_a_task_raises():
    with pytest.raises(RuntimeError):
        current_task()
    with pytest.raises(RuntimeError):
        tasks.context_info()


def test_sequential_started_at_is_when_the_function_started(tm, worker_factory):
    """A sequential task that waited in the worker's lane reports started_at
    as its function's start, not its claim time, and a runtime without the wait."""
    first = tm.register_task(tasks.interval, 0.5, executor_type="sequential")
    second = tm.register_task(tasks.interval, 0.1, executor_type="sequential")
    worker_factory("--burst", "--concurrency", "4").wait(30)
    a, b = tm.get_task(first), tm.get_task(second)
    b_start, _, _, _ = tm.get_task_result(second)
    assert b.started_at >= a.finished_at - 0.1  # claimed at once, but started after `first`
    assert abs(b.started_at - b_start) < 0.1
    runtimes = [e.data["runtime_ms"] for e in tm.get_events(count=100)
                if e.task_id == second and e.type == "TASK_COMPLETED"]
    assert runtimes and runtimes[0] < 400  # 0.1 s of work, not the 0.5 s wait


@pytest.mark.parametrize("executor_type", ["async", "thread_pool"])
def test_sigterm_hands_a_running_thread_task_back(tm, worker_factory, executor_type):
    """A plain function without a timeout has no runner task on the worker
    (Worker._start_direct): stopping past the grace period still hands it
    back, and its thread's late return is not reported."""
    worker = worker_factory("--concurrency", "2", grace_period=0.3)
    task_id = tm.register_task(tasks.interval, 1.5, executor_type=executor_type)
    wait_until(lambda: tm.get_task_status(task_id) is TaskStatus.RUNNING, timeout=WAIT,
               what="the task to start")
    worker.terminate()
    assert worker.wait(WAIT) == 0
    assert tm.get_task_status(task_id) is TaskStatus.QUEUED  # handed back, not completed
