"""Every error taskmesh raises, under one root.

    TaskmeshError
    ├── TaskNotFoundError        unknown (or expired) task id (also a KeyError)
    ├── PayloadError             a task's bytes: cannot be made, or cannot be read
    │   ├── SerializationError   func, args, kwargs or result cannot be encoded
    │   │   └── PayloadTooLargeError serialized task or result over max_payload_bytes
    │   └── PayloadDecodeError   stored bytes are not a taskmesh envelope
    ├── SignatureError           HMAC missing or wrong (secret configured)
    ├── UnsafePayloadError       pickled payload refused (--no-pickle)
    ├── TaskFailedError          a waited-for task ended FAILED (carries .error)
    ├── TaskCancelledError       a waited-for task ended CANCELLED
    ├── TaskTimeoutError         an attempt ran past its timeout (remote type)
    ├── DependencyFailedError    a dependency ended FAILED/CANCELLED (remote type)
    ├── WorkerLostError          the task's worker died too often (remote type)
    ├── ProcessCrashedError      a process-executor child died mid-task (remote type)
    ├── RemoteTaskError          a task's exception that cannot be rebuilt here
    ├── StoreError               Redis answered something the store cannot use
    │   ├── ServerBusyError      Redis refuses for now: OOM (maxmemory) or BUSY script
    │   ├── CorruptRecordError   a stored field is unreadable (not UTF-8, not a number)
    │   └── ReportRefusedError   (reporter.py, internal) Redis dropped one report
    ├── TaskmeshConnectionError  Redis could not be reached (any URL kind); the
    │                            redis-py error is its __cause__ (also a builtin
    │                            and a redis-py ConnectionError)
    ├── ReplicationError         fewer than min_replicas replicas took a write in time
    └── task_management.TaskError  root of the seed-compatible errors (see that module)

Outside the root, on purpose: ``retry_policy.InvalidRetryOnError`` (a bad
``retry_on=``) is a ``TypeError`` and a ``ValueError``, as bad arguments are.

The "remote types" are raised inside workers and recorded as a TaskError's
``type``; producers see them through TaskFailedError / TaskCancelledError.
Builtin ``ValueError``/``TypeError``/``TimeoutError`` are used where Python
code would expect them (bad arguments, wait timeouts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.exceptions

if TYPE_CHECKING:
    from .models import TaskError


class TaskmeshError(Exception):
    """Root of every taskmesh exception."""


class TaskNotFoundError(TaskmeshError, KeyError):
    """No record for ``task_id``: never registered, or expired after its
    result_ttl. Also a KeyError, as a lookup by an unknown key is."""

    def __init__(self, task_id: str):
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return f"task {self.task_id!r} does not exist (unknown id or expired record)"


class PayloadError(TaskmeshError):
    """A task's bytes could not be made (:class:`SerializationError`) or
    read back (:class:`PayloadDecodeError`): one ``except`` for both sides
    of the codec."""


class SerializationError(PayloadError):
    """``part`` names what failed: ``func``, ``args[1]``, ``kwargs['x']``, ``result``."""

    def __init__(self, part: str, cause: BaseException | str, message: str | None = None):
        self.part = part
        self.cause = cause
        super().__init__(message or f"cannot serialize {part}: {cause}")


class PayloadTooLargeError(SerializationError):
    """A serialized task (``part="payload"``) or result (``part="result"``)
    over ``max_payload_bytes``; ``limit`` is None when Redis itself refused
    to store the bytes (over its ``proto-max-bulk-len``)."""

    def __init__(self, size: int, limit: int | None, part: str = "payload"):
        self.size = size
        self.limit = limit
        what = "task" if part == "payload" else part
        if limit is None:
            message = f"serialized {what} is {size} bytes, more than Redis accepts (proto-max-bulk-len)"
        else:
            message = f"serialized {what} is {size} bytes, over max_payload_bytes={limit}"
        super().__init__(part, message, message)


class PayloadDecodeError(PayloadError):
    """Stored bytes do not decode as a taskmesh envelope."""


class SignatureError(TaskmeshError):
    """Payload is unsigned or its HMAC does not match the configured secret."""


class UnsafePayloadError(TaskmeshError):
    """A pickled payload reached a worker that refuses pickles (--no-pickle)."""


class TaskFailedError(TaskmeshError):
    """Raised by waiting on a task that ended FAILED. ``error`` is the
    stored TaskError; ``error.exception()`` rebuilds what the task raised."""

    def __init__(self, task_id: str, error: "TaskError"):
        self.task_id = task_id
        self.error = error
        super().__init__(f"task {task_id} failed: {error.type}: {error.message}")


class TaskCancelledError(TaskmeshError):
    """Raised by waiting on a task that ended CANCELLED: by request, or
    because a dependency failed (then ``error.type`` is DependencyFailedError)."""

    def __init__(self, task_id: str, error: "TaskError | None" = None):
        self.task_id = task_id
        self.error = error
        why = f" ({error.type}: {error.message})" if error else ""
        super().__init__(f"task {task_id} was cancelled{why}")


class TaskTimeoutError(TaskmeshError):
    """An attempt ran longer than the task's ``timeout``."""


