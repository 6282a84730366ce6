"""Validates register_task's arguments and builds the stored record.

Everything here runs before anything touches Redis, so bad input raises a
typed exception and stores nothing (README *Registering*). ``register_task`` and
``register_many`` both go through :func:`build_task`.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, NamedTuple, Sequence

import msgpack

from .exceptions import SerializationError
from .keys import validate_queue_name, validate_rate_key
from .models import EXECUTOR_TYPES, RECORD_DEFAULTS, ExecutorType, TaskPriority
from .retry_policy import normalize_retry_on
from .serialization import Codec, TaskEncoder

IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*|\.[A-Za-z_]\w*)$")
MAX_TASK_ID = 256


@dataclass(frozen=True)
class TaskOptions:
    """register_task's keyword options (everything but func and its args)."""

    name: str | None = None
    priority: int = TaskPriority.NORMAL
    dependencies: Sequence[str] | None = None
    max_retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 1.0
    timeout: float | None = None
    description: str = ""
    tags: Sequence[str] | None = None
    metadata: dict[str, Any] | None = None
    executor_type: ExecutorType | str = "async"
    queue: str = "default"
    task_id: str | None = None
    defer: bool = False
    delay: float | None = None
    eta: datetime | float | None = None
    rate_key: str | None = None
    retry_on: Any = None  # exception classes / qualified names (retry_policy.py)
    retry_jitter: bool = False


# Record fields a retry copies verbatim (README *Finding tasks, retrying one*): the function and its
# arguments ride in ``payload``; dependencies and defer are not copied.
# A registration option stored in a new field belongs here too.
RETRY_COPIED_FIELDS = ("name", "description", "queue", "priority", "executor", "max_retries",
                       "retry_delay", "retry_backoff", "timeout", "tags", "metadata", "payload",
                       "rate_key", "retry_on", "retry_jitter")


class NewTask(NamedTuple):
    """One validated registration (a tuple: built for every task, so built cheaply)."""

    id: str
    fields: dict[str, Any]
    dependencies: list[str]
    defer: bool


def check_func(func: Any) -> Callable[..., Any] | str:
    if isinstance(func, str):
        if not IMPORT_STRING.match(func):
            raise TypeError(
                f"func {func!r} is not an import string like 'package.module:function'"
            )
        return func
    if not callable(func):
        raise TypeError(f"func must be a callable or an import string, not {type(func).__name__}")
    checked: Callable[..., Any] = func
    return checked


def default_name(func: Callable[..., Any] | str) -> str:
    if isinstance(func, str):
        return func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name or type(func).__qualname__


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be a TaskPriority or an int, not {type(priority).__name__}")
    if not 0 <= priority <= 255:
        raise ValueError(f"priority must be in 0..255, got {priority}")
    return int(priority)


def check_options(opts: TaskOptions) -> None:
    if opts.name is not None and (not isinstance(opts.name, str) or not opts.name.strip()):
        raise ValueError("name must be a non-empty string")
    check_priority(opts.priority)
    if isinstance(opts.max_retries, bool) or not isinstance(opts.max_retries, int):
        raise TypeError("max_retries must be an int")
    if opts.max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {opts.max_retries}")
    if _number("retry_delay", opts.retry_delay) < 0:
        raise ValueError(f"retry_delay must be >= 0, got {opts.retry_delay}")
    if _number("retry_backoff", opts.retry_backoff) < 1:
        raise ValueError(f"retry_backoff must be >= 1, got {opts.retry_backoff}")
    if opts.timeout is not None and _number("timeout", opts.timeout) <= 0:
        raise ValueError(f"timeout must be > 0, got {opts.timeout}")
    if opts.executor_type not in EXECUTOR_TYPES:
        raise ValueError(
            f"executor_type must be one of {', '.join(EXECUTOR_TYPES)}, got {opts.executor_type!r}"
        )
    validate_queue_name(opts.queue)
    if opts.rate_key is not None:
        validate_rate_key(opts.rate_key)
    normalize_retry_on(opts.retry_on)
    if not isinstance(opts.retry_jitter, bool):
        raise TypeError("retry_jitter must be a bool")
    if not isinstance(opts.description, str):
        raise TypeError("description must be a string")
    if opts.tags is not None and (
        isinstance(opts.tags, str) or not all(isinstance(t, str) for t in opts.tags)
    ):
        raise TypeError("tags must be a list of strings")
    if opts.metadata is not None and not isinstance(opts.metadata, dict):
        raise TypeError("metadata must be a dict")
    if opts.task_id is not None:
        if not isinstance(opts.task_id, str) or not opts.task_id or opts.task_id.isspace():
            raise ValueError("task_id must be a non-empty string")
        if len(opts.task_id) > MAX_TASK_ID:
            raise ValueError(f"task_id is longer than {MAX_TASK_ID} characters")
    if opts.dependencies is not None and (
        isinstance(opts.dependencies, str)
        or not all(isinstance(d, str) and d for d in opts.dependencies)
    ):
        raise TypeError("dependencies must be a list of task ids (strings)")


