"""Records that cross the public API: statuses, priorities, events, task info."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class TaskStatus(StrEnum):
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
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)


class TaskPriority(IntEnum):
    LOW = 0
    NORMAL = 5
    HIGH = 10
    CRITICAL = 15


class EventType(StrEnum):
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


@dataclass(frozen=True)
class TaskError:
    """Why a task failed: ``type`` is the exception class name."""

    type: str
    message: str
    traceback: str | None = None
    attempt: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": self.attempt,
        }

    def exception(self) -> BaseException:
        """The exception the task raised, rebuilt here (SPEC §11): taskmesh's
        own errors by type; others from the worker's pickle when there is one
        this side may open (signed when it has a secret); else a
        :class:`~taskmesh.exceptions.RemoteTaskError`."""
        from .remote import rebuild

        return rebuild(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskError":
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=data.get("traceback") or None,
            attempt=int(data.get("attempt") or 0),
        )


@dataclass(frozen=True)
class Event:
    type: EventType
    task_id: str
    timestamp: float
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class TaskInfo:
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
