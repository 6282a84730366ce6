"""``taskmesh demo``: a small DAG through real worker processes, shown live.

What it does, in order:

1. picks a Redis: ``url`` / ``TASKMESH_URL``; else localhost:6379 if a Redis
   answers there; else an :class:`~taskmesh.server.EmbeddedRedis` it starts
   and stops itself (no Redis and no redis-server: one line saying how to get
   one, exit 1);
2. uses a fresh namespace (``demo-<random>``) unless one was asked for, so it
   never mixes with other data, and deletes nothing;
3. submits the tasks of :mod:`taskmesh.demo_tasks` — an ETL DAG with
   priorities, a retried failure, a timeout, a running task it cancels, a
   deferred task it cancels, a failure cascading to its dependents, and an
   import-string task — then launches ``workers`` worker processes
   (``python -m taskmesh worker``) so the first claims show the priorities;
4. shows one progress bar per task (polled from the store a few times a
   second) and the namespace's live events (``tm.subscribe``); then a
   summary table, the metrics screen of ``taskmesh metrics`` and a verdict;
5. stops the workers (SIGTERM, SIGKILL after 10 s) and its own Redis, and
   returns 0 if every task ended as expected, else 1.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Column, Table
from rich.text import Text

from . import demo_tasks
from .connection import DEFAULT_NAMESPACE, is_memory
from .models import TaskInfo, TaskPriority, TaskStatus
from .server import INSTALL_HINT, EmbeddedRedis, find_redis_server, localhost_answers, spawn

log = logging.getLogger(__name__)

LOCALHOST_URL = "redis://localhost:6379/0"
WORKER_CONCURRENCY = 4
WORKER_LEASE_TIMEOUT = 5.0
WORKER_GRACE_PERIOD = 3.0
WORKER_STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.2
DEMO_TIMEOUT = 45.0  # the whole run stays well under a minute
RESULT_TTL = 3600  # demo records expire an hour after they finish
CANCEL_AT_PROGRESS = 0.3

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


class DemoError(Exception):
    """Something the demo cannot work around; its message is one line."""


# ---- choosing Redis ------------------------------------------------------------------
def mask_url(url: str) -> str:
    """The URL with its password hidden, for printing."""
    return re.sub(r"(://[^:@/]*:)[^@/]+@", r"\1***@", url)


def pick_redis(url: str | None, localhost_url: str = LOCALHOST_URL
               ) -> tuple[str, str, EmbeddedRedis | None]:
    """-> (url, where it came from, the embedded server to stop or None)."""
    env_url = os.environ.get("TASKMESH_URL")
    for given, origin in ((url, "--url"), (env_url, "TASKMESH_URL")):
        if given:
            if given == env_url:
                origin = "TASKMESH_URL"  # the CLI passes the variable as its --url
            if not is_memory(given) and not localhost_answers(given, timeout=2.0):
                raise DemoError(f"no Redis answers at {mask_url(given)} (from {origin})")
            return given, origin, None
    if localhost_answers(localhost_url):
        return localhost_url, "Redis already running on localhost", None
    if find_redis_server() is None:
        raise DemoError(
            f"no Redis answers on {mask_url(localhost_url)} and no redis-server binary was "
            f"found: {INSTALL_HINT}, or set TASKMESH_URL to a running Redis")
    server = EmbeddedRedis()
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        raise DemoError(f"could not start redis-server: {exc}") from exc
    return server.url, "embedded redis-server, stopped at the end", server


def pick_namespace(namespace: str | None) -> str:
    """A fresh ``demo-<random>`` namespace unless one was really asked for.

    The CLI's --namespace option defaults to "default"; a value that came
    from that default (not from the flag or TASKMESH_NAMESPACE) counts as
    not given."""
    if namespace is not None:
        try:
            import click
            from click.core import ParameterSource

            ctx = click.get_current_context(silent=True)
            if (namespace == DEFAULT_NAMESPACE and ctx is not None and ctx.info_name == "demo"
                    and ctx.get_parameter_source("namespace") is ParameterSource.DEFAULT):
                namespace = None
        except Exception:
            pass
    return namespace or f"demo-{secrets.token_hex(3)}"


# ---- worker processes -------------------------------------------------------------------
class WorkerProcesses:
    """``python -m taskmesh worker`` processes, stopped by their PIDs."""

    def __init__(self, count: int, url: str, namespace: str, log_dir: str):
        self.count = count
        self.url = url
        self.namespace = namespace
        self.log_dir = log_dir
        self.suffix = secrets.token_hex(2)
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []
        self.exit_codes: list[int | None] = []

    def argv(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "taskmesh", "worker", "--namespace", self.namespace,
                "--concurrency", str(WORKER_CONCURRENCY),
                "--lease-timeout", f"{WORKER_LEASE_TIMEOUT:g}",
                "--grace-period", f"{WORKER_GRACE_PERIOD:g}",
                "--import", demo_tasks.__name__, "--name", name]
        if mask_url(self.url) == self.url:  # a password goes by environment, not argv
            argv[4:4] = ["--url", self.url]
        return argv

    def start(self) -> None:
        env = dict(os.environ, TASKMESH_URL=self.url, PYTHONUNBUFFERED="1")
        env.pop("TASKMESH_NAMESPACE", None)
        for i in range(1, self.count + 1):
            name = f"demo-w{i}-{self.suffix}"
            with open(self.log_path(name), "wb") as logfile:
                # If the demo is killed outright, its workers go too, at once: a
                # graceful stop may wait forever for a Redis the demo took along.
                self.procs.append(spawn(self.argv(name), death_signal=signal.SIGKILL,
                                        stdin=subprocess.DEVNULL, stdout=logfile,
                                        stderr=subprocess.STDOUT, env=env))
            self.names.append(name)

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    def alive(self) -> int:
        return sum(1 for p in self.procs if p.poll() is None)

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT) -> list[int | None]:
        """SIGTERM to each (by PID), then SIGKILL whatever is left after ``timeout``."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.exit_codes = [p.returncode for p in self.procs]
        return self.exit_codes

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            with open(self.log_path(name), encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:]).rstrip()
        except OSError:
            return "(no log)"


