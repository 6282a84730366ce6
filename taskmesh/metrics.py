"""get_metrics(): one pipelined read of counters the scripts maintain.

Nothing here scans tasks: per-status counts come from the status homes
(queues, running, done:* indexes, which the reaper prunes as records
expire), per-priority queue depth from ``qcount:<queue>``, throughput and
failure rate from per-second ``rate:*`` buckets, runtimes from a capped
list of recent completions. QUEUED tasks parked for a rate-limit token
(``parked:<queue>``) count as queued; ``rate_limited`` says how many.
"""

from __future__ import annotations

import math
from typing import Any, NotRequired, TypedDict, cast

from .keys import Keys, queue_band
from .models import TERMINAL_ORDER

WINDOW_S = 60
PARKED_PROBE = 100  # parked tasks read per queue for oldest ages
RUNTIME_SAMPLES = 1000  # percentiles over the latest 1000 runtimes, as in prelude.lua


class TaskCounts(TypedDict):
    """Tasks per status, now (``tasks``)."""

    pending: int
    waiting: int
    queued: int
    scheduled: int
    running: int
    completed: int
    failed: int
    cancelled: int


class QueueMetrics(TypedDict):
    """One queue (``queues[name]``); QUEUED tasks parked for a rate-limit
    token count in ``queued`` and, again, in ``rate_limited``."""

    queued: int
    scheduled: int
    rate_limited: int
    by_priority: dict[int, int]  # highest priority first


class WorkerMetrics(TypedDict):
    """One alive worker (``workers``), as its heartbeat hash last said."""

    id: str
    host: str | None
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    processed: int
    failed: int
    started_at: float
    last_heartbeat: float


class RuntimeSummary(TypedDict):
    """Milliseconds over the latest RUNTIME_SAMPLES completions; all None
    before the first."""

    avg: float | None
    p50: float | None
    p95: float | None
    max: float | None


class ShardMetrics(TypedDict):
    """One shard's own counts (``shards``, in shard order)."""

    shard: int
    tasks: TaskCounts
    totals: dict[str, int]


class Metrics(TypedDict):
    """What ``TaskManager.get_metrics()`` returns: a plain dict at runtime
    (JSON-ready), typed so readers (ui.py, prometheus.py, the dashboard) name
    fields the type checker knows. ``totals`` counts since the namespace
    began: registered, completed, failed, cancelled, retried."""

    namespace: str
    timestamp: float
    tasks: TaskCounts
    queues: dict[str, QueueMetrics]
    workers: list[WorkerMetrics]
    totals: dict[str, int]
    throughput_per_s: float
    runtime_ms: RuntimeSummary
    max_concurrent_tasks: int | None
    oldest_queued_age_s: dict[str, dict[int, float]]
    blocked_on_dependencies: int
    recoveries: int
    lease_expiries: int
    failure_rate: float
    notes: NotRequired[list[str]]  # only when a damaged counter was skipped
    shards: NotRequired[list[ShardMetrics]]  # always in get_metrics(); not per shard


def status_counts(tasks: TaskCounts) -> dict[str, int]:
    """``tasks`` as a mapping, for code that walks every status (every value
    of a TaskCounts is an int, which a TypedDict's items() cannot say)."""
    return cast("dict[str, int]", tasks)


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Notes:
    """What metrics had to skip: a counter that is not a number (written by
    something else, or damaged) counts as 0 and is named here, never a
    traceback. Shown by every output format."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def count(self, value: Any, where: str) -> int:
        try:
            return int(_s(value))
        except ValueError:
            self.items.append(f"skipped corrupted counter {where} = {_s(value)[:40]!r}")
            return 0

    def number(self, value: Any, where: str) -> float | None:
        try:
            return float(_s(value))
        except ValueError:
            self.items.append(f"skipped corrupted value {where} = {_s(value)[:40]!r}")
            return None


def _hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


def redis_time(client: Any) -> float:
    """The Redis server's clock, in epoch seconds: the one the scripts stamp
    heartbeats, expiries and rate buckets with, so liveness and rates do not
    depend on the reader's own clock."""
    sec, usec = client.execute_command("TIME")  # not .time(): the cluster client refuses it
    return int(sec) + int(usec) / 1e6


