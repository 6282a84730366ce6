"""The demo's tasks: the DAG it submits and the outcome expected of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.progress import TaskID

from .. import demo_tasks
from ..models import TaskInfo, TaskPriority, TaskStatus

if TYPE_CHECKING:
    from ..manager import TaskManager


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


def submit(tm: TaskManager, url: str, namespace: str) -> list[DemoTask]:
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
    # Delayed: SCHEDULED for 2 s, then queued at its priority.
    add("send reminder", done, demo_tasks.notify, "#users", "reminder sent", delay=2.0,
        description="delay=2: SCHEDULED until then")
    # Deferred (PENDING), then cancelled before it ever runs.
    cleanup = add("cleanup", Expect(S.CANCELLED), demo_tasks.notify, "#ops", "cleanup done",
                  defer=True, description="deferred, cancelled before it runs")
    tm.cancel_task_sync(cleanup)
    return tasks


PERIODIC_NAME = "demo-heartbeat"


def add_schedule(tm: TaskManager) -> Any:
    """A periodic schedule, fired by the workers every second while the demo
    runs (its tick tasks are counted apart from the table above)."""
    return tm.add_periodic(PERIODIC_NAME, demo_tasks.notify, "#ops", "heartbeat", every=1,
                           tags=["demo"])


def schedule_summary(tm: TaskManager, added: Any) -> str:
    """One line about the demo's schedule; removes it (the demo leaves no
    schedule behind to tick forever)."""
    info = next((s for s in tm.list_periodic() if s.name == PERIODIC_NAME), None)
    tm.remove_periodic(PERIODIC_NAME)
    if info is None or info.last_run_at is None:
        return f"periodic '{PERIODIC_NAME}' (every 1 s): no tick fired yet"
    ticks = int(info.last_run_at - added.next_run_at) // added.every + 1
    return (f"periodic '{PERIODIC_NAME}' (every 1 s): {ticks} tick(s) fired, one task each, "
            f"the last {info.last_task_id}; schedule removed")
