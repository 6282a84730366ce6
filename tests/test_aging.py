"""Priority aging (SPEC §13, §17): with ``priority_aging_s`` set, a QUEUED task
is ordered as if enqueued ``priority * priority_aging_s`` seconds earlier, so
a LOW task cannot starve behind a stream of higher ones; unset, the strict
order of §2 holds."""

from __future__ import annotations

import random
import threading
import time

import pytest

from taskmesh import EventType, TaskManager, TaskPriority, TaskStatus
from tests import flow_tasks as ft
from tests.conftest import namespace_snapshot

WAIT = 60.0


def _labels(rds, key):
    return [v.decode().split()[0] for v in rds.lrange(key, 0, -1)]


def _register_spread(tm, url, key, n, seed):
    """n tasks of mixed priorities, about 8 ms apart, so their enqueue times
    differ; returns {label: (priority, registration #, first_queued_ms)}."""
    rng = random.Random(seed)
    plan = {}
    for i in range(n):
        priority = rng.choice([0, 5, 10, 15])
        t = tm.register_task(ft.stamp, url, key, f"t{i}", priority=priority)
        plan[f"t{i}"] = (priority, i, t)
        time.sleep(0.008)
    return plan


def _first_queued(rds, tm, task_id):
    """first_queued_ms, or queued_at in ms for a task queued once (the
    record then has no first_queued_ms: see enqueue() in the prelude)."""
    first, queued_at = rds.hmget(tm.keys.task(task_id), "first_queued_ms", "queued_at")
    return int(first) if first is not None else round(float(queued_at) * 1000)


def test_aging_orders_by_enqueue_time_minus_priority_allowance(
        tm, rds, redis_server, namespace, worker_factory):
    """Tasks queued without aging; aging set afterwards applies to them at once.
    The run order is exactly: aged time (first queued - priority * aging),
    ties to the higher priority, then FIFO."""
    key = f"{namespace}:order"
    plan = _register_spread(tm, redis_server.url, key, 40, seed=7)
    tm.set_priority_aging(0.01)  # 15 (CRITICAL) is worth 150 ms of waiting
    # Several claimed per call: TASK_STARTED events are in claim order.
    worker_factory("--concurrency", "4", "--burst").wait(WAIT)

    aged = {label: _first_queued(rds, tm, t) - p * 10 for label, (p, _, t) in plan.items()}
    expected = sorted(plan, key=lambda label: (aged[label], -plan[label][0], plan[label][1]))
    label_of = {t: label for label, (_, _, t) in plan.items()}
    claimed = [label_of[e.task_id] for e in tm.get_events(count=10_000)
               if e.type is EventType.TASK_STARTED]
    assert claimed == expected
    strict = sorted(plan, key=lambda label: (-plan[label][0], plan[label][1]))
    assert expected != strict  # the spread was wide enough for aging to matter


def test_without_aging_the_order_is_strict(tm, rds, redis_server, namespace, worker_factory):
    key = f"{namespace}:order"
    tm.set_priority_aging(5.0)
    tm.set_priority_aging(None)  # cleared: strict again
    plan = _register_spread(tm, redis_server.url, key, 30, seed=11)
    worker_factory("--concurrency", "1", "--burst").wait(WAIT)
    assert _labels(rds, key) == sorted(plan, key=lambda lb: (-plan[lb][0], plan[lb][1]))


