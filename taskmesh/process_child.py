"""What runs inside a process-executor child (see :mod:`taskmesh.process_pool`).

A child is a long-lived process that runs one task at a time. It receives
the task's payload *bytes* and decodes them itself with the worker's
:class:`~taskmesh.serialization.Codec` (secret, signature check and
``--no-pickle`` included), so nothing from the payload is ever unpickled in
the worker; it sends back the encoded result envelope or the error record.
Outcomes therefore reach Redis exactly as the other executors produce them.

Frames on the pipe are msgpack lists (never pickles, so the worker decodes
nothing a task controls)::

    worker -> child   ["run", task_id, attempt, name, metadata, payload]
                      ["stop"]                     exit (the worker is stopping)
    child -> worker   ["ready"]                    once, when the child is up
                      ["started"]                  the function is about to run
                      ["progress", value, message]  current_task().update_progress
                      ["final", value, message]     the last coalesced update
                      ["done", kind, data, retryable, pickled exception]
                          kind "completed": data is the result envelope
                          kind "failed":    data is the TaskError JSON (with
                          the "types" retry_on matches); the exception itself
                          travels only as the envelope taskmesh.remote
                          stores (or nil)

Every failure inside the child, even a ``SystemExit`` raised by a result's
``__reduce__`` or an exception's ``__str__``, ends as a "failed" frame; if
the child dies anyway the worker sees it as :class:`ProcessCrashedError`.
"""

from __future__ import annotations

import contextvars
import json
import os
import select
import signal
import threading
from typing import Any, Callable

import msgpack

from .context import TaskContext, _current
from .executors import is_coroutine_callable, open_payload, run_coroutine
from .remote import pickle_exception
from .serialization import Codec, safe_str

def pack(*frame: Any) -> bytes:
    data: bytes = msgpack.packb(list(frame), use_bin_type=True)
    return data


def unpack(data: bytes) -> list[Any]:
    frame = msgpack.unpackb(data, raw=False)
    if not isinstance(frame, list) or not frame:
        raise ValueError("malformed frame")
    return frame


def serve(conn: Any, codec: Codec) -> None:
    """The child's main loop: one "run" frame in, frames out, until the
    worker closes the pipe."""
    # Signals are the worker's business: a Ctrl-C or a SIGTERM to the whole
    # process group must not fail running tasks; the worker decides whether
    # to wait for them (grace period) or to kill the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _watch_parent(conn)
    lock = threading.Lock()  # a task's own threads may report progress too

    def send(data: bytes) -> None:
        with lock:
            conn.send_bytes(data)

    send(pack("ready"))
    while True:
        try:
            frame = unpack(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the worker closed the pipe (or is gone): exit quietly
        if frame[0] == "run":
            _run(send, codec, *frame[1:6])
        elif frame[0] == "stop":
            return


def _watch_parent(conn: Any) -> None:
    """Exits when the worker goes away (kill -9), so no child keeps running a
    task that another worker will recover and run again. The worker's death
    closes its end of the pipe, which polls as POLLHUP here without reading
    anything. (The parent pid says nothing: a forkserver child's parent is
    the fork server, which outlives the worker while children hold it.)"""
    if not hasattr(select, "poll"):
        return
    poller = select.poll()
    poller.register(conn.fileno(), 0)  # only POLLHUP / POLLERR / POLLNVAL

    def watch() -> None:
        while True:
            if poller.poll():
                os._exit(1)

    threading.Thread(target=watch, name="taskmesh-orphan-watch", daemon=True).start()


def _run(send: Callable[[bytes], None], codec: Codec, task_id: str, attempt: int, name: str,
         metadata: dict[str, Any], payload: bytes) -> None:
    context = TaskContext(
        task_id=task_id, attempt=attempt, name=name, metadata=metadata,
        send=lambda v, m, final: _send_progress(send, "final" if final else "progress", v, m),
    )
    try:
        target, args, kwargs, out = open_payload(codec, task_id, payload)
    except BaseException as exc:  # bad payload, signature, import: never retried
        send(pack("done", "failed", describe(exc, attempt), False))
        return
    send(pack("started"))
    ctx = contextvars.copy_context()
    ctx.run(_current.set, context)
    try:
        if is_coroutine_callable(target):
            result = ctx.run(run_coroutine, target, *args, **kwargs)
        else:
            result = ctx.run(target, *args, **kwargs)
    except BaseException as exc:  # the task's own exception, SystemExit included
        _flush(context)
        send(pack("done", "failed", describe(exc, attempt), True,
                  pickle_exception(out.for_error(task_id, attempt), exc)))
        return
    _flush(context)
    try:
        data = out.for_result(task_id, attempt).encode_result(result)
    except BaseException as exc:  # a SerializationError: encode_result wraps anything
        send(pack("done", "failed", describe(exc, attempt), False))
        return
    send(pack("done", "completed", data, False))


def _send_progress(send: Callable[[bytes], None], kind: str, value: float,
                   message: str | None) -> None:
    send(pack(kind, value, message))


def _flush(context: TaskContext) -> None:
    try:
        context.flush_progress()
    except Exception:
        pass  # progress is telemetry; the outcome still goes out


def describe(exc: BaseException, attempt: int) -> str:
    """The TaskError JSON, as the worker writes it; never raises, whatever
    the exception's ``__str__`` does."""
    from .worker import _error_json  # the one implementation of the record

    try:
        return _error_json(exc, attempt)
    except BaseException:  # last resort: the child must answer whatever happens
        name = type(exc).__name__
        return json.dumps({"type": name, "message": safe_str(exc), "traceback": None,
                           "attempt": attempt})
