"""Rate limits (SPEC §13, §17): a token bucket per rate key in Redis, checked
by the claim script, across all workers; a task waiting for a token is
QUEUED and never holds up the rest of its queue."""

from __future__ import annotations

import math
import statistics

import pytest

from taskmesh import EventType, TaskStatus
from taskmesh.prometheus import exposition
from tests import flow_tasks as ft
from tests.conftest import namespace_snapshot
from tests.helpers import wait_until

WAIT = 60.0


def _starts(tm, ids):
    """Claim times of the tasks' attempts (TASK_STARTED, stamped by claim.lua
    from Redis TIME), sorted."""
    wanted = set(ids)
    return sorted(e.timestamp for e in tm.get_events(count=10_000)
                  if e.type is EventType.TASK_STARTED and e.task_id in wanted)


def _stamps(tm, redis_server, namespace, n: int, rate_key: str, **options):
    """Registers ``n`` stamping tasks under ``rate_key`` (list ``<ns>:s``)."""
    return [tm.register_task(ft.stamp, redis_server.url, f"{namespace}:s", str(i),
                             rate_key=rate_key, **options) for i in range(n)]


def _wait_starts(tm, ids, timeout: float = WAIT):
    """Waits for every task, then returns their claim times (see _starts)."""
    for t in ids:
        tm.wait_for_task_sync(t, timeout=timeout)
    return _starts(tm, ids)


def test_two_workers_share_one_limit(tm, rds, redis_server, namespace, worker_factory):
    """20 tasks at 5/s, burst 1, two workers: starts 0.2 s apart, about 4 s in all."""
    key = f"{namespace}:starts"
    tm.set_rate_limit("api", 5, burst=1)
    ids = [tm.register_task(ft.stamp, redis_server.url, key, str(i), rate_key="api")
           for i in range(20)]
    for _ in range(2):
        worker_factory("--concurrency", "4")
    starts = _wait_starts(tm, ids)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Tokens come every 200 ms; event timestamps have ms resolution.
    assert min(gaps) >= 0.2 - 0.0015, gaps
    total = starts[-1] - starts[0]
    # Late claims (a loaded machine) lose their lateness: a bucket of one
    # token stores none. Generous upper bound; the lower one is exact.
    assert 19 * 0.2 - 0.01 <= total <= 19 * 0.2 + 3.0, total
    # Both workers took part: the limit is cluster-wide, not per worker.
    assert len({tm.get_task(t).worker for t in ids}) == 2
    # What the functions saw agrees (worker clocks, same host; a thread's
    # start jitters with the machine's load, so the median, not each gap).
    seen = sorted(float(x.split()[1]) for x in (v.decode() for v in rds.lrange(key, 0, -1)))
    seen_gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert len(seen) == 20 and statistics.median(seen_gaps) >= 0.19, seen_gaps


def test_burst_starts_at_once_then_the_rate(tm, redis_server, namespace, worker_factory):
    tm.set_rate_limit("burst", 4, burst=3)
    ids = _stamps(tm, redis_server, namespace, 7, "burst")
    worker_factory("--concurrency", "10")
    starts = _wait_starts(tm, ids)
    # A full bucket lets 3 go together; each later one waits 1/4 s more.
    assert starts[2] - starts[0] < 0.2
    for i in range(3, 7):
        assert starts[i] - starts[0] >= (i - 2) * 0.25 - 0.0015