class DependencyFailedError(TaskmeshError):
    """A dependency ended FAILED or CANCELLED, so the dependent never runs."""


class WorkerLostError(TaskmeshError):
    """The task's worker stopped renewing its lease more times than allowed."""


class ProcessCrashedError(TaskmeshError):
    """The child process running a ``process`` task died before it answered
    (segfault, ``os._exit``, killed from outside). The worker goes on with a
    fresh child; the attempt is a failure like any other (retried if retries
    are left)."""


class RemoteTaskError(TaskmeshError):
    """A task's exception as the caller sees it when the original cannot be
    rebuilt (it did not pickle on the worker, its class is unknown here, or
    its pickle is unsigned while this side has a secret): ``TaskError.exception()``."""

    def __init__(self, type: str, message: str, traceback: str | None = None):
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteTaskError, (self.type, self.message, self.traceback))


class StoreError(TaskmeshError):
    """Redis returned something the store does not understand."""


class ServerBusyError(StoreError):
    """Redis is up but refuses commands for now: ``reason`` is ``"oom"``
    (``maxmemory`` reached under ``noeviction``) or ``"busy"`` (another
    client's script ran past ``busy-reply-threshold``). Nothing was changed;
    retrying later is safe. Workers back off and resume by themselves."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        what = "is out of memory (maxmemory)" if reason == "oom" else "is busy running a script"
        super().__init__(f"Redis {what}; nothing was changed, retry later ({detail})")


class CorruptRecordError(StoreError):
    """A stored record has a field taskmesh cannot read (written to Redis by
    something else, or damaged). ``record`` names it (``task <id>``, ``event
    <stream id>``), ``field`` the field."""

    def __init__(self, record: str, field: str, detail: str):
        self.record = record
        self.field = field
        self.detail = detail
        super().__init__(f"{record}: field {field!r} is corrupted ({detail})")


class TaskmeshConnectionError(TaskmeshError, redis.exceptions.ConnectionError, ConnectionError):
    """Redis could not be reached: down, unreachable, still loading its
    data, or a cluster/sentinel set-up none of whose nodes answered. Every
    URL kind raises this one class from the producer API (sync and async)
    and the CLI; the redis-py error it replaces is its ``__cause__``.

    Also a builtin ``ConnectionError`` (an ``OSError``), so code that waits
    out an unreachable Redis treats it like a dropped socket, and a redis-py
    ``ConnectionError``, so code written against redis-py's error (which
    producer calls raised before) still catches it."""


class ReplicationError(TaskmeshError):
    """Fewer replicas than ``min_replicas`` acknowledged a state change within
    2 s (README *Redis Cluster, Sentinel and failover*). The write happened
    on the master; retrying it is safe.
    ``replies`` holds the calls' own answers."""

    replies: list[object] = []
