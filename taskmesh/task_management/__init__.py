"""Code written for the seed (WiseFlow's ``core.task_management``) runs on
taskmesh with one changed import (README *Coming from the seed / WiseFlow*)::

    from taskmesh.task_management import TaskManager, Task, TaskStatus, TaskPriority, create_task_id

With ``TASKMESH_URL`` unset it runs in this process (``memory://``); set, the
same program's tasks run on taskmesh workers anywhere. A thin layer: the
rules live in taskmesh's core, this package adapts names, defaults and
return conventions (see README, "Coming from the seed / WiseFlow").
"""

from __future__ import annotations

from typing import Any

from ..events import subscribe
from ..models import EventType
from .exceptions import (
    InvalidTaskStateError,
    TaskCancellationError,
    TaskDependencyError,
    TaskError,
    TaskExecutionError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from .task import Task, TaskPriority, TaskStatus, create_task_id
from .task_manager import TaskManager

__all__ = [
    "EventType", "InvalidTaskStateError", "Task", "TaskCancellationError",
    "TaskDependencyError", "TaskError", "TaskExecutionError", "TaskManager",
    "TaskNotFoundError", "TaskPriority", "TaskStatus", "TaskTimeoutError", "create_task_id",
    "subscribe", "task_manager",
]


def __getattr__(name: str) -> Any:
    # The seed's module-level ``task_manager``: the singleton, built on first
    # access (not at import: importing does no I/O and picks no URL).
    if name == "task_manager":
        return TaskManager()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
