"""The live display: one progress bar per task and a log of events or transitions."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text

from ..models import TaskInfo, TaskStatus
from .events import EVENT_STYLE, EventFeed
from .workload import DemoTask

STATUS_STYLE = {
    TaskStatus.PENDING: "bright_black",
    TaskStatus.WAITING: "bright_black",
    TaskStatus.QUEUED: "cyan",
    TaskStatus.SCHEDULED: "yellow",
    TaskStatus.RUNNING: "blue",
    TaskStatus.COMPLETED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "magenta",
}


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _age(seconds: float) -> str:
    return f"+{seconds:5.2f}s"


@dataclass
class TaskErrorView:
    type: str
    message: str


def describe_error(error: Any, labels: dict[str, str]) -> str:
    """``Type: message`` with task ids replaced by the demo's labels."""
    message = f"{error.type}: {error.message}"
    for task_id, label in labels.items():
        message = message.replace(task_id, repr(label))
    return message


class Board:
    """Progress bars (one per task), polled from the store, and a log of the
    namespace's events (or, without them, of the transitions polling saw)."""

    def __init__(self, tasks: list[DemoTask], began_wall: float, live: bool, console: Console,
                 feed: EventFeed | None = None):
        self.tasks = tasks
        self.began_wall = began_wall
        self.live = live
        self.console = console
        self.feed = feed if feed is not None and feed.active else None
        # The event log takes what the terminal has left under the bars.
        room = console.height - len(tasks) - 8 if live else 12
        self.lines: collections.deque[Text] = collections.deque(maxlen=max(4, min(room, 14)))
        self.seen: dict[str, tuple[TaskStatus, int]] = {}
        self.labels = {t.id: t.label for t in tasks}
        width = max(len(t.label) for t in tasks)
        bar = 30 if console.width >= 140 else 20 if console.width >= 110 else 10
        # label + bar + percentage + status, column padding, panel borders
        room = console.width - (width + bar + 4 + 20 + 8 + 4)
        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(width=width, no_wrap=True)),
            BarColumn(bar_width=bar, table_column=Column(width=bar, no_wrap=True)),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}", table_column=Column(width=20, no_wrap=True)),
            TextColumn("[dim]{task.fields[note]}", table_column=Column(
                max_width=max(room, 8), no_wrap=True, overflow="ellipsis")),
            console=console, auto_refresh=False, expand=False,
        )
        for task in tasks:
            task.bar = self.progress.add_task(escape(task.label), total=100, status="", note="")

    def __rich__(self) -> Group:
        log_ = Group(*self.lines) if self.lines else Text("waiting for events…", style="dim")
        title = ("events (live, TASK_PROGRESS shown in the bars)" if self.feed else
                 "transitions (polled)")
        return Group(
            Panel(self.progress, title="tasks", title_align="left", border_style="blue"),
            Panel(log_, title=title, title_align="left", border_style="bright_black"),
        )

    def _stamp(self, when: float | None = None) -> tuple[str, str]:
        return _age((when if when is not None else time.time()) - self.began_wall), "dim"

    def note(self, text: str, style: str = "bold") -> None:
        """A line about what the demo itself does."""
        self._log(Text.assemble(self._stamp(), "  ", (f"{'demo':<15} ", "bold"), (text, style)))

    def _log(self, line: Text) -> None:
        if self.live:
            line.no_wrap, line.overflow = True, "ellipsis"  # one line each in the panel
            self.lines.append(line)
        else:
            self.lines.append(line)
            self.console.print(line)

    # ---- events ------------------------------------------------------------------
    def pump_events(self) -> None:
        if self.feed is None:
            return
        for event in self.feed.drain():
            label = self.labels.get(event.task_id)
            if label is not None and str(event.type) != "TASK_PROGRESS":
                self._log(self._event_line(event, label))

    def _event_line(self, event: Any, label: str) -> Text:
        d = event.data or {}
        etype = str(event.type)
        error = d.get("error") if isinstance(d.get("error"), dict) else None
        detail = {
            "TASK_CREATED": f"stored {d.get('status', '')}, priority {d.get('priority', '?')}",
            "TASK_QUEUED": f"priority {d.get('priority', '?')}",
            "TASK_STARTED": f"on {d.get('worker', '?')}, attempt {d.get('attempt', '?')}",
            "TASK_RETRYING": f"attempt {d.get('attempt', '?')} failed, retry in "
                             f"{float(d.get('delay') or 0):.1f}s",
            "TASK_COMPLETED": f"attempt {d.get('attempt', '?')}, {d.get('runtime_ms', '?')} ms",
            "TASK_FAILED": f"attempt {d.get('attempt', '?')}",
            "TASK_CANCELLED": (f"while running on {d['worker']}" if d.get("worker") else
                               "before it ran"),
        }.get(etype, "")
        if error is not None:
            message = describe_error(TaskErrorView(str(error.get("type")),
                                                   str(error.get("message"))), self.labels)
            detail = f"{detail}: {message}" if detail else message
        return Text.assemble(
            self._stamp(event.timestamp), "  ", (f"{etype:<15}", EVENT_STYLE.get(etype, "")),
            " ", (f"{label:<24}", "bold"), detail)

    # ---- polled state --------------------------------------------------------------
    def update(self, task: DemoTask, info: TaskInfo) -> None:
        task.info = info
        if info.started_at and (task.first_started is None or info.started_at < task.first_started):
            task.first_started = info.started_at
        style = STATUS_STYLE.get(info.status, "")
        status = f"[{style}]{info.status}[/]"
        if info.attempts > 1 or (info.status is TaskStatus.SCHEDULED and info.attempts):
            status += f" [dim]try {info.attempts}[/]"
        done = 100.0 if info.status is TaskStatus.COMPLETED else info.progress * 100
        note = info.progress_message or ""
        if info.error is not None:
            note = describe_error(info.error, self.labels)
        elif info.status is TaskStatus.SCHEDULED and not info.attempts:
            note = "delayed: queued at its time"
        elif info.status is TaskStatus.WAITING:
            note = f"waiting for {_plural(len(info.dependencies), 'dependency', 'dependencies')}"
        assert task.bar is not None
        self.progress.update(task.bar, completed=done, status=status, note=escape(note))
        key = (info.status, info.attempts)
        if self.feed is None and self.seen.get(task.id) != key:
            self.seen[task.id] = key
            self._log(self._transition(task, info))

    def _transition(self, task: DemoTask, info: TaskInfo) -> Text:
        S = TaskStatus
        deps = _plural(len(info.dependencies), "dependency", "dependencies")
        what = {
            S.PENDING: "stored deferred (PENDING)",
            S.WAITING: f"waiting on {deps}",
            S.QUEUED: f"queued at priority {info.priority}",
            S.RUNNING: f"started on {info.worker or '?'} (attempt {info.attempts})",
            S.SCHEDULED: (f"attempt {info.attempts} failed; retry scheduled" if info.attempts
                          else "delayed (SCHEDULED until its time)"),
            S.COMPLETED: f"completed on attempt {info.attempts}",
            S.FAILED: "failed",
            S.CANCELLED: "cancelled",
        }.get(info.status, str(info.status))
        if info.error is not None:
            what += f": {describe_error(info.error, self.labels)}"
        return Text.assemble(
            self._stamp(), "  ", (f"{info.status!s:<15}", STATUS_STYLE.get(info.status, "")),
            " ", (f"{task.label:<24}", "bold"), what)

    def refresh(self) -> None:
        self.progress.refresh()