def check_timing(delay: Any, eta: Any) -> dict[str, int]:
    """The record fields for ``delay=`` / ``eta=`` (README *Delays*): ``delay_ms``
    counts from when register.lua runs, on the Redis clock (the clock that
    promotes SCHEDULED tasks, so client skew does not matter); ``eta_ms`` is
    an absolute epoch time, which assumes the hosts' clocks agree."""
    if delay is not None and eta is not None:
        raise ValueError("pass delay= or eta=, not both")
    if delay is not None:
        if _number("delay", delay) < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        return {"delay_ms": round(delay * 1000)}
    if eta is None:
        return {}
    if isinstance(eta, datetime):
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise ValueError("eta must be a timezone-aware datetime (or epoch seconds), "
                             f"got the naive {eta.isoformat()}")
        return {"eta_ms": round(eta.timestamp() * 1000)}
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"eta must be a timezone-aware datetime or epoch seconds, "
                        f"not {type(eta).__name__}")
    return {"eta_ms": round(_number("eta", eta) * 1000)}


def _check_text(opts: TaskOptions, func: Callable[..., Any] | str) -> None:
    """Every string that goes to Redis as text must encode as UTF-8: a lone
    surrogate would otherwise fail inside redis-py with nothing stored but a
    bare UnicodeEncodeError. (Arguments are carried by the codec, which
    pickles such a string intact.)"""
    texts: list[tuple[str, Any]] = [
        ("func", func), ("name", opts.name), ("description", opts.description),
        ("queue", opts.queue), ("task_id", opts.task_id),
    ]
    texts += [(f"tags[{i}]", t) for i, t in enumerate(opts.tags or ())]
    texts += [(f"dependencies[{i}]", d) for i, d in enumerate(opts.dependencies or ())]
    for part, value in texts:
        if isinstance(value, str):
            _check_utf8(part, value)


