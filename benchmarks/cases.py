"""What is measured: the cases (one driver run per case and system) and the
rows of the report (one metric of one case each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .systems import System

GROUPS = ("enqueue", "drain", "io", "latency", "rss", "backlog", "delay", "executors")


@dataclass(frozen=True)
class Sizes:
    enqueue_single: int = 2000
    enqueue_batch: int = 10_000
    drain: int = 5000
    drain_max_s: float = 6.0  # a slow system stops being timed after this long
    io: int = 1000
    io_sleep: float = 0.01
    io_concurrency: int = 50  # issue 9: 1,000 x 10 ms at concurrency 50, ideal 0.20 s
    latency: int = 500
    latency_warmup: int = 20
    backlog: tuple[int, ...] = (10_000, 100_000)
    backlog_window: int = 3000
    backlog_window_s: float = 4.0
    concurrency: int = 10
    delay_n: int = 10_000
    delay_span_s: float = 10.0
    executors_n: int = 2000  # per executor, for the process vs thread_pool overhead


DEFAULT = Sizes()
QUICK = Sizes(enqueue_single=300, enqueue_batch=1000, drain=1000, drain_max_s=1.5, io=300,
              latency=100, latency_warmup=5, backlog=(1000, 5000), backlog_window=400,
              backlog_window_s=1.0, delay_n=1000, delay_span_s=2.0,
              executors_n=500)
FULL_BACKLOG = (10_000, 100_000, 1_000_000)


@dataclass(frozen=True)
class Case:
    id: str
    workload: str  # a function of benchmarks.driver
    group: str
    kind: str | None  # None: the system's native kind
    params: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    needs: str = ""  # a System capability flag (e.g. "has_delays"); "" for all systems

    def kind_for(self, system: type[System]) -> str | None:
        if self.needs and not getattr(system, self.needs, False):
            return None
        kind = self.kind or system.native
        return kind if system.supports(kind) else None

    def selected(self, only: set[str] | None, system: type[System]) -> bool:
        if only is None or self.group in only:
            return True
        # "rss" is read from the 1-worker drain of the system's native kind.
        return ("rss" in only and self.workload == "drain" and self.group == "drain"
                and self.workers == 1 and self.kind == system.native)


@dataclass(frozen=True)
class Row:
    label: str
    case: str  # "{native}" is replaced by the system's native kind
    metric: str
    unit: str  # "/s", "s", "ms", "MB"
    better: str  # "higher" | "lower"

    def case_for(self, system: type[System]) -> str:
        return self.case.replace("{native}", system.native)


def _k(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def build(s: Sizes) -> tuple[list[Case], list[Row]]:
    drain = {"n": s.drain, "concurrency": s.concurrency, "max_s": s.drain_max_s}
    cases = [
        Case("enqueue", "enqueue", "enqueue", None,
             {"n_single": s.enqueue_single, "n_batch": s.enqueue_batch}),
        Case("drain-noop-1w", "drain", "drain", "noop", {**drain, "workers": 1}, 1),
        Case("drain-noop-2w", "drain", "drain", "noop", {**drain, "workers": 2}, 2),
        Case("drain-anoop-1w", "drain", "drain", "anoop", {**drain, "workers": 1}, 1),
        Case("drain-anoop-2w", "drain", "drain", "anoop", {**drain, "workers": 2}, 2),
        Case("drain-pickle-1w", "drain", "drain", "pickle", {**drain, "workers": 1}, 1),
        Case("io", "drain", "io", "asleep",
             {"n": s.io, "args": [s.io_sleep], "workers": 1, "concurrency": s.io_concurrency,
              "poll": 0.001}),
        Case("latency", "latency", "latency", None,
             {"n": s.latency, "warmup": s.latency_warmup, "concurrency": s.concurrency}),
        Case("backlog", "backlog", "backlog", None,
             {"sizes": list(s.backlog), "window": s.backlog_window,
              "max_window_s": s.backlog_window_s, "warm": 200, "concurrency": s.concurrency}),
        Case("delays", "delays", "delay", None,
             {"n": s.delay_n, "span_s": s.delay_span_s, "concurrency": s.concurrency},
             needs="has_delays"),
    ]
    # Per-task overhead of a child process against the thread pool: the same
    # def noop through each executor (taskmesh only), drained and round-tripped.
    for executor in ("thread_pool", "process"):
        cases += [
            Case(f"drain-{executor}", "drain", "executors", f"noop-{executor}",
                 {"n": s.executors_n, "concurrency": s.concurrency, "max_s": 60.0,
                  "workers": 1}, 1),
            Case(f"latency-{executor}", "latency", "executors", f"noop-{executor}",
                 {"n": s.executors_n, "warmup": s.latency_warmup,
                  "concurrency": s.concurrency}),
        ]
    n = _k(s.drain)
    rows = [
        Row(f"enqueue/s: one call per task ({_k(s.enqueue_single)})", "enqueue",
            "enqueue_single_per_s", "/s", "higher"),
        Row(f"enqueue/s: bulk API ({_k(s.enqueue_batch)})", "enqueue", "enqueue_batch_per_s",
            "/s", "higher"),
        Row(f"drain/s: def noop, 1 worker ({n})", "drain-noop-1w", "per_s", "/s", "higher"),
        Row(f"drain/s: def noop, 2 workers ({n})", "drain-noop-2w", "per_s", "/s", "higher"),
        Row(f"drain/s: async noop, 1 worker ({n})", "drain-anoop-1w", "per_s", "/s", "higher"),
        Row(f"drain/s: async noop, 2 workers ({n})", "drain-anoop-2w", "per_s", "/s", "higher"),
        Row(f"drain/s: cloudpickled closure, 1 worker ({n})", "drain-pickle-1w", "per_s", "/s",
            "higher"),
        Row("worker spawn -> first task done (s)", "drain-{native}-1w", "startup_s", "s", "lower"),
        Row(f"drain/s incl. that start-up: native noop, 1 worker ({n})", "drain-{native}-1w",
            "per_s_incl_startup", "/s", "higher"),
        Row(f"I/O {_k(s.io)} x sleep {s.io_sleep * 1000:g} ms, conc {s.io_concurrency}: "
            "first->last done (s)", "io", "span_s", "s", "lower"),
        Row("I/O tasks/s", "io", "per_s", "/s", "higher"),
        Row(f"round trip p50 (ms, {s.latency} sequential)", "latency", "p50_ms", "ms", "lower"),
        Row("round trip p99 (ms)", "latency", "p99_ms", "ms", "lower"),
        Row("worker RSS after drain (MB)", "drain-{native}-1w", "rss_mb", "MB", "lower"),
        Row("worker CPU per task (ms, native noop drain)", "drain-{native}-1w",
            "worker_cpu_ms_per_task", "ms", "lower"),
        Row("redis-server CPU per task (ms, same drain)", "drain-{native}-1w",
            "redis_cpu_ms_per_task", "ms", "lower"),
        Row("redis-server CPU per task lifecycle (ms, bulk register + same drain)",
            "drain-{native}-1w", "redis_cpu_ms_per_lifecycle", "ms", "lower"),
    ]
    delays = f"{_k(s.delay_n)} delayed tasks due over {s.delay_span_s:g} s"
    rows += [
        Row(f"{delays}: lateness p50 (ms)", "delays", "p50_ms", "ms", "lower"),
        Row(f"{delays}: lateness p99 (ms)", "delays", "p99_ms", "ms", "lower"),
    ]
    en = _k(s.executors_n)
    for executor in ("thread_pool", "process"):
        rows += [
            Row(f"drain/s: def noop, executor_type={executor!r} ({en})", f"drain-{executor}",
                "per_s", "/s", "higher"),
            Row(f"round trip p50 (ms): def noop, executor_type={executor!r} ({en})",
                f"latency-{executor}", "p50_ms", "ms", "lower"),
            Row(f"round trip p99 (ms): def noop, executor_type={executor!r}",
                f"latency-{executor}", "p99_ms", "ms", "lower"),
        ]
    for size in s.backlog:
        rows.append(Row(f"backlog {_k(size)} queued: drain/s", "backlog", f"{size}_per_s", "/s",
                        "higher"))
    return cases, rows
