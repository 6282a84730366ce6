"""The payload envelope: msgpack outside, cloudpickle only where it must be.

Wire format (all msgpack)::

    envelope = [version, body: bytes, signature: bytes | nil]
    task body = {"f": "pkg.mod:func" | Ext(PICKLE), "a": [args...], "k": {kwargs}}
    result body = value

Values are packed with ``strict_types`` so a tuple is kept as a tuple
(``Ext(TUPLE)``) and anything msgpack cannot carry natively becomes
``Ext(PICKLE)`` (cloudpickle). A worker started with ``--no-pickle`` decodes
``Ext(PICKLE)`` into an UnsafePayloadError instead of unpickling it, so the
refusal happens before any untrusted code runs.

With a secret, the body is signed with HMAC-SHA256 and the signature is
checked before the body is unpacked at all.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import importlib
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable

import cloudpickle
import msgpack

from .exceptions import (
    PayloadDecodeError,
    PayloadTooLargeError,
    SerializationError,
    SignatureError,
    UnsafePayloadError,
)

VERSION = 1
EXT_TUPLE = 1
EXT_PICKLE = 2
EXT_REF = 3  # memory:// only: an object kept by reference (ReferenceTable)
# Each tuple level is one nested msgpack call (C stack); bound it well below
# where a deep value would overflow the stack and kill the process.
MAX_TUPLE_DEPTH = 64

_depth = threading.local()


class _Nesting:
    """Counts tuple nesting per thread, for both encoding and decoding."""

    def __enter__(self) -> int:
        level = getattr(_depth, "level", 0) + 1
        _depth.level = level
        return level

    def __exit__(self, *exc: object) -> None:
        _depth.level -= 1


@dataclass(frozen=True)
class Codec:
    """Encodes and decodes envelopes under one security policy."""

    secret: bytes | None = None
    allow_pickle: bool = True
    max_payload_bytes: int | None = None
    # memory:// only (see codec_for): objects of this process, resolved by
    # reference; with by_reference they are also encoded that way (mocks,
    # closures and local state work, as in the seed's in-process manager).
    references: "ReferenceTable | None" = None
    by_reference: bool = False
    # With a secret, signatures cover ``context`` + body: what the envelope is
    # for (payload / result / error), its namespace and task id (and attempt),
    # so an envelope copied into another record or namespace does not verify.
    namespace: str = ""
    context: bytes = b""

    # ---- signature binding (issue 8: replay and splicing) ----------------
    def _bound(self, *parts: object) -> "Codec":
        if not self.secret:
            return self  # nothing is signed: nothing to bind
        return replace(self, context="\x1f".join(map(str, (self.namespace, *parts))).encode())

    def for_payload(self, task_id: str) -> "Codec":
        """The codec for the payload of task ``task_id``. A periodic tick's
        task (``periodic:<name>:<tick>``) carries its schedule's payload, so
        that is bound to the schedule rather than to one tick."""
        if task_id.startswith("periodic:"):
            return self._bound("payload", "periodic", task_id[9:].rpartition(":")[0])
        return self._bound("payload", task_id)

    def for_result(self, task_id: str, attempt: int) -> "Codec":
        """The codec for the result of one attempt (claim) of a task."""
        return self._bound("result", task_id, int(attempt))

    def for_error(self, task_id: str, attempt: int) -> "Codec":
        """The codec for the pickled exception of one attempt of a task."""
        return self._bound("error", task_id, int(attempt))

    def rebind(self, envelope: bytes, to: "Codec") -> bytes:
        """``envelope`` (verified under this codec's binding) signed anew under
        ``to``'s, without unpacking its body: what retry_task does when it
        copies a payload into a new task."""
        if not self.secret:
            return envelope
        return to._seal(self._open(envelope))

    def control_signature(self, action: str, task_id: str) -> str | None:
        """The signature of a control message (hex), None without a secret.
        Workers with a secret act only on signed control messages; anyone
        else who may PUBLISH is ignored (the stored ``cancel_requested`` flag
        still reaches the worker through its lease renewal)."""
        if not self.secret:
            return None
        text = "\x1f".join(("control", self.namespace, action, task_id)).encode()
        return hmac.new(self.secret, text, hashlib.sha256).hexdigest()

    def _mac(self, body: bytes) -> bytes:
        assert self.secret is not None
        return hmac.new(self.secret, self.context + b"\x00" + body, hashlib.sha256).digest()

    # ---- encoding -------------------------------------------------------
    def encode_task(self, func: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        if self.by_reference and self.references is not None:
            ref = self.references.ref
            return self._seal(msgpack.packb(
                {"f": ref(func), "a": [ref(v) for v in args],
                 "k": {k: ref(v) for k, v in kwargs.items()}}, use_bin_type=True))
        body = {"f": self._encode_func(func), "a": list(args), "k": kwargs}
        try:
            try:
                packed = self._pack_strict(body)
            except (OverflowError, ValueError):
                if not self.allow_pickle:
                    raise
                # A part msgpack cannot carry (int over 64 bits, lone
                # surrogate): pickle that part alone. Pickling the whole body
                # would also bury the function's own envelope inside the pickle.
                body["a"] = [self._carry(v) for v in args]
                body["k"] = {k: self._carry(v) for k, v in kwargs.items()}
                packed = self._pack(body)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a __reduce__ may raise anything, SystemExit too
            self._find_culprit(args, kwargs)
            raise SerializationError("args", _describe(exc)) from exc
        return self._seal(packed)

    def encode_result(self, value: Any) -> bytes:
        """Runs on a worker: whatever the result's own code raises (SystemExit
        from a ``__reduce__`` included) becomes a SerializationError, so it
        fails that one task instead of ending the worker."""
        if self.by_reference and self.references is not None:
            return self._seal(msgpack.packb(self.references.ref(value)), part="result")
        if value is None and not self.secret and (
                self.max_payload_bytes is None or self.max_payload_bytes >= len(_NONE_RESULT)):
            return _NONE_RESULT  # what most tasks return; unsigned, it never varies
        try:
            return self._seal(self._pack(value), part="result")
        except SerializationError:
            raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise SerializationError("result", _describe(exc)) from exc

    def task_encoder(self, func: Callable[..., Any] | str) -> "TaskEncoder":
        """``encode_task`` for many tasks of one ``func`` (register_many, and
        register_task's cached options): the function is encoded once and
        each task's envelope is assembled from bytes, byte for byte what
        ``encode_task`` makes. Anything off the plain path (memory://
        references, arguments msgpack cannot carry as they are, a payload
        over the limit) goes through ``encode_task`` itself."""
        return TaskEncoder(self, func)

    def payload_context(self, task_id: str) -> bytes:
        """``for_payload(task_id).context`` without building that Codec."""
        if task_id.startswith("periodic:"):
            parts: tuple[str, ...] = ("payload", "periodic", task_id[9:].rpartition(":")[0])
        else:
            parts = ("payload", task_id)
        return "\x1f".join((self.namespace, *parts)).encode()

    def _encode_func(self, func: Callable[..., Any] | str) -> Any:
        if isinstance(func, str):
            return func
        try:
            return msgpack.ExtType(EXT_PICKLE, cloudpickle.dumps(func))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise SerializationError("func", _describe(exc)) from exc

    def _pack_strict(self, value: Any) -> bytes:
        if not self.allow_pickle:
            # --no-pickle: plain msgpack, tuples become lists (README *Workers*, ``--no-pickle``).
            return msgpack.packb(value, use_bin_type=True)
        return msgpack.packb(value, use_bin_type=True, strict_types=True, default=self._default)

    def _pack(self, value: Any) -> bytes:
        if not self.allow_pickle:
            return self._pack_strict(value)
        try:
            return self._pack_strict(value)
        except (OverflowError, ValueError):
            # e.g. an int beyond 64 bits: let pickle carry the whole value.
            return msgpack.packb(self._default(value), use_bin_type=True)

    def _carry(self, value: Any) -> Any:
        """``value`` itself if msgpack takes it, else its pickle as an Ext."""
        try:
            self._pack_strict(value)
        except (OverflowError, ValueError):
            return msgpack.ExtType(EXT_PICKLE, cloudpickle.dumps(value))
        return value

    def _default(self, obj: Any) -> msgpack.ExtType:
        if isinstance(obj, msgpack.ExtType):
            return obj
        if type(obj) is tuple:
            with _Nesting() as level:
                if level > MAX_TUPLE_DEPTH:
                    raise ValueError(f"tuples nested deeper than {MAX_TUPLE_DEPTH} levels")
                return msgpack.ExtType(EXT_TUPLE, self._pack(list(obj)))
        return msgpack.ExtType(EXT_PICKLE, cloudpickle.dumps(obj))

    def _find_culprit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Re-pack part by part so the error names what cannot be serialized."""
        parts = [(f"args[{i}]", v) for i, v in enumerate(args)]
        parts += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
        for part, value in parts:
            try:
                self._pack(value)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                raise SerializationError(part, _describe(exc)) from exc

    def _seal(self, body: bytes, part: str = "payload") -> bytes:
        sig = self._mac(body) if self.secret else None
        envelope = msgpack.packb([VERSION, body, sig], use_bin_type=True)
        if self.max_payload_bytes is not None and len(envelope) > self.max_payload_bytes:
            raise PayloadTooLargeError(len(envelope), self.max_payload_bytes, part)
        return envelope

    # ---- decoding -------------------------------------------------------
    def decode_task(self, envelope: bytes) -> tuple[Callable[..., Any] | str, list[Any], dict[str, Any]]:
        body = self._unpack(self._open(envelope))
        if not isinstance(body, dict) or "f" not in body:
            raise PayloadDecodeError("task payload has no function")
        func, args, kwargs = body["f"], body.get("a") or [], body.get("k") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise PayloadDecodeError("task payload has malformed arguments")
        if not (isinstance(func, str) or callable(func)):
            raise PayloadDecodeError(f"task payload function is a {type(func).__name__}")
        return func, args, kwargs

    def decode_result(self, envelope: bytes) -> Any:
        return self._unpack(self._open(envelope))

    def preview_result(self, envelope: bytes) -> Any:
        """The result as an operator tool may show it: never unpickled. Each
        pickled part becomes a :class:`Pickled` placeholder (``<pickled, N
        bytes>``), so reading a record from Redis cannot run its code."""
        body = self._open(envelope)
        try:
            return msgpack.unpackb(body, raw=False, ext_hook=_preview_hook, strict_map_key=False)
        except PayloadDecodeError:
            raise
        except Exception as exc:
            raise PayloadDecodeError(f"payload body does not decode: {_describe(exc)}") from exc

    def _open(self, envelope: bytes) -> bytes:
        try:
            outer = msgpack.unpackb(envelope, raw=False)
        except Exception as exc:
            raise PayloadDecodeError(f"payload is not a taskmesh envelope: {exc}") from exc
        if (
            not isinstance(outer, list)
            or len(outer) != 3
            or outer[0] != VERSION
            or not isinstance(outer[1], bytes)
            or not (outer[2] is None or isinstance(outer[2], bytes))
        ):
            raise PayloadDecodeError("payload is not a taskmesh envelope (bad header)")
        body: bytes = outer[1]  # checked to be bytes above
        sig = outer[2]
        if self.secret:
            if sig is None:
                raise SignatureError("payload is not signed but a secret is configured")
            if not hmac.compare_digest(sig, self._mac(body)):
                raise SignatureError("payload signature does not match (tampered, wrong secret, "
                                     "or copied from another task or namespace)")
        return body

    def _unpack(self, body: bytes) -> Any:
        try:
            return msgpack.unpackb(body, raw=False, ext_hook=self._ext_hook, strict_map_key=False)
        except (UnsafePayloadError, SignatureError, PayloadDecodeError, asyncio.CancelledError):
            raise
        except BaseException as exc:  # unpickling may even raise SystemExit
            raise PayloadDecodeError(f"payload body does not decode: {_describe(exc)}") from exc

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            with _Nesting() as level:
                if level > MAX_TUPLE_DEPTH:
                    raise PayloadDecodeError(f"payload nests tuples deeper than {MAX_TUPLE_DEPTH} levels")
                items = self._unpack(data)
            return tuple(items) if self.allow_pickle else list(items)
        if code == EXT_PICKLE:
            if not self.allow_pickle:
                raise UnsafePayloadError("pickled payload refused: worker runs with --no-pickle")
            return cloudpickle.loads(data)
        if code == EXT_REF:
            if self.references is None:
                raise PayloadDecodeError("payload refers to an object of a memory:// process")
            return self.references.resolve(data)
        raise PayloadDecodeError(f"payload uses an unknown msgpack extension type {code}")

    def outcome_codec(self, payload: bytes) -> "Codec":
        """The codec a worker encodes a task's outcome with: by reference when
        the task came by reference (memory://), else serialized; so a
        ``memory://?serialize=1`` task round-trips its result too."""
        if self.references is None:
            return self
        by_reference = False
        try:
            def note(code: int, data: bytes) -> None:
                nonlocal by_reference
                by_reference = by_reference or code == EXT_REF

            msgpack.unpackb(self._open(payload), raw=False, ext_hook=note, strict_map_key=False)
        except Exception:
            pass  # decode_task reports what is wrong with it
        return self if by_reference == self.by_reference else replace(
            self, by_reference=by_reference)


def _bin_header(size: int) -> bytes:
    """msgpack's header of a bin of ``size`` bytes (what packb writes)."""
    if size < 256:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 65536:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


class TaskEncoder:
    """See :meth:`Codec.task_encoder`. The task body is the map
    ``{"f": func, "a": args, "k": kwargs}`` and the envelope ``[VERSION,
    body, signature]``; msgpack writes a map or an array as its header then
    its items in order, so packing the parts apart and joining them gives
    the same bytes as packing the whole."""

    __slots__ = ("codec", "func", "_head", "_plain")

    def __init__(self, codec: Codec, func: Callable[..., Any] | str):
        self.codec = codec
        self.func = func
        # By reference (memory://) or a function that does not pickle: the
        # general path (which also names the culprit).
        self._plain = not (codec.by_reference and codec.references is not None)
        self._head = b""
        if self._plain:
            try:
                self._head = b"\x83\xa1f" + codec._pack_strict(codec._encode_func(func)) + b"\xa1a"
            except (SerializationError, OverflowError, ValueError):
                self._plain = False

    def encode(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        codec = self.codec
        if not self._plain:
            return codec.for_payload(task_id).encode_task(self.func, args, kwargs)
        try:
            body = b"".join((self._head, _EMPTY_LIST if not args else codec._pack_strict(list(args)),
                             b"\xa1k", _EMPTY_MAP if not kwargs else codec._pack_strict(kwargs)))
        except BaseException:  # the general path handles (or explains) it
            return codec.for_payload(task_id).encode_task(self.func, args, kwargs)
        if codec.secret:
            sig = hmac.digest(codec.secret, codec.payload_context(task_id) + b"\x00" + body,
                              "sha256")
            envelope = b"".join((_ENVELOPE_HEAD, _bin_header(len(body)), body, b"\xc4\x20", sig))
        else:
            envelope = b"".join((_ENVELOPE_HEAD, _bin_header(len(body)), body, b"\xc0"))
        limit = codec.max_payload_bytes
        if limit is not None and len(envelope) > limit:
            raise PayloadTooLargeError(len(envelope), limit, "payload")
        return envelope


_EMPTY_LIST = b"\x90"
_ENVELOPE_HEAD = msgpack.packb([VERSION, b"", None])[:2]  # fixarray(3), VERSION
_EMPTY_MAP = b"\x80"


class ReferenceTable:
    """memory://'s objects kept by reference, one table per process. Entries
    live as long as the process, as the seed's in-process manager kept every
    task (a memory:// process is for development and tests). Pickled (a
    process-executor child), it arrives empty: references do not cross
    processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[int, Any] = {}
        self._next = 0

    def ref(self, obj: Any) -> msgpack.ExtType:
        with self._lock:
            self._next += 1
            self._objects[self._next] = obj
            return msgpack.ExtType(EXT_REF, self._next.to_bytes(8, "big"))

    def resolve(self, data: bytes) -> Any:
        try:
            return self._objects[int.from_bytes(data, "big")]
        except KeyError:
            raise PayloadDecodeError("memory:// reference unknown in this process (the "
                                     "process executor needs memory://?serialize=1)") from None

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReferenceTable, ())


MEMORY_REFERENCES = ReferenceTable()


def codec_for(url: str, **options: Any) -> Codec:
    """The Codec for a URL: memory:// keeps callables, arguments, results and
    exceptions by reference (docs/design.md *memory:// by reference*) unless
    ``?serialize=1`` asks for the real round trip; every other URL serializes."""
    from .connection import is_memory, memory_serializes

    if is_memory(url):
        return Codec(references=MEMORY_REFERENCES, by_reference=not memory_serializes(url),
                     **options)
    return Codec(**options)


class Pickled:
    """Stands in for a pickled value that was deliberately not unpickled."""

    __slots__ = ("size", "kind")

    def __init__(self, size: int, kind: str = "pickled"):
        self.size = size
        self.kind = kind

    def __repr__(self) -> str:
        if self.kind != "pickled":
            return f"<{self.kind}>"
        return f"<pickled, {self.size} bytes>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pickled) and other.size == self.size

    def __hash__(self) -> int:
        return hash(("Pickled", self.size))


def _preview_hook(code: int, data: bytes) -> Any:
    if code == EXT_TUPLE:
        with _Nesting() as level:
            if level > MAX_TUPLE_DEPTH:
                raise PayloadDecodeError(f"payload nests tuples deeper than {MAX_TUPLE_DEPTH} levels")
            return tuple(msgpack.unpackb(data, raw=False, ext_hook=_preview_hook,
                                         strict_map_key=False))
    if code == EXT_PICKLE:
        return Pickled(len(data))
    if code == EXT_REF:
        return Pickled(len(data), "memory:// object")
    raise PayloadDecodeError(f"payload uses an unknown msgpack extension type {code}")


# encode_result(None) of a codec without a secret: [VERSION, packb(None), None].
_NONE_RESULT: bytes = msgpack.packb([VERSION, msgpack.packb(None), None], use_bin_type=True)


@functools.lru_cache(maxsize=1024)
def resolve_import(path: str) -> Callable[..., Any]:
    """Resolve ``"package.module:function"`` (or ``module:Class.attr``).
    Cached: a worker resolves the same few strings for every task (failures
    raise and are not cached)."""
    module_name, sep, attr_path = path.partition(":")
    if not sep:
        module_name, _, attr_path = path.rpartition(".")
    if not module_name or not attr_path:
        raise ImportError(f"{path!r} is not an import string like 'package.module:function'")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise TypeError(f"{path!r} resolves to a {type(obj).__name__}, not a callable")
    func: Callable[..., Any] = obj
    return func


def _describe(exc: BaseException) -> str:
    """``Type: message`` even for an exception whose ``__str__`` raises."""
    return f"{type(exc).__name__}: {safe_str(exc)}"


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's own ``__str__``
    raises (SystemExit included): describing an error must never fail."""
    try:
        return str(exc)
    except BaseException:
        return f"<unprintable {type(exc).__name__}>"