# ---- the tasks ---------------------------------------------------------------------------
@dataclass
class Expect:
    status: TaskStatus
    error: str | None = None  # TaskError.type
    attempts: int | None = None

    def describe(self) -> str:
        text = str(self.status)
        if self.error:
            text += f" ({self.error})"
        if self.attempts is not None:
            text += f" after {self.attempts} attempts"
        return text

    def met_by(self, info: TaskInfo) -> bool:
        if info.status is not self.status:
            return False
        if self.error is not None and (info.error is None or info.error.type != self.error):
            return False
        return self.attempts is None or info.attempts == self.attempts


@dataclass
class DemoTask:
    id: str
    label: str
    expect: Expect
    role: str = ""
    info: TaskInfo | None = None
    first_started: float | None = None
    bar: TaskID | None = None
    result: Any = None


def submit(tm: Any, url: str, namespace: str) -> list[DemoTask]:
    """Registers the demo's tasks; returns them in display order."""
    P, S = TaskPriority, TaskStatus
    tasks: list[DemoTask] = []

    def add(label: str, expect: Expect, func: Callable[..., Any] | str, *args: Any,
            role: str = "", **options: Any) -> str:
        task_id = tm.register_task(func, *args, name=label, tags=["demo"], **options)
        tasks.append(DemoTask(task_id, label, expect, role))
        return task_id

    done = Expect(S.COMPLETED)
    # The ETL DAG: three extractions (three executors) -> combine -> report.
    users = add("extract users", done, demo_tasks.extract, "users", 1200, priority=P.HIGH,
                description="async extraction on the worker's event loop")
    orders = add("extract orders", done, demo_tasks.extract_blocking, "orders", 5400,
                 executor_type="thread_pool", description="blocking extraction in a thread")
    inventory = add("extract inventory", done, demo_tasks.extract_blocking, "inventory", 300,
                    priority=P.LOW, executor_type="sequential",
                    description="low priority: claimed after everything else")
    combined = add("combine", done, demo_tasks.combine, [users, orders, inventory], url,
                   namespace, priority=P.CRITICAL, dependencies=[users, orders, inventory],
                   executor_type="thread_pool", description="runs once all three completed")
    add("publish report (import)", done, "taskmesh.demo_tasks:publish_report", "daily-report",
        priority=P.HIGH, dependencies=[combined], executor_type="thread_pool",
        description="an import string: no pickled code")
    # A failure retried twice (backoff 0.3 s, 0.6 s), then a success.
    add("flaky API call", Expect(S.COMPLETED, attempts=3), demo_tasks.flaky_call, "/api/rates",
        max_retries=3, retry_delay=0.3, retry_backoff=2.0)
    # An attempt past its timeout.
    add("slow query", Expect(S.FAILED, "TaskTimeoutError"), demo_tasks.slow_query,
        timeout=1.5, description="30 s of work with a 1.5 s timeout")
    # A running task the demo cancels, and its dependent cancelled with it.
    export = add("long export", Expect(S.CANCELLED), demo_tasks.long_export, role="cancel",
                 description="cancelled by the demo while it runs")
    add("notify export", Expect(S.CANCELLED, "DependencyFailedError"), demo_tasks.notify,
        "#exports", "export ready", dependencies=[export])
    # A failure without retries cascades to its dependent.
    check = add("validate prices", Expect(S.FAILED, "ValueError"), demo_tasks.validate, "prices",
                executor_type="thread_pool")
    add("publish prices", Expect(S.CANCELLED, "DependencyFailedError"), demo_tasks.notify,
        "#prices", "prices published", dependencies=[check])
    # Priorities: low ones queue behind the rest; the critical one, registered
    # last, is among the first claimed.
    for i in (1, 2, 3):
        add(f"thumbnail {i}", done, demo_tasks.thumbnail, f"img-{i}.png", priority=P.LOW)
    add("urgent alert", done, demo_tasks.notify, "#oncall", "disk 91% full",
        priority=P.CRITICAL, description="registered last, claimed first")
    # Deferred (PENDING), then cancelled before it ever runs.
    cleanup = add("cleanup", Expect(S.CANCELLED), demo_tasks.notify, "#ops", "cleanup done",
                  defer=True, description="deferred, cancelled before it runs")
    tm.cancel_task_sync(cleanup)
    return tasks