def _check_utf8(part: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(part, f"{type(exc).__name__}: {exc}") from exc


def build_task(
    codec: Codec,
    func: Any,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    opts: TaskOptions,
    result_ttl: int | None,
) -> NewTask:
    return blueprint(codec, func, opts, result_ttl).task(args, kwargs, opts.task_id)


class Blueprint:
    """What every task of one func and one set of options shares, checked
    and encoded once: the record fields around the payload, and the
    function's part of the payload. register_many builds one per call;
    register_task keeps one per distinct set of options (manager.py), so a
    loop of like calls validates its options once. Only the arguments, the
    task id and the payload's envelope are made per task (:meth:`task`)."""

    __slots__ = ("func", "encoder", "head", "tail", "deps", "defer")

    def __init__(self, func: Callable[..., Any] | str, encoder: TaskEncoder | None,
                 head: dict[str, Any], tail: dict[str, Any], deps: list[str], defer: bool):
        self.func = func
        self.encoder = encoder  # None: a callable, pickled anew per task (see task())
        self.head = head  # the fields before the payload
        self.tail = tail  # and after it (options left empty are not stored)
        self.deps = deps
        self.defer = defer

    def task(self, args: Sequence[Any], kwargs: dict[str, Any] | None,
             task_id: str | None = None, codec: Codec | None = None) -> NewTask:
        """One task of this blueprint. ``kwargs`` is checked here (it may
        differ per task); ``task_id`` must have been checked (check_task_id).
        ``codec`` is needed only when the blueprint has no encoder."""
        if kwargs:  # (an empty dict and None need no look)
            check_kwargs(kwargs)
        elif kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a dict")
        task_id = task_id or new_task_id()
        encoder = self.encoder
        if encoder is None:
            assert codec is not None
            # Pickled per task, as ever: a function pickled by value
            # carries its globals and closure as they are now.
            encoder = codec.task_encoder(self.func)
        # With a secret the payload's signature is bound to this task id (and
        # namespace): copied into another record it no longer verifies.
        payload = encoder.encode(task_id, tuple(args), kwargs or {})
        return NewTask(task_id, {**self.head, "payload": payload, **self.tail}, self.deps,
                       self.defer)


    def payloads(self, ids: Sequence[str], items: Sequence[tuple[Any, ...]],
                 kwargs: dict[str, Any] | None) -> list[bytes]:
        """The payloads of many tasks sharing ``kwargs`` (register_many)."""
        if not items:
            return []
        if kwargs:
            check_kwargs(kwargs)
        elif kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a dict")
        assert self.encoder is not None  # kept: a blueprint of one call
        encode = self.encoder.encode
        kw = kwargs or {}
        return [encode(task_id, args, kw) for task_id, args in zip(ids, items)]

    def task_of(self, task_id: str, payload: bytes) -> NewTask:
        return NewTask(task_id, {**self.head, "payload": payload, **self.tail}, self.deps,
                       self.defer)


def new_task_id() -> str:
    """``uuid.uuid4().hex`` without building a UUID object."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def new_task_ids(count: int) -> list[str]:
    """``count`` ids as ``uuid.uuid4().hex`` makes them (16 random bytes with
    the version and variant bits set), drawn in one read of os.urandom."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])
    text = raw.hex()
    return [text[i:i + 32] for i in range(0, 32 * count, 32)]


def check_kwargs(kwargs: Any) -> None:
    if not isinstance(kwargs, dict):
        raise TypeError("kwargs must be a dict")
    if not all(isinstance(k, str) for k in kwargs):
        raise TypeError("kwargs keys must be strings")


def check_task_id(task_id: Any) -> None:
    if task_id is not None:
        if not isinstance(task_id, str) or not task_id or task_id.isspace():
            raise ValueError("task_id must be a non-empty string")
        if len(task_id) > MAX_TASK_ID:
            raise ValueError(f"task_id is longer than {MAX_TASK_ID} characters")
        _check_utf8("task_id", task_id)


def _stored_ttl(result_ttl: int | None) -> str | None:
    """The record's ``ttl`` field (-1: kept forever), or None at its
    default, which is not stored (models.RECORD_DEFAULTS)."""
    ttl = str(-1 if result_ttl is None else int(result_ttl))
    return None if ttl == RECORD_DEFAULTS["ttl"] else ttl


def blueprint(codec: Codec, func: Any, opts: TaskOptions, result_ttl: int | None,
              keep_encoder: bool = True) -> Blueprint:
    """Checks ``func`` and ``opts`` (raising before anything is stored) and
    encodes what their tasks share. ``keep_encoder=False`` leaves a
    callable to be pickled per task (a blueprint reused across calls)."""
    func = check_func(func)
    check_options(opts)
    timing = check_timing(opts.delay, opts.eta)
    _check_text(opts, func)
    deps = list(dict.fromkeys(opts.dependencies or ()))
    head: dict[str, Any] = {
        "name": opts.name or default_name(func),
        "queue": opts.queue,
        "priority": check_priority(opts.priority),
    }
    ttl = _stored_ttl(result_ttl)
    if ttl is not None:
        head["ttl"] = ttl
    fields: dict[str, Any] = dict(timing)
    # Options at their default are not stored either (models.RECORD_DEFAULTS,
    # the one place readers take them from): four fields fewer in nearly
    # every record.
    for name, text in (("executor", str(opts.executor_type)),  # an ExecutorType: its value
                       ("max_retries", str(opts.max_retries)),
                       ("retry_delay", repr(float(opts.retry_delay))),
                       ("retry_backoff", repr(float(opts.retry_backoff)))):
        if text != RECORD_DEFAULTS[name]:
            fields[name] = text
    # Options left empty are not stored: every reader defaults them (store.
    # task_info, claim.lua, the listing indexes), and a record with fewer
    # fields is cheaper to write and to read on every transition.
    if opts.description:
        fields["description"] = opts.description
    if opts.timeout is not None:
        fields["timeout"] = repr(float(opts.timeout))
    if opts.tags:
        fields["tags"] = json.dumps(list(opts.tags))
    if opts.metadata:
        try:
            fields["metadata"] = msgpack.packb(opts.metadata, use_bin_type=True)
        except BaseException as exc:  # a value's own code may raise SystemExit too
            raise SerializationError("metadata", f"{type(exc).__name__}: {exc}") from exc
    if deps:
        fields["dependencies"] = json.dumps(deps)
    if opts.rate_key is not None:
        fields["rate_key"] = opts.rate_key
    retry_on = normalize_retry_on(opts.retry_on)  # cached: checked above already
    if retry_on is not None:
        fields["retry_on"] = json.dumps(retry_on)
    if opts.retry_jitter:
        fields["retry_jitter"] = "1"
    encoder = codec.task_encoder(func) if keep_encoder or isinstance(func, str) else None
    return Blueprint(func, encoder, head, fields, deps, bool(opts.defer))


def build_retry(old_id: str, record: dict[str, Any], priority: int | None,
                queue: str | None, result_ttl: int | None) -> NewTask:
    """A new registration copying a FAILED or CANCELLED task (retry_task):
    same function, arguments and options, ``metadata["retry_of"]`` = old id."""
    status = _text(record.get("status"))
    if status not in ("failed", "cancelled"):
        raise ValueError(f"task {old_id} is {status or 'unknown'}: only FAILED or CANCELLED "
                         "tasks can be retried")
    if not record.get("payload"):
        raise ValueError(f"task {old_id} no longer holds its function and arguments")
    fields = {name: record[name] for name in RETRY_COPIED_FIELDS if name in record}
    try:
        metadata = msgpack.unpackb(record.get("metadata") or b"\x80", raw=False,
                                   strict_map_key=False)
    except Exception:
        metadata = {}
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    metadata["retry_of"] = old_id
    fields["metadata"] = msgpack.packb(metadata, use_bin_type=True)
    if priority is not None:
        fields["priority"] = check_priority(priority)
    if queue is not None:
        fields["queue"] = validate_queue_name(queue)
    fields.pop("ttl", None)
    ttl = _stored_ttl(result_ttl)
    if ttl is not None:
        fields["ttl"] = ttl
    fields["dependencies"] = "[]"
    return NewTask(uuid.uuid4().hex, fields, [], False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