def collect(client: Any, keys: Keys, raw_out: dict[str, Any] | None = None) -> Metrics:
    """The metrics of one shard (the whole namespace, unless sharded).
    ``raw_out`` receives the runtime samples and window counts, which
    sharding.combine_metrics needs to merge several shards exactly."""
    notes = _Notes()
    now = redis_time(client)
    queues = sorted(_s(q) for q in client.smembers(keys.queues))
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("TIME")  # not pipe.time(): the cluster pipeline refuses that method
    for q in queues:
        pipe.zcard(keys.queue(q))
        pipe.hgetall(keys.qcount(q))
        pipe.zcard(keys.scheduled(q))
        pipe.zcard(keys.parked(q))
    pipe.zcard(keys.running)
    pipe.zcard(keys.waiting)
    pipe.zcard(keys.pending)
    for status in TERMINAL_ORDER:
        pipe.zcount(keys.done(status), f"({int(now * 1000)}", "+inf")
    pipe.hgetall(keys.stats)
    pipe.hgetall(keys.config)
    pipe.lrange(keys.runtimes, 0, RUNTIME_SAMPLES - 1)  # the list may run a little longer
    pipe.zrangebyscore(keys.workers, int(now * 1000), "+inf")
    second = int(now)
    for sec in range(second - WINDOW_S + 1, second + 1):
        pipe.hgetall(keys.rate(sec))
    raw = pipe.execute()
    redis_now = float(raw[0][0]) + float(raw[0][1]) / 1e6
    pos = 1

    queue_view: dict[str, QueueMetrics] = {}
    ages: dict[str, dict[int, float]] = {}
    queued_total = scheduled_total = 0
    oldest_probe: list[tuple[str, int]] = []
    for q in queues:
        depth, counts, scheduled = raw[pos], _hash(raw[pos + 1]), raw[pos + 2]
        parked = int(raw[pos + 3])  # QUEUED, waiting for a rate-limit token
        depth = int(depth) + parked
        pos += 4
        by_priority: dict[int, int] = {}
        for p, n in counts.items():
            prio, count = notes.count(p, f"qcount:{q} priority"), notes.count(n, f"qcount:{q}[{p}]")
            if count > 0:
                by_priority[prio] = count
        queue_view[q] = {"queued": depth, "scheduled": int(scheduled),
                         "rate_limited": parked,
                         "by_priority": dict(sorted(by_priority.items(), reverse=True))}
        queued_total += int(depth)
        scheduled_total += int(scheduled)
        oldest_probe += [(q, p) for p in by_priority]
    running, waiting, pending = raw[pos:pos + 3]
    completed, failed, cancelled = raw[pos + 3:pos + 6]
    stats, config = _hash(raw[pos + 6]), _hash(raw[pos + 7])
    runtimes = [v for v in (notes.number(x, "runtimes") for x in raw[pos + 8]) if v is not None]
    worker_ids = [_s(w) for w in raw[pos + 9]]
    buckets = [_hash(b) for b in raw[pos + 10:]]

    done_window = sum(notes.count(b.get("completed", 0), "rate.completed") for b in buckets)
    failed_window = sum(notes.count(b.get("failed", 0), "rate.failed") for b in buckets)
    finished_window = done_window + failed_window
    if raw_out is not None:
        raw_out.update(runtimes=runtimes, done_window=done_window, failed_window=failed_window)

    _add_oldest_ages(client, keys, queue_view, ages, oldest_probe, redis_now, notes)
    cap = config.get("max_concurrent_tasks")
    totals = {name: notes.count(stats.get(name, 0), f"stats.{name}") for name in
              ("registered", "completed", "failed", "cancelled", "retried")}
    recoveries = notes.count(stats.get("recoveries", 0), "stats.recoveries")
    lease_expiries = notes.count(stats.get("lease_expiries", 0), "stats.lease_expiries")
    workers = _workers(client, keys, worker_ids, notes)
    view: Metrics = {
        "namespace": keys.namespace,
        "timestamp": redis_now,
        "tasks": {
            "pending": int(pending), "waiting": int(waiting), "queued": queued_total,
            "scheduled": scheduled_total, "running": int(running), "completed": int(completed),
            "failed": int(failed), "cancelled": int(cancelled),
        },
        "queues": queue_view,
        "workers": workers,
        "totals": totals,
        "throughput_per_s": round(done_window / WINDOW_S, 3),
        "runtime_ms": _runtime_summary(runtimes),
        "max_concurrent_tasks": (notes.count(cap, "config.max_concurrent_tasks") or None)
                                if cap else None,
        "oldest_queued_age_s": {q: ages[q] for q in queue_view},
        "blocked_on_dependencies": int(waiting),
        "recoveries": recoveries,
        "lease_expiries": lease_expiries,
        "failure_rate": round(failed_window / finished_window, 4) if finished_window else 0.0,
    }
    if notes.items:  # only when something was skipped: the usual shape is unchanged
        view["notes"] = list(dict.fromkeys(notes.items))
    return view