def test_low_task_does_not_starve_behind_a_stream_of_high_ones(
        redis_server, rds, namespace, worker_factory):
    """A producer keeps HIGH tasks coming faster than the worker drains them.
    With aging 0.05 s, the LOW task overtakes every HIGH task queued more than
    10 * 0.05 s after it, and runs while the stream still flows."""
    key = f"{namespace}:order"
    tm = TaskManager(redis_server.url, namespace=namespace, priority_aging_s=0.05)
    stop = threading.Event()
    high: list[str] = []

    def stream() -> None:
        producer = TaskManager(redis_server.url, namespace=namespace)
        try:
            i = 0
            while not stop.is_set() and i < 400:
                high.append(producer.register_task(ft.stamp, redis_server.url, key, f"h{i}",
                                                   0.03, priority=TaskPriority.HIGH))
                i += 1
                time.sleep(0.012)  # ~80/s in, at most ~33/s out
        finally:
            producer.close()

    thread = threading.Thread(target=stream)
    try:
        worker_factory("--concurrency", "1")
        thread.start()
        while len(high) < 20:  # a backlog of HIGH tasks is building
            time.sleep(0.01)
        low = tm.register_task(ft.stamp, redis_server.url, key, "low", priority=TaskPriority.LOW)
        tm.wait_for_task_sync(low, timeout=20)
        still_flowing = not stop.is_set() and thread.is_alive()
    finally:
        stop.set()
        thread.join(30)
    assert still_flowing
    order = _labels(rds, key)
    before = order[:order.index("low")]
    fq_low = _first_queued(rds, tm, low)
    by_label = {f"h{i}": t for i, t in enumerate(list(high))}
    # Every HIGH task that ran first was queued at most 0.5 s after the LOW one...
    assert all(_first_queued(rds, tm, by_label[h]) <= fq_low + 500 for h in before)
    # ...and HIGH tasks already queued when the LOW one ran were left behind it:
    # strict priority would have run them all first.
    low_claimed_ms = tm.get_task(low).started_at * 1000 - 50
    overtaken = [h for h, t in by_label.items()
                 if _first_queued(rds, tm, t) < low_claimed_ms and h not in before]
    assert overtaken
    assert len(before) >= 20  # it did wait its allowance: aging is not FIFO
    tm.close()


def test_requeued_task_keeps_its_first_enqueue_time(tm, rds, redis_server, namespace,
                                                    worker_factory):
    key = f"{namespace}:a"
    t = tm.register_task(ft.raise_error, redis_server.url, key, "value", 2, max_retries=1,
                         retry_delay=0.2)
    first = _first_queued(rds, tm, t)
    worker_factory()
    assert tm.wait_for_task_sync(t, timeout=WAIT) == 2
    assert _first_queued(rds, tm, t) == first
    assert float(rds.hget(tm.keys.task(t), "queued_at")) * 1000 > first + 150


def test_setting_is_stored_and_last_writer_wins(redis_server, rds, namespace):
    # A manager writes its settings when first used (issue 11), not when built.
    a = TaskManager(redis_server.url, namespace=namespace, priority_aging_s=2)
    assert rds.hget(a.keys.config, "priority_aging_s") is None
    a.get_metrics()
    assert rds.hget(a.keys.config, "priority_aging_s") == b"2.0"
    b = TaskManager(redis_server.url, namespace=namespace, priority_aging_s=0.5)
    b.get_metrics()
    assert rds.hget(a.keys.config, "priority_aging_s") == b"0.5"
    c = TaskManager(redis_server.url, namespace=namespace)  # None leaves it
    c.get_metrics()
    assert rds.hget(a.keys.config, "priority_aging_s") == b"0.5"
    c.set_priority_aging(None)
    assert rds.hget(a.keys.config, "priority_aging_s") is None
    for m in (a, b, c):
        m.close()


@pytest.mark.parametrize("bad, exc_type", [
    (0, ValueError), (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    ("1", TypeError), (True, TypeError),
])
def test_bad_aging_stores_nothing(tm, rds, redis_server, namespace, bad, exc_type):
    tm.set_priority_aging(3)
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(exc_type):
        tm.set_priority_aging(bad)
    with pytest.raises(exc_type):
        TaskManager(redis_server.url, namespace=namespace, priority_aging_s=bad,
                    max_concurrent_tasks=4)
    assert namespace_snapshot(rds, namespace) == before
