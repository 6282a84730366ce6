"""A program written for the seed (WiseFlow's core.task_management), with its
one import changed. tests/test_task_management.py runs it unchanged twice:
in-process (no TASKMESH_URL: memory://) and against a real Redis with a
real worker process (TASKMESH_URL set). It prints one JSON summary line."""

from __future__ import annotations

import asyncio
import json

from taskmesh.task_management import (
    InvalidTaskStateError,
    TaskCancellationError,
    TaskDependencyError,
    TaskManager,
    TaskPriority,
    TaskStatus,
)


def fetch(n: int) -> list[int]:
    return list(range(n))


async def total(values: list[int], factor: int = 1) -> int:
    await asyncio.sleep(0)
    return sum(values) * factor


def explode(message: str) -> None:
    raise KeyError(message)


async def linger() -> str:
    await asyncio.sleep(30)
    return "too late"


async def main() -> dict:
    tm = TaskManager(max_concurrent_tasks=3)
    out: dict = {}

    first = tm.register_task("fetch", fetch, 4, tags=["etl"], metadata={"stage": 1})
    second = tm.register_task("total", total, [1, 2, 3], kwargs={"factor": 10},
                              priority=TaskPriority.HIGH, dependencies=[first],
                              tags=["etl"], metadata={"stage": 2})
    out["registered"] = [tm.get_task_status(first).name, tm.get_task_status(second).name]
    out["waiting_view"] = second in tm.waiting_tasks and first in tm.pending_tasks
    try:
        tm.register_task("orphan", fetch, 1, dependencies=["no-such-task"])
    except TaskDependencyError as exc:
        out["dependency_error"] = "no-such-task" in str(exc)

    out["first"] = await tm.execute_task(first)
    out["second_after_dep"] = tm.get_task_status(second).name  # deps done: PENDING again
    out["second"] = await tm.execute_task(second)
    out["by_tag"] = sorted(t.name for t in tm.get_tasks_by_tag("etl"))
    out["by_metadata"] = [t.name for t in tm.get_tasks_by_metadata("stage", 2)]
    out["completed_view"] = sorted(tm.completed_tasks) == sorted([first, second])
    task = tm.get_task(second)
    out["task"] = [task.status.name, task.result, task.args, task.kwargs, task.progress_message]
    try:
        await tm.execute_task(second)
    except InvalidTaskStateError:
        out["execute_twice"] = "InvalidTaskStateError"

    bad = tm.register_task("explode", explode, "kaboom", max_retries=1, retry_delay=0.05)
    try:
        await tm.execute_task(bad)
    except KeyError as exc:
        out["raised"] = ["KeyError", str(exc)]
    out["error"] = repr(tm.get_task_error(bad))
    out["retry_count"] = tm.get_task(bad).retry_count

    slow = tm.register_task("linger", linger)
    waiter = asyncio.ensure_future(tm.execute_task(slow))
    while tm.get_task_status(slow) is not TaskStatus.RUNNING:
        await asyncio.sleep(0.02)
    out["cancelled"] = await tm.cancel_task(slow)
    try:
        await waiter
    except TaskCancellationError:
        out["cancel_raised"] = "TaskCancellationError"
    out["cancel_again"] = await tm.cancel_task(slow)

    progress_id = tm.register_task("later", fetch, 2)
    out["progress"] = [tm.update_task_progress(progress_id, 0.25, "a quarter"),
                       list(tm.get_task_progress(progress_id)),
                       tm.update_task_progress("no-such-task", 0.5),
                       list(tm.get_task_progress("no-such-task"))]
    await tm.start()  # the seed's scheduler: PENDING tasks run now
    out["after_start"] = await tm.core.wait_for_task(progress_id, timeout=20)
    await tm.stop()

    metrics = tm.get_metrics()
    out["metrics"] = {k: metrics[k] for k in (
        "total_tasks", "pending_tasks", "running_tasks", "completed_tasks", "failed_tasks",
        "cancelled_tasks", "waiting_tasks", "max_concurrent_tasks")}
    out["unknown"] = [tm.get_task("no-such-task"), tm.get_task_status("no-such-task"),
                      tm.get_task_result("no-such-task")]
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), default=list))
