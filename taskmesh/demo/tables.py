"""The final tables: one row per task, then the namespace's metrics."""

from __future__ import annotations

import collections
import re
import statistics
from typing import TYPE_CHECKING, Any, cast

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from ..models import TaskStatus
from .board import STATUS_STYLE, describe_error
from .workload import DemoTask

if TYPE_CHECKING:
    from ..metrics import Metrics


def _short(value: Any, width: int = 46) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def start_order(tasks: list[DemoTask]) -> dict[str, int]:
    """Task id -> rank of its first start. Tasks claimed in one batch share a
    timestamp; a batch is claimed by priority, then FIFO (registration order)."""
    index = {t.id: i for i, t in enumerate(tasks)}
    started = [(round(t.first_started, 3), -t.info.priority, index[t.id], t.id)
               for t in tasks if t.first_started is not None and t.info is not None]
    return {key[-1]: i for i, key in enumerate(sorted(started), 1)}


def summary_table(tasks: list[DemoTask], width: int = 150) -> Table:
    """One row per task. Under 130 columns, priority and start order are left
    out and demo worker ids shortened (``demo-w1-ab12`` -> ``w1``)."""
    compact = width < 130
    rank = start_order(tasks)
    labels = {t.id: t.label for t in tasks}
    caption = "ok: ended as the demo expects"
    if not compact:
        caption = "#run: order of first start (claims go by priority, then FIFO); " + caption
    table = Table(title="taskmesh demo: summary", title_justify="left", caption=caption,
                  caption_justify="left")
    names = ["task", "status", "tries", "worker", "runtime", "ok"]
    if not compact:
        names[1:1] = ["prio", "#run"]
    # Every column but the last keeps its width; a narrow terminal wraps the results.
    for name in names:
        table.add_column(name, no_wrap=not (compact and name == "task"),
                         justify="right" if name in ("prio", "#run", "tries", "runtime") else "left")
    table.add_column("result / error", min_width=12, overflow="fold")
    for task in tasks:
        info = task.info
        if info is None:
            table.add_row(escape(task.label), *["-"] * (len(names) - 2), "[red]✗[/]", "unknown")
            continue
        runtime = "-"
        if info.started_at and info.finished_at:
            runtime = f"{info.finished_at - info.started_at:.2f}s"
        if info.status is TaskStatus.COMPLETED:
            outcome = escape(_short(task.result))
        elif info.error is not None:
            outcome = escape(_short(describe_error(info.error, labels)))
        else:
            outcome = "-"
        worker = info.worker or "-"
        if compact:
            match = re.fullmatch(r"demo-(w\d+)-[0-9a-f]{4}", worker)
            worker = match.group(1) if match else worker
        style = STATUS_STYLE.get(info.status, "")
        row = [escape(task.label), f"[{style}]{info.status}[/]", str(info.attempts), worker,
               runtime, "[green]✓[/]" if task.expect.met_by(info) else "[red]✗[/]", outcome]
        if not compact:
            row[1:1] = [str(info.priority), str(rank.get(task.id, "-"))]
        table.add_row(*row)
    return table


def metrics_table(tm: Any, tasks: list[DemoTask], elapsed: float) -> RenderableType:
    """The namespace's metrics as ``taskmesh metrics`` shows them, else a
    table of ``tm.get_metrics()``, else the demo's own tally of its tasks."""
    table = Table(title="metrics", title_justify="left", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    metrics: dict[str, Any] | None = None
    get_metrics = getattr(tm, "get_metrics", None)
    if callable(get_metrics):
        try:
            metrics = get_metrics()
        except Exception:  # not built yet or failing: fall back to our own tally
            metrics = None
    if metrics:
        try:
            from ..ui import metrics_view

            # get_metrics() of either manager: Metrics, or the seed's superset of it.
            return metrics_view(cast("Metrics", metrics))
        except Exception:  # the screen's format moved on: show the raw numbers
            pass
        counts = metrics.get("tasks") or {}
        table.add_row("tasks", ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "-")
        totals = metrics.get("totals") or {}
        table.add_row("totals", ", ".join(f"{k} {v}" for k, v in totals.items()) or "-")
        runtime = metrics.get("runtime_ms") or {}
        table.add_row("runtime ms", ", ".join(
            f"{k} {v:.0f}" if isinstance(v, (int, float)) else f"{k} {v}"
            for k, v in runtime.items()) or "-")
        throughput = metrics.get("throughput_per_s")
        if throughput is not None:
            table.add_row("throughput", f"{throughput:.2f} tasks/s (last 60 s)")
        workers = metrics.get("workers") or []
        table.add_row("workers", str(len(workers)))
        table.add_row("failure rate", str(metrics.get("failure_rate", "-")))
        return table
    infos = [t.info for t in tasks if t.info is not None]
    counts = collections.Counter(str(i.status) for i in infos)
    table.add_row("tasks", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    runtimes = sorted((i.finished_at - i.started_at) * 1000 for i in infos
                      if i.status is TaskStatus.COMPLETED and i.started_at and i.finished_at)
    if runtimes:
        p95 = runtimes[min(len(runtimes) - 1, round(0.95 * (len(runtimes) - 1)))]
        table.add_row("runtime ms", f"avg {statistics.fmean(runtimes):.0f}, "
                                    f"p50 {statistics.median(runtimes):.0f}, p95 {p95:.0f}, "
                                    f"max {runtimes[-1]:.0f}")
    table.add_row("attempts", f"{sum(i.attempts for i in infos)} "
                              f"(retries {sum(max(i.attempts - 1, 0) for i in infos)})")
    workers = sorted({i.worker for i in infos if i.worker})
    table.add_row("workers used", ", ".join(workers) or "-")
    table.add_row("wall time", f"{elapsed:.1f}s")
    return table