def test_waiting_tasks_do_not_block_the_queue(tm, redis_server, namespace, worker_factory):
    """Hundreds of rate-limited tasks at the head of the queue; plain tasks
    registered after them (same queue, same priority) run at once."""
    tm.set_rate_limit("slow", 1, burst=1)
    limited = tm.register_many(ft.stamp, [(redis_server.url, f"{namespace}:l", str(i))
                                          for i in range(300)], rate_key="slow")
    plain = [tm.register_task(ft.stamp, redis_server.url, f"{namespace}:p", str(i))
             for i in range(30)]
    worker_factory("--concurrency", "4")
    for t in plain:
        tm.wait_for_task_sync(t, timeout=20)
    started = [t for t in limited if tm.get_task_status(t) is not TaskStatus.QUEUED]
    # The plain ones finished while the limited ones trickled at 1/s.
    elapsed = max(tm.get_task(t).finished_at for t in plain) - tm.get_task(limited[0]).created_at
    assert len(started) <= math.ceil(elapsed) + 2, (len(started), elapsed)

    metrics = tm.get_metrics()
    waiting = sum(1 for t in limited if tm.get_task_status(t) is TaskStatus.QUEUED)
    assert waiting >= 290
    # Parked tasks still count as QUEUED, per queue and priority.
    queued = metrics["queues"]["default"]
    assert abs(queued["queued"] - waiting) <= 2
    assert abs(sum(queued["by_priority"].values()) - queued["queued"]) == 0
    assert queued["rate_limited"] >= 280
    assert 5 in metrics["oldest_queued_age_s"]["default"]
    prom = exposition(metrics)
    assert (f'taskmesh_queue_rate_limited{{namespace="{namespace}",queue="default"}} '
            f'{float(queued["rate_limited"])}') in prom


def test_removing_the_limit_releases_waiting_tasks(tm, redis_server, namespace, worker_factory):
    tm.set_rate_limit("gate", 0.2, burst=1)  # one start per 5 s
    ids = _stamps(tm, redis_server, namespace, 10, "gate")
    worker_factory("--concurrency", "10")
    wait_until(lambda: tm.get_task_status(ids[0]) is TaskStatus.COMPLETED, WAIT, what="first")
    # The others are parked with turns 5 s apart...
    wait_until(lambda: tm.get_metrics()["queues"]["default"]["rate_limited"] == 9, 10,
               what="nine parked")
    tm.set_rate_limit("gate", None)
    # ...and run at once when the limit goes, without waiting out their turns.
    starts = _wait_starts(tm, ids, timeout=4)  # their next turns were 5 s apart
    assert starts[-1] - starts[1] < 2.0
    assert tm.get_metrics()["queues"]["default"]["rate_limited"] == 0


def test_raising_the_limit_recomputes_turns(tm, redis_server, namespace, worker_factory):
    tm.set_rate_limit("gate", 0.2, burst=1)
    ids = _stamps(tm, redis_server, namespace, 6, "gate")
    worker_factory("--concurrency", "10")
    wait_until(lambda: tm.get_metrics()["queues"]["default"]["rate_limited"] == 5, WAIT,
               what="five parked")
    tm.set_rate_limit("gate", 10, burst=1)
    starts = _wait_starts(tm, ids, timeout=5)
    gaps = [b - a for a, b in zip(starts[1:], starts[2:])]
    assert min(gaps) >= 0.1 - 0.0015 and starts[-1] - starts[1] < 2.0, gaps


def test_every_attempt_takes_a_token(tm, rds, redis_server, namespace, worker_factory):
    """A retry waits for a token like a first attempt (retry_delay 0)."""
    key = f"{namespace}:attempts"
    tm.set_rate_limit("r", 2, burst=1)
    t = tm.register_task(ft.raise_error, redis_server.url, key, "value", 4, max_retries=3,
                         retry_delay=0, rate_key="r")
    worker_factory()
    assert tm.wait_for_task_sync(t, timeout=WAIT) == 4
    assert len(rds.lrange(key, 0, -1)) == 4
    starts = _starts(tm, [t])  # one TASK_STARTED per attempt
    assert len(starts) == 4
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.5 - 0.0015


def test_unlimited_rate_key_runs_freely(tm, redis_server, namespace, worker_factory):
    """A rate key without a limit set is no limit."""
    ids = _stamps(tm, redis_server, namespace, 10, "nolimit")
    worker_factory("--concurrency", "10")
    starts = _wait_starts(tm, ids)
    assert starts[-1] - starts[0] < 1.0


