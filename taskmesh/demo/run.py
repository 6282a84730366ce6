"""``run_demo``: the demo from Redis to verdict, and the polling loop it watches."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

from rich.console import Console

from ..connection import is_memory
from ..models import TaskStatus
from ..server import RedisServer
from .board import Board, describe_error
from .events import EVENT_STYLE, EventFeed
from .processes import WORKER_CONCURRENCY, WorkerProcesses
from .tables import metrics_table, summary_table
from ..connection import mask_url
from .target import LOCALHOST_URL, DemoError, pick_namespace, pick_redis
from .workload import DemoTask, add_schedule, schedule_summary, submit

POLL_INTERVAL = 0.2
DEMO_TIMEOUT = 45.0  # the whole run stays well under a minute
RESULT_TTL = 3600  # demo records expire an hour after they finish
CANCEL_AT_PROGRESS = 0.3


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
    server: RedisServer | None = None
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
        from ..manager import TaskManager

        with TaskManager(url, namespace=namespace, result_ttl=RESULT_TTL) as tm:
            feed = EventFeed(tm)  # subscribed before the first task exists
            schedule = add_schedule(tm)
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
                schedule_line = schedule_summary(tm, schedule)
            for task in tasks:
                if task.info is not None and task.info.status is TaskStatus.COMPLETED:
                    task.result = tm.get_task_result(task.id)
            elapsed = time.monotonic() - began
            console.print(summary_table(tasks, console.width))
            console.print(metrics_table(tm, tasks, elapsed))
            console.print(schedule_line, highlight=False)
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
            server.cleanup()
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
             namespace: str, server: RedisServer | None, console: Console,
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