def _add_oldest_ages(client: Any, keys: Keys, view: dict[str, QueueMetrics],
                     ages: dict[str, dict[int, float]], probes: list[tuple[str, int]],
                     now: float, notes: _Notes) -> None:
    """Fills ``ages``: age of the head (oldest in line) of each queue and priority."""
    for q in view:
        ages[q] = {}
    if not probes:
        return
    pipe = client.pipeline(transaction=False)
    for q, p in probes:
        low, high = queue_band(p)
        pipe.zrangebyscore(keys.queue(q), low, f"({high}", start=0, num=1)
    heads = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for head in heads:
        pipe.hget(keys.task(_s(head[0])), "queued_at") if head else pipe.echo("")
    for (q, p), queued_at in zip(probes, pipe.execute()):
        at = notes.number(queued_at, f"queued_at of the head of {q}") if queued_at else None
        if at is not None:
            ages[q][p] = round(max(now - at, 0.0), 3)
    _add_parked_ages(client, keys, view, ages, now, notes)


def _add_parked_ages(client: Any, keys: Keys, view: dict[str, QueueMetrics],
                     ages: dict[str, dict[int, float]], now: float, notes: _Notes) -> None:
    """Tasks parked for a rate-limit token are QUEUED too, but out of their
    queue's bands: the first PARKED_PROBE of each lot (the earliest turns,
    so mostly the longest waiting) count towards the oldest ages."""
    lots = [q for q in view if view[q]["rate_limited"]]
    if not lots:
        return
    pipe = client.pipeline(transaction=False)
    for q in lots:
        pipe.zrange(keys.parked(q), 0, PARKED_PROBE - 1)
    pipe2 = client.pipeline(transaction=False)
    owners = []
    for q, ids in zip(lots, pipe.execute()):
        for task_id in ids:
            pipe2.hmget(keys.task(_s(task_id)), "priority", "queued_at")
            owners.append(q)
    for q, (priority, queued_at) in zip(owners, pipe2.execute()):
        if priority is None or not queued_at:
            continue
        at = notes.number(queued_at, f"queued_at of a task parked in {q}")
        if at is None:
            continue
        prio = notes.count(priority, f"priority of a task parked in {q}")
        lot = ages[q]
        lot[prio] = max(lot.get(prio, 0.0), round(max(now - at, 0.0), 3))


def _workers(client: Any, keys: Keys, ids: list[str], notes: _Notes) -> list[WorkerMetrics]:
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for wid in ids:
        pipe.hgetall(keys.worker(wid))
    out: list[WorkerMetrics] = []
    for wid, raw in zip(ids, pipe.execute()):
        h = _hash(raw)
        if not h:
            continue
        def num(name: str) -> int:
            return notes.count(h.get(name, 0), f"worker:{wid}.{name}")

        def when(name: str) -> float:
            return notes.number(h.get(name) or 0, f"worker:{wid}.{name}") or 0.0

        out.append({
            "id": wid, "host": h.get("host"), "pid": num("pid"),
            "queues": [q for q in h.get("queues", "").split(",") if q],
            "concurrency": num("concurrency"), "running": num("running"),
            "processed": num("processed"), "failed": num("failed"),
            "started_at": when("started_at"), "last_heartbeat": when("last_heartbeat"),
        })
    return out


def _runtime_summary(samples: list[float]) -> RuntimeSummary:
    if not samples:
        return {"avg": None, "p50": None, "p95": None, "max": None}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    # (sorted already: the median is the middle one, or the mean of the two;
    # not the statistics module, whose decimal/fractions imports cost every
    # worker ~0.6 MB of RSS)
    mid = len(ordered) // 2
    p50 = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"avg": round(math.fsum(ordered) / len(ordered), 3), "p50": p50,
            "p95": p95, "max": ordered[-1]}