# ---- live display -----------------------------------------------------------------------
def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _age(seconds: float) -> str:
    return f"+{seconds:5.2f}s"


class EventFeed:
    """The namespace's live events (``tm.subscribe``), buffered for the main
    thread. ``active`` is False if subscribing failed; the board then logs
    the transitions it sees by polling instead."""

    def __init__(self, tm: Any):
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.counts: collections.Counter[str] = collections.Counter()
        self.subscription: Any = None
        try:
            self.subscription = tm.subscribe(None, self.events.put)
        except Exception as exc:  # the UI degrades to polling; the demo goes on
            log.warning("demo: cannot subscribe to events (%s); showing polled transitions", exc)

    @property
    def active(self) -> bool:
        return self.subscription is not None

    def drain(self) -> list[Any]:
        out: list[Any] = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return out
            self.counts[str(event.type)] += 1
            out.append(event)

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None


EVENT_STYLE = {
    "TASK_CREATED": "bright_black", "TASK_QUEUED": "cyan", "TASK_STARTED": "blue",
    "TASK_PROGRESS": "dim", "TASK_RETRYING": "yellow", "TASK_COMPLETED": "green",
    "TASK_FAILED": "red", "TASK_CANCELLED": "magenta",
}


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
        if info.attempts > 1 or info.status is TaskStatus.SCHEDULED:
            status += f" [dim]try {info.attempts}[/]"
        done = 100.0 if info.status is TaskStatus.COMPLETED else info.progress * 100
        note = info.progress_message or ""
        if info.error is not None:
            note = describe_error(info.error, self.labels)
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
            S.SCHEDULED: f"attempt {info.attempts} failed; retry scheduled",
            S.COMPLETED: f"completed on attempt {info.attempts}",
            S.FAILED: "failed",
            S.CANCELLED: "cancelled",
        }.get(info.status, str(info.status))
        if info.error is not None:
            what += f": {describe_error(info.error, self.labels)}"
        return Text.assemble(
            self._stamp(), "  ", (f"{str(info.status):<15}", STATUS_STYLE.get(info.status, "")),
            " ", (f"{task.label:<24}", "bold"), what)

    def refresh(self) -> None:
        self.progress.refresh()


