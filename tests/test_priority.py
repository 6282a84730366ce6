"""Priority order: higher runs first, FIFO within one priority (SPEC §2)."""

from __future__ import annotations

import random

from taskmesh import TaskPriority, TaskStatus
from tests import tasks

WAIT = 30.0


def test_priority_descending_fifo_within_priority(tm, rds, redis_server, namespace,
                                                   worker_factory):
    order_key = f"test:{namespace}:order"
    priorities = [TaskPriority.LOW, TaskPriority.NORMAL, TaskPriority.HIGH,
                  TaskPriority.CRITICAL, 0, 1, 7, 10, 128, 254, 255]
    rng = random.Random(1234)
    plan = [(p, i) for p in priorities for i in range(2)]
    rng.shuffle(plan)

    # Registered while no worker runs; labels carry (priority, registration #).
    registered: list[tuple[int, int, str]] = []
    for n, (priority, _) in enumerate(plan):
        label = f"{int(priority)}:{n}"
        task_id = tm.register_task(tasks.record, redis_server.url, order_key, label,
                                   priority=priority)
        registered.append((int(priority), n, task_id))
        assert tm.get_task_status(task_id) is TaskStatus.QUEUED

    worker = worker_factory("--burst", "--concurrency", "1")
    assert worker.wait(WAIT) == 0

    for _, _, task_id in registered:
        assert tm.get_task_status(task_id) is TaskStatus.COMPLETED

    ran = [tuple(int(x) for x in item.decode().split(":")) for item in rds.lrange(order_key, 0, -1)]
    expected = sorted(((p, n) for p, n, _ in registered), key=lambda pn: (-pn[0], pn[1]))
    assert ran == expected

    # started_at agrees with the recorded order (never decreasing)
    by_label = {(p, n): tid for p, n, tid in registered}
    started = [tm.get_task(by_label[pn]).started_at for pn in ran]
    assert started == sorted(started)


def test_priority_order_mixed_executors_and_import_strings(tm, rds, redis_server, namespace,
                                                             worker_factory):
    """Priority decides order whatever the executor or func form."""
    order_key = f"test:{namespace}:order"
    specs = [
        (TaskPriority.LOW, "async", tasks.record),
        (TaskPriority.CRITICAL, "sequential", "tests.tasks:record"),
        (TaskPriority.NORMAL, "thread_pool", tasks.record),
        (TaskPriority.HIGH, "async", "tests.tasks:record"),
        (TaskPriority.NORMAL, "sequential", tasks.record),
        (200, "thread_pool", "tests.tasks:record"),
    ]
    for n, (priority, executor, func) in enumerate(specs):
        tm.register_task(func, redis_server.url, order_key, f"{int(priority)}:{n}",
                         priority=priority, executor_type=executor)
    assert worker_factory("--burst", "--concurrency", "1").wait(WAIT) == 0
    ran = [item.decode() for item in rds.lrange(order_key, 0, -1)]
    assert ran == ["200:5", "15:1", "10:3", "5:2", "5:4", "0:0"]
