"""The seed's exception classes (README *Coming from the seed / WiseFlow*), with its constructors.

    TaskError (this module's root; also a taskmesh.TaskmeshError)
    ├── TaskNotFoundError      also taskmesh.TaskNotFoundError
    ├── TaskDependencyError    a dependency does not exist
    ├── TaskCancellationError  the waited-for task ended CANCELLED
    ├── TaskExecutionError     carries ``original_error``
    └── InvalidTaskStateError  e.g. execute_task on a finished task

``TaskTimeoutError`` is taskmesh's own (what a timed-out task raises).
"""

from __future__ import annotations

from typing import Any

from .. import exceptions as core
from ..exceptions import TaskTimeoutError

__all__ = [
    "InvalidTaskStateError", "TaskCancellationError", "TaskDependencyError", "TaskError",
    "TaskExecutionError", "TaskNotFoundError", "TaskTimeoutError",
]


class TaskError(core.TaskmeshError):
    """Root of this module's errors: ``(message, task_id=None, details=None)``."""

    def __init__(self, message: str, task_id: str | None = None,
                 details: dict[str, Any] | None = None):
        self.message = message
        self.task_id = task_id
        self.details = details or {}
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"error_type": type(self).__name__, "message": self.message,
                "task_id": self.task_id, "details": self.details}


class TaskNotFoundError(TaskError, core.TaskNotFoundError):  # type: ignore[misc]
    """An unknown (or expired) task id; also catchable as taskmesh's own."""


class TaskDependencyError(TaskError):
    """A dependency does not exist; ``task_id`` is the task being registered."""


class TaskCancellationError(TaskError):
    """The task ended CANCELLED (or could not be cancelled)."""


class InvalidTaskStateError(TaskError):
    """The task's status does not allow the operation."""


class TaskExecutionError(TaskError):
    def __init__(self, message: str, task_id: str | None = None,
                 details: dict[str, Any] | None = None,
                 original_error: BaseException | None = None):
        super().__init__(message, task_id, details)
        self.original_error = original_error

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.original_error is not None:
            out["original_error"] = {"type": type(self.original_error).__name__,
                                     "message": str(self.original_error)}
        return out