@dataclass
class TaskErrorView:
    type: str
    message: str


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


def describe_error(error: Any, labels: dict[str, str]) -> str:
    """``Type: message`` with task ids replaced by the demo's labels."""
    message = f"{error.type}: {error.message}"
    for task_id, label in labels.items():
        message = message.replace(task_id, repr(label))
    return message


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
            from .ui import metrics_view

            return metrics_view(metrics)
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
        p95 = runtimes[min(len(runtimes) - 1, int(round(0.95 * (len(runtimes) - 1))))]
        table.add_row("runtime ms", f"avg {statistics.fmean(runtimes):.0f}, "
                                    f"p50 {statistics.median(runtimes):.0f}, p95 {p95:.0f}, "
                                    f"max {runtimes[-1]:.0f}")
    table.add_row("attempts", f"{sum(i.attempts for i in infos)} "
                              f"(retries {sum(max(i.attempts - 1, 0) for i in infos)})")
    workers = sorted({i.worker for i in infos if i.worker})
    table.add_row("workers used", ", ".join(workers) or "-")
    table.add_row("wall time", f"{elapsed:.1f}s")
    return table


# ---- the run ------------------------------------------------------------------------------
def run_demo(url: str | None = None, namespace: str | None = None, workers: int = 2, *,
             localhost_url: str = LOCALHOST_URL, console: Console | None = None,
             timeout: float = DEMO_TIMEOUT) -> int:
    """Runs the demo; returns 0 if every task ended in its expected status."""
    if console is None:
        console = Console()
        if not console.is_terminal and not os.environ.get("COLUMNS"):
            console = Console(width=150)  # a log file: don't squeeze the tables into 80
    began = time.monotonic()
    began_wall = time.time()
    if workers < 0:
        raise ValueError("workers must be >= 0 (0: use the workers already running)")
    server: EmbeddedRedis | None = None
    pool: WorkerProcesses | None = None
    log_dir = tempfile.mkdtemp(prefix="taskmesh-demo-")
    try:
        try:
            url, origin, server = pick_redis(url, localhost_url)
        except DemoError as exc:
            print(f"taskmesh demo: {exc}", file=sys.stderr, flush=True)
            return 1
        namespace = pick_namespace(namespace)
        in_process = is_memory(url)
        console.print(
            f"[bold]taskmesh demo[/]  Redis [cyan]{mask_url(url)}[/] ({origin})  "
            f"namespace [cyan]{namespace}[/]  "
            + ("workers: in-process (memory://)" if in_process else
               "workers: those already running in this namespace" if workers == 0 else
               f"{workers} worker process(es) × concurrency {WORKER_CONCURRENCY}"),
            highlight=False)
        from .manager import TaskManager

        with TaskManager(url, namespace=namespace, result_ttl=RESULT_TTL) as tm:
            feed = EventFeed(tm)  # subscribed before the first task exists
            try:
                tasks = submit(tm, url, namespace)
                if not in_process and workers > 0:
                    pool = WorkerProcesses(workers, url, namespace, log_dir)
                    pool.start()
                elif not in_process and not _workers_running(tm):
                    console.print(f"[yellow]no worker is running in namespace {namespace}: "
                                  f"start one with `taskmesh worker --url {mask_url(url)} "
                                  f"--namespace {namespace}`[/]", highlight=False)
                board = Board(tasks, began_wall, console.is_terminal, console, feed)
                outcome = _watch(tm, tasks, board, pool, began, timeout, console)
            finally:
                feed.close()
            for task in tasks:
                if task.info is not None and task.info.status is TaskStatus.COMPLETED:
                    task.result = tm.get_task_result(task.id)
            elapsed = time.monotonic() - began
            console.print(summary_table(tasks, console.width))
            console.print(metrics_table(tm, tasks, elapsed))
            if feed.counts:
                counts = ", ".join(f"{etype.removeprefix('TASK_').lower()} {feed.counts[etype]}"
                                   for etype in EVENT_STYLE if feed.counts[etype])
                console.print(f"events received: {sum(feed.counts.values())} ({counts})",
                              highlight=False)
        if pool is not None:
            _stop_workers(pool, console)
        return _verdict(tasks, outcome, pool, url, namespace, server, console, elapsed)
    except KeyboardInterrupt:
        print("taskmesh demo: interrupted; stopping workers", file=sys.stderr, flush=True)
        return 130
    finally:
        if pool is not None and not pool.exit_codes:
            _stop_workers(pool, console)
        if server is not None:
            server.stop()
        import shutil

        shutil.rmtree(log_dir, ignore_errors=True)


