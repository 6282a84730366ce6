"""``current_task()``: the running task's context, in every executor.

The context lives in a ContextVar; workers run each task in a copied
``contextvars`` context (asyncio tasks and thread-pool calls alike), so the
right context is visible wherever the task's code runs.

One throttle applies to progress: the token bucket here. What passes it is
handed to the context's ``send`` (the worker queues it on its asynchronous
reporter, a process child writes a frame to its worker) and never waits for
Redis, so ``update_progress`` costs the same whether Redis is fast, slow or
down. The last update the bucket held back is sent when the task ends.

The worker side owns each attempt's context through its ``Job``
(:mod:`taskmesh.executors`): only that owner calls :meth:`TaskContext.signal_cancel`
and :meth:`TaskContext.flush_progress`.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, Callable

# In-task updates go out through a token bucket: bursts of this many at
# once, then this many per second (README *Progress*: each one sent is also
# published); the rest are coalesced locally and the last one is flushed
# when the task ends. Progress 1.0 always goes out.
PROGRESS_BURST = 10
PROGRESS_WRITES_PER_S = 10.0

# send(progress, message, final): ``final`` marks a task's last value (always
# published, never throttled again).
ProgressSink = Callable[[float, "str | None", bool], None]

_current: ContextVar["TaskContext"] = ContextVar("taskmesh_current_task")


def validate_progress(progress: float, message: str | None) -> float:
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        raise TypeError("progress must be a number in [0, 1]")
    if not 0.0 <= float(progress) <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError("message must be a string or None")
    return float(progress)


class TaskContext:
    """What a running task may know about itself and say about its progress,
    reached through :func:`current_task` rather than a parameter, so task
    functions keep the signatures their callers use. One per attempt:
    ``attempt`` counts from 1, and ``cancelled`` tells a cooperative function
    (one on a thread cannot be interrupted) that it should stop."""

    __slots__ = ("task_id", "attempt", "name", "metadata", "_send", "_cancelled",
                 "_tokens", "_tokens_at", "_unsent")

    def __init__(self, task_id: str, attempt: int, name: str, metadata: dict[str, Any],
                 send: ProgressSink):
        self.task_id = task_id
        self.attempt = attempt
        self.name = name
        self.metadata = metadata
        self._send = send
        # A plain flag: set on the worker's loop, read by the task's thread
        # (a bool store is atomic under the GIL; nothing ever waits on it).
        self._cancelled = False
        self._tokens = float(PROGRESS_BURST)
        self._tokens_at = 0.0  # monotonic; 0: the bucket starts full
        self._unsent: tuple[float, str | None] | None = None

    def __repr__(self) -> str:
        return (f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt!r}, "
                f"name={self.name!r}, metadata={self.metadata!r})")

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or timed out: a cooperative task
        running in a thread should return soon after seeing it."""
        return self._cancelled

    def update_progress(self, progress: float, message: str | None = None) -> bool:
        """Cheap enough for a tight loop: beyond a burst of PROGRESS_BURST,
        updates are coalesced locally and the last one is flushed (and
        published) when the task ends. Returns True once the update is
        accepted (sent, or held back as the last value)."""
        value = validate_progress(progress, message)
        now = time.monotonic()
        if self._tokens < PROGRESS_BURST:
            self._tokens = min(PROGRESS_BURST,
                               self._tokens + (now - self._tokens_at) * PROGRESS_WRITES_PER_S)
        self._tokens_at = now
        if value < 1.0 and self._tokens < 1:
            self._unsent = (value, message)
            return True
        self._tokens = max(self._tokens - 1, 0.0)
        self._unsent = None
        self._send(value, message, False)
        return True

    # ---- the attempt's owner (the worker's Job, a process child) ------------
    def signal_cancel(self) -> None:
        """Worker side: the attempt was cancelled or timed out."""
        self._cancelled = True

    def forward(self, progress: Any, message: Any, final: bool) -> None:
        """Worker side: an update already throttled where it was made (a
        process child's own context) goes out as it is, once checked."""
        self._send(validate_progress(progress, message), message, final)

    def flush_progress(self) -> None:
        """Worker side, when the function has returned: sends the last value
        the bucket held back, if any, as the task's final one."""
        unsent, self._unsent = self._unsent, None
        if unsent is not None:
            self._send(unsent[0], unsent[1], True)


def current_task() -> TaskContext:
    """The :class:`TaskContext` of the task running in this context (async
    task, its thread, or its child process). RuntimeError outside a task, so
    a function called directly fails loudly instead of reporting to nowhere."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("current_task() called outside a running taskmesh task") from None
