"""A task's original exception, carried from the worker to the caller
(docs/design.md *Original exceptions*).

Worker side: :func:`pickle_exception` turns the exception a task raised into
an envelope of the worker's :class:`~taskmesh.serialization.Codec` (so it is
HMAC-signed when the worker has a secret, and never produced under
``--no-pickle``). It is stored beside the error JSON in the task record
(field ``error_exc``), not inside it, so events and metrics never carry it.

Caller side: the store attaches the stored bytes to the :class:`TaskError`
it decodes, the manager binds its own Codec, and ``TaskError.exception()``
calls :func:`rebuild`. The bytes ride as a plain instance attribute, not a
dataclass field, so TaskError's fields, equality and repr stay as they are.
Opening the envelope checks the signature first: a producer with a secret
never unpickles an unsigned or tampered exception.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import exceptions
from .exceptions import (
    DependencyFailedError,
    ProcessCrashedError,
    RemoteTaskError,
    TaskTimeoutError,
    WorkerLostError,
)

if TYPE_CHECKING:
    from .models import TaskError
    from .serialization import Codec

log = logging.getLogger(__name__)

# Errors the worker (or a script) raises itself: rebuilt from type + message.
OWN_ERRORS: dict[str, type[exceptions.TaskmeshError]] = {
    cls.__name__: cls
    for cls in (TaskTimeoutError, WorkerLostError, DependencyFailedError, ProcessCrashedError)
}
MAX_PICKLED_BYTES = 1024 * 1024  # a bigger exception is kept as type/message only

_BLOB = "_pickled_exception"
_CODEC = "_exception_codec"


def pickle_exception(codec: "Codec", exc: BaseException) -> bytes | None:
    """The exception as a (signed) envelope, or None when it does not pickle,
    the worker refuses pickles, or it is too big to keep."""
    if type(exc).__name__ in OWN_ERRORS:
        return None  # rebuilt from its type; nothing to carry
    if not isinstance(exc, Exception):
        return None  # SystemExit & co. rebuilt on a caller would end the caller
    try:
        blob = codec.encode_result(exc)
    except BaseException as error:  # __reduce__ may raise anything, SystemExit included
        log.debug("exception %s does not pickle: %s", type(exc).__name__, error)
        return None
    return blob if len(blob) <= MAX_PICKLED_BYTES else None


def attach(error: "TaskError | None", blob: Any) -> "TaskError | None":
    """Remembers the stored pickled exception on a decoded TaskError."""
    if error is not None and blob:
        object.__setattr__(error, _BLOB, bytes(blob))
    return error


def bind(error: "TaskError | None", codec: "Codec") -> "TaskError | None":
    """Gives the TaskError the reading manager's Codec (its secret policy)."""
    if error is not None:
        object.__setattr__(error, _CODEC, codec)
    return error


def rebuild(error: "TaskError") -> BaseException:
    own = OWN_ERRORS.get(error.type)
    if own is not None:
        return own(error.message)
    blob: bytes | None = getattr(error, _BLOB, None)
    codec: "Codec | None" = getattr(error, _CODEC, None)
    if blob and codec is not None:
        try:
            value = codec.decode_result(blob)  # verifies the signature first
        except Exception as exc:  # unknown class, unsigned under a secret, ...
            log.debug("cannot rebuild %s: %s", error.type, exc)
        else:
            if isinstance(value, BaseException):
                return value
    return RemoteTaskError(error.type, error.message, error.traceback)
