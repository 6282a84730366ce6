"""``current_task()``: the running task's context, in every executor.

The context lives in a ContextVar; workers run each task in a copied
``contextvars`` context (asyncio tasks and thread-pool calls alike), so the
right context is visible wherever the task's code runs.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

PROGRESS_MIN_INTERVAL_S = 0.05

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
    _last_sent: float = field(default=0.0, repr=False)
    _unsent: tuple[float, str | None] | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or timed out: a cooperative task
        running in a thread should return soon after seeing it."""
        return self._cancel_event.is_set()

    def update_progress(self, progress: float, message: str | None = None) -> bool:
        """Cheap enough for a tight loop: updates closer than PROGRESS_MIN_INTERVAL_S
        are coalesced locally and the last one is flushed when the task ends."""
        value = validate_progress(progress, message)
        now = time.monotonic()
        if value < 1.0 and now - self._last_sent < PROGRESS_MIN_INTERVAL_S:
            self._unsent = (value, message)
            return True
        self._last_sent, self._unsent = now, None
        return self._report_progress(value, message)

    def flush_progress(self) -> None:
        if self._unsent is not None:
            value, message = self._unsent
            self._unsent = None
            self._report_progress(value, message)


def current_task() -> TaskContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("current_task() called outside a running taskmesh task") from None