def test_limit_is_stored_in_redis(tm, rds, redis_server, namespace):
    tm.set_rate_limit("k", 2.5)
    assert rds.hget(tm.keys.ratelimits, "k") == b"2.5 2.5"
    tm.set_rate_limit("k", 0.5)  # burst never below one token
    assert rds.hget(tm.keys.ratelimits, "k") == b"0.5 1.0"
    tm.set_rate_limit("k", 3, burst=7)
    assert rds.hget(tm.keys.ratelimits, "k") == b"3.0 7.0"
    tm.set_rate_limit("k", None)
    assert rds.hget(tm.keys.ratelimits, "k") is None
    tm.set_rate_limit("never-set", None)  # removing what is not there is fine


@pytest.mark.parametrize("exc_type, args, kwargs", [
    (ValueError, ("k", 0), {}),
    (ValueError, ("k", -1.0), {}),
    (ValueError, ("k", float("nan")), {}),
    (ValueError, ("k", float("inf")), {}),
    (TypeError, ("k", "5"), {}),
    (TypeError, ("k", True), {}),
    (ValueError, ("k", 5), {"burst": 0}),
    (TypeError, ("k", 5), {"burst": 1.5}),
    (TypeError, ("k", 5), {"burst": True}),
    (ValueError, ("", 5), {}),
    (ValueError, ("a*b", 5), {}),
    (ValueError, ("a?", 5), {}),
    (ValueError, ("a[b]", 5), {}),
    (ValueError, ("a b", 5), {}),
    (ValueError, ("a{b}", 5), {}),
    (ValueError, (None, 5), {}),
    (ValueError, ("a*b", None), {}),
])
def test_bad_limits_store_nothing(tm, rds, namespace, exc_type, args, kwargs):
    tm.set_rate_limit("existing", 1)
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(exc_type):
        tm.set_rate_limit(*args, **kwargs)
    assert namespace_snapshot(rds, namespace) == before


@pytest.mark.parametrize("rate_key", ["", "a*", "b?", "c[d", "e f", "g,h", "{i}"])
def test_bad_rate_key_on_registration_stores_nothing(tm, rds, namespace, rate_key):
    tm.register_task(ft.stamp, "redis://x", "k", "ok")
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(ValueError):
        tm.register_task(ft.stamp, "redis://x", "k", "bad", rate_key=rate_key)
    with pytest.raises(ValueError):
        tm.register_many(ft.stamp, [("redis://x", "k", "bad")], rate_key=rate_key)
    assert namespace_snapshot(rds, namespace) == before


def test_cancelling_a_waiting_task(tm, redis_server, namespace, worker_factory):
    """A parked task cancels like any QUEUED one and leaves no trace in the lot."""
    tm.set_rate_limit("c", 0.2, burst=1)
    ids = _stamps(tm, redis_server, namespace, 3, "c")
    worker_factory()
    wait_until(lambda: tm.get_metrics()["queues"]["default"]["rate_limited"] == 2, WAIT,
               what="two parked")
    assert tm.cancel_task_sync(ids[2]) is True
    assert tm.get_task_status(ids[2]) is TaskStatus.CANCELLED
    view = tm.get_metrics()["queues"]["default"]
    assert view["rate_limited"] == 1 and view["queued"] == 1 and view["by_priority"] == {5: 1}


def test_one_limit_across_queues_and_a_burst_worker(tm, redis_server, namespace,
                                                    worker_factory):
    """The bucket belongs to the rate key, not to a queue; a --burst worker
    waits for parked tasks (they are QUEUED) and exits once all ran."""
    tm.set_rate_limit("shared", 8, burst=1)
    ids = [tm.register_task(ft.stamp, redis_server.url, f"{namespace}:s", str(i),
                            rate_key="shared", queue="a" if i % 2 else "b") for i in range(8)]
    worker = worker_factory("--burst", "--queues", "a,b", "--concurrency", "8")
    assert worker.wait(WAIT) == 0
    assert all(tm.get_task_status(t) is TaskStatus.COMPLETED for t in ids)
    starts = _starts(tm, ids)
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.125 - 0.0015