def _workers_running(tm: Any) -> bool:
    try:
        return bool(tm.get_metrics().get("workers"))
    except Exception:  # metrics unavailable: assume the caller knows
        return True


def _stop_workers(pool: WorkerProcesses, console: Console) -> None:
    for name, code in zip(pool.names, pool.stop()):
        if code != 0:
            console.print(f"[yellow]worker {name} exited with code {code}; its last log lines:[/]"
                          f"\n{pool.log_tail(name)}", highlight=False)


def _watch(tm: Any, tasks: list[DemoTask], board: Board, pool: WorkerProcesses | None,
           began: float, timeout: float, console: Console) -> str:
    """Polls the store until every task is terminal. -> "done", "timeout" or "workers died"."""
    from rich.live import Live

    deadline = began + timeout
    cancelled: set[str] = set()
    outcome = "done"

    def tick() -> bool:
        board.pump_events()
        for task in tasks:
            board.update(task, tm.get_task(task.id))
        for task in tasks:
            info = task.info
            if task.role == "cancel" and task.id not in cancelled and info is not None:
                ripe = info.status is TaskStatus.RUNNING and info.progress >= CANCEL_AT_PROGRESS
                late = time.monotonic() - began > timeout / 3  # never got to run: cancel anyway
                if (ripe or late) and not info.status.is_terminal:
                    cancelled.add(task.id)
                    board.note(f"cancel_task('{task.label}') at {info.progress:.0%} "
                               f"({info.status})", "bold magenta")
                    tm.cancel_task_sync(task.id)
        board.refresh()
        return all(t.info is not None and t.info.status.is_terminal for t in tasks)

    def loop() -> str:
        while True:
            if tick():
                return "done"
            if time.monotonic() > deadline:
                return "timeout"
            if pool is not None and pool.alive() == 0:
                return "workers died"
            time.sleep(POLL_INTERVAL)

    def finish() -> None:
        time.sleep(0.3)  # the last events are on their way
        board.pump_events()
        board.refresh()

    if board.live:
        with Live(board, console=console, refresh_per_second=8, transient=False):
            outcome = loop()
            finish()
    else:
        outcome = loop()
        finish()
    return outcome


def _verdict(tasks: list[DemoTask], outcome: str, pool: WorkerProcesses | None, url: str,
             namespace: str, server: EmbeddedRedis | None, console: Console,
             elapsed: float) -> int:
    wrong = [t for t in tasks if t.info is None or not t.expect.met_by(t.info)]
    if outcome == "timeout":
        console.print(f"[red]demo: tasks still unfinished after {elapsed:.0f}s[/]")
    elif outcome == "workers died" and pool is not None:
        console.print("[red]demo: every worker process exited before the tasks finished[/]")
        for name in pool.names:
            console.print(f"[dim]{name}:[/]\n{pool.log_tail(name)}", highlight=False)
    for task in wrong:
        got = "unknown"
        if task.info is not None:
            got = f"{task.info.status} after {task.info.attempts} attempts"
            if task.info.error is not None:
                got += f" ({describe_error(task.info.error, {})})"
        console.print(f"[red]✗ {task.label}: expected {task.expect.describe()}, got {got}[/]",
                      highlight=False)
    if server is None and not is_memory(url):
        console.print(f"[dim]inspect a task: taskmesh inspect {tasks[0].id} "
                      f"--url {mask_url(url)} --namespace {namespace}[/]", highlight=False)
    if outcome == "done" and not wrong:
        console.print(f"[bold green]demo OK[/]: {len(tasks)} tasks ended as expected "
                      f"in {elapsed:.1f}s", highlight=False)
        return 0
    console.print(f"[bold red]demo FAILED[/]: {len(wrong)} of {len(tasks)} tasks did not end "
                  f"as expected ({outcome}, {elapsed:.1f}s)", highlight=False)
    return 1
