"""Records that cross the public API: statuses, priorities, events, task info."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class TaskStatus(StrEnum):
    """Where a task is in its life (README *Statuses*). A StrEnum with the
    lower-case values the records store, so ``status == "queued"`` works."""

    PENDING = "pending"
    WAITING = "waiting"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED or CANCELLED: the task will not change again."""
        return self in TERMINAL_STATUSES


# The terminal statuses, in the order metrics and the done:<status> indexes
# list them (TERMINAL in lua/prelude.lua, pinned equal by tests/test_keys.py).
TERMINAL_ORDER = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
TERMINAL_STATUSES = frozenset(TERMINAL_ORDER)


class TaskPriority(IntEnum):
    """Named points of the 0..255 priority scale (any int in it is accepted);
    higher runs first, FIFO within one priority and queue."""

    LOW = 0
    NORMAL = 5
    HIGH = 10
    CRITICAL = 15


class EventType(StrEnum):
    """What an :class:`Event` reports; the values are the member names, as
    they appear on the event stream and in ``taskmesh events``."""

    TASK_CREATED = "TASK_CREATED"
    TASK_QUEUED = "TASK_QUEUED"
    TASK_STARTED = "TASK_STARTED"
    TASK_PROGRESS = "TASK_PROGRESS"
    TASK_RETRYING = "TASK_RETRYING"
    TASK_COMPLETED = "TASK_COMPLETED"
    TASK_FAILED = "TASK_FAILED"
    TASK_CANCELLED = "TASK_CANCELLED"


class ExecutorType(StrEnum):
    """How a worker runs a task's function (``register_task(executor_type=)``).
    A StrEnum, so the plain strings (``"async"``) keep working everywhere and
    are what the record stores."""

    ASYNC = "async"
    SEQUENTIAL = "sequential"
    THREAD_POOL = "thread_pool"
    PROCESS = "process"


# The accepted values as plain strings, in the order error messages list them.
EXECUTOR_TYPES: tuple[str, ...] = tuple(e.value for e in ExecutorType)

# Registration options not stored while at their default (registration.py
# leaves them out of the record: each field written costs every later read
# and write of the record), as the text a record would hold. The one place
# Python readers take them from (store.Fields); lua/prelude.lua's
# DEFAULT_EXECUTOR / DEFAULT_MAX_RETRIES / DEFAULT_RETRY_DELAY_S /
# DEFAULT_RETRY_BACKOFF are the same values for the scripts
# (tests/test_keys.py pins them equal). A record written with the field
# (an older registration, or a retry's copy) reads the same.
RECORD_DEFAULTS: dict[str, str] = {
    "ttl": "86400",  # TaskManager's result_ttl default
    "executor": ExecutorType.ASYNC.value,
    "max_retries": "0",
    "retry_delay": "1.0",
    "retry_backoff": "1.0",
}


@dataclass(frozen=True)
class TaskError:
    """Why a task failed: ``type`` is the exception class name."""

    type: str
    message: str
    traceback: str | None = None
    attempt: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: how an error travels in events and the dashboard's API."""
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": self.attempt,
        }

    def exception(self) -> BaseException:
        """The exception the task raised, rebuilt here (docs/design.md
        *Original exceptions*): taskmesh's
        own errors by type; others from the worker's pickle when there is one
        this side may open (signed when it has a secret); else a
        :class:`~taskmesh.exceptions.RemoteTaskError`."""
        from .remote import rebuild

        return rebuild(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskError":
        """The inverse of :meth:`to_dict`, lenient: a missing field takes its
        default rather than failing the read of the whole task."""
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=data.get("traceback") or None,
            attempt=int(data.get("attempt") or 0),
        )


@dataclass(frozen=True)
class Event:
    """One task event, as published live and kept in the replayable stream.
    ``id`` is the stream entry id (None for a live-only event): pass it as
    ``get_events(since=...)`` to resume a replay exactly after it."""

    type: EventType
    task_id: str
    timestamp: float
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class TaskInfo:
    """A snapshot of one task's record (``get_task``, ``list_tasks``): a
    plain dataclass read in one call, so its fields agree with each other,
    and detached from Redis, so holding one never keeps a connection or
    sees later changes. The result is not in it (see ``get_task_result``)."""

    id: str
    name: str
    description: str
    status: TaskStatus
    priority: int
    queue: str
    executor_type: str
    dependencies: list[str]
    attempts: int
    max_retries: int
    worker: str | None
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    progress: float
    progress_message: str | None
    tags: list[str]
    metadata: dict[str, Any]
    error: TaskError | None
    recoveries: int = 0
    pending_dependencies: int = 0  # dependencies not COMPLETED yet


@dataclass
class TaskPage:
    """One page of ``list_tasks``: pass ``cursor`` back for the next; None
    means there is no more."""

    tasks: list[TaskInfo]
    cursor: str | None
