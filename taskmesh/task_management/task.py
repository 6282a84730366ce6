"""The seed's task record: ``Task``, its enums and ``create_task_id`` (README
*Coming from the seed / WiseFlow*).

``TaskStatus`` and ``TaskPriority`` are taskmesh's own enums: they carry
every member of the seed's (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED,
WAITING; LOW, NORMAL, HIGH, CRITICAL) plus QUEUED and SCHEDULED, so a status
reads as the core's. A Task read from Redis loads its function and arguments,
result and error only when first asked for (one read each).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable

from ..models import TaskInfo, TaskPriority, TaskStatus

__all__ = ["Task", "TaskPriority", "TaskStatus", "create_task_id"]

_LAZY = ("func", "args", "kwargs", "result", "error")


def create_task_id() -> str:
    """A new unique task id."""
    return str(uuid.uuid4())


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch) if epoch is not None else None


class Task:
    """A task as the seed described it. Built by hand it is a plain record;
    the TaskManager builds them from the stored task."""

    def __init__(
        self,
        task_id: str | None = None,
        name: str = "Unnamed Task",
        func: Callable[..., Any] | str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int = TaskPriority.NORMAL,
        dependencies: list[str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        description: str = "",
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self._loaded: dict[str, Any] = {}
        self._loaders: dict[str, Callable[[], Any]] = {}
        self.task_id = task_id or create_task_id()
        self.name = name
        self.func = func
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.priority = priority
        self.dependencies = list(dependencies or [])
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.description = description
        self.tags = list(tags or [])
        self.metadata = dict(metadata or {})
        self.status = TaskStatus.PENDING
        self.result: Any = None
        self.error: BaseException | None = None
        self.created_at: datetime | None = datetime.now()
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.retry_count = 0
        self.progress = 0.0
        self.progress_message = ""
        self._report_progress: Callable[[float, str], bool] | None = None

    # func, args, kwargs, result and error of a stored task load on first use.
    def __getattr__(self, name: str) -> Any:
        if name in _LAZY and "_loaders" in self.__dict__:
            loader = self.__dict__["_loaders"].pop(name, None)
            if loader is not None:
                self.__dict__[name] = loader()
                return self.__dict__[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and "_loaders" in self.__dict__:
            self.__dict__["_loaders"].pop(name, None)
        object.__setattr__(self, name, value)

    @classmethod
    def from_info(cls, info: TaskInfo, status: TaskStatus,
                  loaders: dict[str, Callable[[], Any]],
                  report_progress: Callable[[float, str], bool] | None = None) -> "Task":
        """The record of a stored task; ``loaders`` fetch the lazy fields."""
        try:
            priority: int = TaskPriority(info.priority)
        except ValueError:
            priority = info.priority
        task = cls(info.id, info.name, priority=priority,
                   dependencies=info.dependencies, max_retries=info.max_retries,
                   description=info.description, tags=info.tags, metadata=info.metadata)
        task.status = status
        task.created_at = _when(info.created_at)
        task.started_at = _when(info.started_at)
        task.completed_at = _when(info.finished_at)
        task.retry_count = max(info.attempts - 1 - info.recoveries, 0)
        task.progress = info.progress
        task.progress_message = info.progress_message or ""
        for name in _LAZY:
            task.__dict__.pop(name, None)
        task._loaders.update(loaders)
        task._report_progress = report_progress
        return task

    def update_progress(self, progress: float, message: str = "") -> None:
        """Sets the progress (0..1, else ValueError); a stored task's is
        recorded in Redis too."""
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not (
                0.0 <= progress <= 1.0):
            raise ValueError(f"progress must be between 0.0 and 1.0, got {progress!r}")
        self.progress = float(progress)
        self.progress_message = message
        if self._report_progress is not None:
            self._report_progress(self.progress, message)

    def is_ready(self, completed_tasks: Any) -> bool:
        """True when every dependency is among ``completed_tasks`` (ids)."""
        return all(dep in completed_tasks for dep in self.dependencies)

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "task_id": self.task_id, "name": self.name,
            "priority": getattr(self.priority, "name", self.priority),
            "status": self.status.name, "dependencies": self.dependencies,
            "created_at": iso(self.created_at), "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at), "retry_count": self.retry_count,
            "max_retries": self.max_retries, "progress": self.progress,
            "progress_message": self.progress_message, "description": self.description,
            "tags": self.tags, "metadata": self.metadata,
            "error": str(self.error) if self.error else None,
        }

    def __str__(self) -> str:
        return f"Task({self.task_id}, {self.name}, {self.status.name})"

    def __repr__(self) -> str:
        return (f"Task(task_id={self.task_id}, name={self.name}, status={self.status.name}, "
                f"priority={getattr(self.priority, 'name', self.priority)})")
