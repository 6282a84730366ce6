"""``current_task()``: the running task's context, in every executor.

The context lives in a ContextVar; workers run each task in a copied
``contextvars`` context (asyncio tasks and thread-pool calls alike), so the
right context is visible wherever the task's code runs.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

_current: ContextVar["TaskContext"] = ContextVar("taskmesh_current_task")


def validate_progress(progress: float, message: str | None) -> float:
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        raise TypeError("progress must be a number in [0, 1]")
    if not 0.0 <= float(progress) <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError("message must be a string or None")
    return float(progress)


@dataclass
class TaskContext:
    task_id: str
    attempt: int
    name: str
    metadata: dict[str, Any]
    _report_progress: Callable[[float, str | None], bool] = field(repr=False)
    _cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or timed out: a cooperative task
        running in a thread should return soon after seeing it."""
        return self._cancel_event.is_set()

    def update_progress(self, progress: float, message: str | None = None) -> bool:
        value = validate_progress(progress, message)
        return self._report_progress(value, message)


def current_task() -> TaskContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("current_task() called outside a running taskmesh task") from None
