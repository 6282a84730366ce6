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

# In-task updates go to Redis through a token bucket: bursts of this many at
# once, then this many per second; the rest are coalesced locally and the
# last one is flushed when the task ends.
PROGRESS_BURST = 10
PROGRESS_WRITES_PER_S = 20.0

_current: ContextVar["TaskContext"] = ContextVar("taskmesh_current_task")


class ProgressDeferred(Exception):
    """Raised by a worker's progress reporter when Redis cannot take the
    update now (down, restarting, OOM): the update is kept as the unsent one
    and flushed later. Progress is telemetry; it never fails the task."""


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
    """What a running task may know about itself and say about its progress,
    reached through :func:`current_task` rather than a parameter, so task
    functions keep the signatures their callers use. One per attempt:
    ``attempt`` counts from 1, and ``cancelled`` tells a cooperative function
    (one on a thread cannot be interrupted) that it should stop."""

    task_id: str
    attempt: int
    name: str
    metadata: dict[str, Any]
    _report_progress: Callable[[float, str | None], bool] = field(repr=False)
    _cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _report_final: Callable[[float, str | None], bool] | None = field(default=None, repr=False)
    _tokens: float = field(default=PROGRESS_BURST, repr=False)
    _tokens_at: float = field(default_factory=time.monotonic, repr=False)
    _unsent: tuple[float, str | None] | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or timed out: a cooperative task
        running in a thread should return soon after seeing it."""
        return self._cancel_event.is_set()

    def update_progress(self, progress: float, message: str | None = None) -> bool:
        """Cheap enough for a tight loop: beyond a burst of PROGRESS_BURST,
        updates are coalesced locally and the last one is flushed (and
        published) when the task ends."""
        value = validate_progress(progress, message)
        now = time.monotonic()
        self._tokens = min(PROGRESS_BURST,
                           self._tokens + (now - self._tokens_at) * PROGRESS_WRITES_PER_S)
        self._tokens_at = now
        if value < 1.0 and self._tokens < 1:
            self._unsent = (value, message)
            return True
        self._tokens -= 1
        self._unsent = None
        try:
            return self._report_progress(value, message)
        except ProgressDeferred:
            self._unsent = (value, message)
            return True

    def flush_progress(self) -> None:
        """Sends the last coalesced update; raises ProgressDeferred (keeping
        it unsent) if Redis cannot take it now."""
        if self._unsent is not None:
            value, message = self._unsent
            (self._report_final or self._report_progress)(value, message)
            self._unsent = None


def current_task() -> TaskContext:
    """The :class:`TaskContext` of the task running in this context (async
    task, its thread, or its child process). RuntimeError outside a task, so
    a function called directly fails loudly instead of reporting to nowhere."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("current_task() called outside a running taskmesh task") from None
