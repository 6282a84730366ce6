"""Display strings for stored payloads, made without ever unpickling.

The dashboard shows a task's function, arguments and result, but it serves
whoever can reach it, and a pickle is code: ``pickle.loads`` on a crafted
argument runs whatever its ``__reduce__`` names. So this module reads the
envelope of :mod:`taskmesh.serialization` itself:

- the outer ``[version, body, signature]`` and the msgpack body are unpacked
  with an ``ext_hook`` that never calls pickle: ``Ext(TUPLE)`` is unpacked
  the same way recursively, ``Ext(PICKLE)`` becomes a :class:`Pickled`
  placeholder that renders as ``<pickled, N bytes>`` (N = the pickle's length);
- a pickled *function* is recognised by walking its opcodes with
  :func:`pickletools.genops`, which parses and never executes. A function
  pickled by reference is one ``STACK_GLOBAL`` (module and name are right
  there); cloudpickle's by-value functions carry ``__qualname__`` and
  ``__module__`` in their state dict. When neither is readable it shows as
  ``<pickled function, N bytes>``.

The signature is not checked: nothing here is executed or trusted, it is only
printed (the worker checks signatures before it runs anything).
"""

from __future__ import annotations

import pickletools
import reprlib
from dataclasses import dataclass
from typing import Any

import msgpack

from ..serialization import EXT_PICKLE, EXT_TUPLE, MAX_TUPLE_DEPTH, VERSION

MAX_DISPLAY_CHARS = 4000
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_FUNCTION_MAKERS = frozenset({"_make_function", "_make_skel_func", "_create_function"})


@dataclass(frozen=True)
class Pickled:
    """A value that only a pickle could carry, described by its opcodes."""

    size: int
    function_name: str | None = None
    is_function: bool = False

    def __repr__(self) -> str:
        if self.function_name:
            return self.function_name
        if self.is_function:
            return f"<pickled function, {self.size} bytes>"
        return f"<pickled, {self.size} bytes>"


class Undecodable:
    """Stands in for a payload that is not a taskmesh envelope."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"<undecodable: {self.reason}>"


def describe_pickle(data: bytes) -> Pickled:
    """Reads what a pickle is without loading it (see module docstring)."""
    memo: dict[int, Any] = {}
    ops: list[tuple[str, Any]] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            ops.append((opcode.name, arg))
    except Exception:
        return Pickled(len(data))
    strings: list[str | None] = []  # each op's string value (resolving memo gets), else None
    last: Any = None
    for name, arg in ops:
        value: str | None = None
        if name in _STRING_OPS:
            value = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else arg
        elif name in _GET_OPS:
            got = memo.get(arg)
            value = got if isinstance(got, str) else None
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in _PUT_OPS:
            memo[arg] = last
        if name not in ("MEMOIZE", *_PUT_OPS):
            last = value
        strings.append(value)
    names = [name for name, _ in ops if name not in ("PROTO", "FRAME", "MEMOIZE", *_PUT_OPS)]
    texts = [s for s in strings if s is not None]
    # By reference: the whole pickle is one global (protocol 4+: two strings
    # and STACK_GLOBAL; older protocols: GLOBAL "module name").
    if names == ["SHORT_BINUNICODE", "SHORT_BINUNICODE", "STACK_GLOBAL", "STOP"]:
        return Pickled(len(data), f"{texts[0]}.{texts[1]}", True)
    if names == ["GLOBAL", "STOP"]:
        module, _, qualname = str(next(a for n, a in ops if n == "GLOBAL")).partition(" ")
        return Pickled(len(data), f"{module}.{qualname}", True)
    if not any(t in _FUNCTION_MAKERS for t in texts):
        return Pickled(len(data))
    # In the state dict a key's value is the very next value-producing op.
    values = [v for (name, _), v in zip(ops, strings)
              if name not in ("MEMOIZE", "FRAME", *_PUT_OPS)]
    found: dict[str, str] = {}
    for key, value in zip(values, values[1:]):
        if key in ("__qualname__", "__module__") and key not in found and value is not None:
            found[key] = value
    qual = found.get("__qualname__")
    if qual is None:
        return Pickled(len(data), None, True)
    owner = found.get("__module__")
    return Pickled(len(data), f"{owner}.{qual}" if owner else qual, True)


def _ext_hook(depth: int) -> Any:
    def hook(code: int, data: bytes) -> Any:
        if code == EXT_PICKLE:
            return describe_pickle(data)
        if code == EXT_TUPLE and depth < MAX_TUPLE_DEPTH:
            items = _unpack(data, depth + 1)
            return tuple(items) if isinstance(items, list) else items
        return Undecodable(f"msgpack extension {code}")
    return hook


def _unpack(body: bytes, depth: int = 0) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_ext_hook(depth))
    except Exception as exc:
        return Undecodable(type(exc).__name__)


def open_envelope(envelope: bytes | None) -> Any:
    """The body of an envelope, decoded for display; None if there is none."""
    if not envelope:
        return None
    try:
        outer = msgpack.unpackb(envelope, raw=False)
    except Exception:
        return Undecodable("not a taskmesh envelope")
    if not (isinstance(outer, list) and len(outer) == 3 and outer[0] == VERSION
            and isinstance(outer[1], bytes)):
        return Undecodable("not a taskmesh envelope")
    return _unpack(outer[1])


_repr = reprlib.Repr()
_repr.maxstring = 500
_repr.maxother = 500
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 50
_repr.maxlevel = 8


def show(value: Any) -> str:
    """``repr`` of a decoded value, bounded in size (placeholders render as
    themselves)."""
    text = _repr.repr(value)
    return text if len(text) <= MAX_DISPLAY_CHARS else text[:MAX_DISPLAY_CHARS] + "…"


@dataclass(frozen=True)
class PayloadView:
    func: str | None
    args: str | None
    kwargs: str | None


def payload_view(envelope: bytes | None) -> PayloadView:
    """Function, args and kwargs of a task payload as display strings. None
    where the record no longer holds a payload."""
    body = open_envelope(envelope)
    if body is None:
        return PayloadView(None, None, None)
    if isinstance(body, Pickled):  # the whole body went through pickle (e.g. a huge int)
        text = repr(Pickled(body.size))
        return PayloadView(text, text, text)
    if not isinstance(body, dict) or "f" not in body:
        text = repr(body) if isinstance(body, Undecodable) else "<undecodable: no function>"
        return PayloadView(text, text, text)
    func = body["f"]
    if isinstance(func, Pickled):
        func = Pickled(func.size, func.function_name, True)
    args = body.get("a") or []
    return PayloadView(
        func if isinstance(func, str) else repr(func),
        show(tuple(args) if isinstance(args, list) else args),
        show(body.get("k") or {}),
    )


def result_view(envelope: bytes | None) -> str | None:
    if not envelope:
        return None
    return show(open_envelope(envelope))
