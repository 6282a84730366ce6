"""Terminal rendering shared by the CLI commands (rich)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

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
