"""Terminal rendering shared by the CLI commands (rich)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .metrics import Metrics
from .models import TaskInfo


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds") if ts else "-"


def print_task(info: TaskInfo, result: Any = None, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"task {info.id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("name", info.name), ("status", str(info.status)), ("priority", str(info.priority)),
        ("queue", info.queue), ("executor", info.executor_type),
        ("attempts", f"{info.attempts} (max_retries {info.max_retries}, recoveries {info.recoveries})"),
        ("worker", info.worker or "-"), ("created", _when(info.created_at)),
        ("started", _when(info.started_at)), ("finished", _when(info.finished_at)),
        ("progress", f"{info.progress:.0%} {info.progress_message or ''}"),
        ("dependencies", ", ".join(info.dependencies) or "-"),
        ("tags", ", ".join(info.tags) or "-"), ("metadata", repr(info.metadata)),
        ("description", info.description or "-"),
    ]
    if info.status == "completed":
        rows.append(("result", repr(result)))
    if info.error:
        rows.append(("error", f"{info.error.type}: {info.error.message}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if info.error and info.error.traceback:
        console.print(info.error.traceback, style="dim", markup=False, highlight=False)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def metrics_view(m: Metrics) -> Group:
    """The `taskmesh metrics` screen: status line, queues by priority, workers."""
    t, rt = m["tasks"], m["runtime_ms"]
    cap = m["max_concurrent_tasks"]
    summary = Table.grid(padding=(0, 2))
    for _ in range(4):
        summary.add_column(justify="left")
    cells = [
        ("queued", t["queued"]), ("running", t["running"]), ("scheduled", t["scheduled"]),
        ("waiting", t["waiting"]), ("pending", t["pending"]), ("completed", t["completed"]),
        ("failed", t["failed"]), ("cancelled", t["cancelled"]),
        ("throughput", f"{m['throughput_per_s']:.2f}/s"), ("failure rate", f"{m['failure_rate']:.1%}"),
        ("recoveries", m["recoveries"]), ("cap", "none" if cap is None else cap),
    ]
    texts = [Text.assemble((f"{k} ", "bold"), str(v)) for k, v in cells]
    for row in range(0, len(texts), 4):
        summary.add_row(*texts[row:row + 4])
    title = Text(f"taskmesh · namespace {m['namespace']}", style="bold underline")
    queues = Table(title="queues by priority")
    for col in ("queue", "priority", "queued", "oldest age (s)", "scheduled"):
        queues.add_column(col, justify="right" if col != "queue" else "left")
    for name, q in m["queues"].items():
        ages = m["oldest_queued_age_s"].get(name, {})
        rows: list[tuple[int | None, int]] = [*q["by_priority"].items()] or [(None, 0)]
        for i, (prio, n) in enumerate(rows):
            age = ages.get(prio) if prio is not None else None
            queues.add_row(name if i == 0 else "", "-" if prio is None else str(prio), str(n),
                           "-" if age is None else f"{age:.1f}",
                           str(q["scheduled"]) if i == 0 else "")
    workers = Table(title=f"workers ({len(m['workers'])} alive)")
    for col in ("id", "host", "pid", "queues", "running", "concurrency", "processed", "failed"):
        workers.add_column(col)
    for w in m["workers"]:
        workers.add_row(w["id"], w["host"] or "", str(w["pid"]), ",".join(w["queues"]),
                        str(w["running"]), str(w["concurrency"]), str(w["processed"]),
                        str(w["failed"]))
    runtime = (f"runtime ms: avg {_fmt_ms(rt['avg'])} · p50 {_fmt_ms(rt['p50'])} · "
               f"p95 {_fmt_ms(rt['p95'])} · max {_fmt_ms(rt['max'])}   "
               f"totals: {', '.join(f'{k} {v}' for k, v in m['totals'].items())}")
    notes = [Text(f"note: {n}", style="yellow") for n in m.get("notes", ())]  # skipped counters
    return Group(title, summary, queues, workers, Text(runtime), *notes)


def event_line(event: Any) -> Text:
    d = event.data
    when = dt.datetime.fromtimestamp(event.timestamp).strftime("%H:%M:%S.%f")[:-3]
    extra = []
    if "progress" in d:
        extra.append(f"{d['progress']:.0%} {d.get('message') or ''}".strip())
    if isinstance(d.get("error"), dict):
        extra.append(f"{d['error'].get('type')}: {d['error'].get('message')}")
    if d.get("worker"):
        extra.append(f"worker={d['worker']}")
    if d.get("runtime_ms") is not None:
        extra.append(f"{d['runtime_ms']} ms")
    style = {"TASK_FAILED": "red", "TASK_COMPLETED": "green", "TASK_CANCELLED": "yellow",
             "TASK_RETRYING": "magenta"}.get(str(event.type), "")
    return Text(f"{when} {event.type:<15} {event.task_id} {d.get('name', '')} "
                f"[{d.get('queue', '')}/{d.get('priority', '')}] {' '.join(extra)}", style=style)


def periodic_lines(schedules: list[Any]) -> list[str]:
    """``taskmesh periodic list`` as plain aligned text (no wrapping, so a
    long name or cron expression stays greppable in any terminal width)."""
    if not schedules:
        return ["no periodic schedules"]
    utc = dt.timezone.utc

    def when(ts: float | None) -> str:
        return dt.datetime.fromtimestamp(ts, utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"

    rows = [("NAME", "SCHEDULE", "TZ", "NEXT RUN", "LAST RUN", "LAST TASK")]
    for s in schedules:
        rule = f"cron {s.cron}" if s.cron else f"every {s.every}s"
        rows.append((s.name, rule, s.tz, when(s.next_run_at), when(s.last_run_at),
                     s.last_task_id or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
            for row in rows]
