"""Loads the Lua scripts in ``lua/`` and runs them on sync or async clients.

Each script is the shared libraries (prelude, flow) plus its own file (and
the files it INCLUDES, as functions), sent
once per connection pool with SCRIPT LOAD and then called by EVALSHA (SHA
computed locally, as redis-py's ``register_script`` does). A NOSCRIPT reply
(Redis restarted, or flushed its script cache) reloads and retries; that is
safe because a script that answered NOSCRIPT did not run.

A :class:`Call` is a script invocation plus the function that parses its
reply. The same Call object is executed by :func:`run` (sync client),
:func:`arun` (asyncio client) or in a batch through a pipeline, so every
rule is written once and sent either way.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .exceptions import ServerBusyError

try:  # a dependency of taskmesh; without it _direct takes the regular path
    import hiredis as _hiredis
    from redis._parsers import BaseParser as _BaseParser
except ImportError:  # pragma: no cover
    _hiredis = None  # type: ignore[assignment]

LUA_DIR = Path(__file__).with_name("lua")
LIBRARIES = ("prelude", "flow")  # prepended to every script, in this order
T = TypeVar("T")


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# A script that runs another script's body once per item: report_many.lua
# calls report.lua's body as `report(KEYS, ARGV)` (register_many.lua,
# register.lua's as `register(KEYS, ARGV)`), the parameters shadowing the
# globals, so report.lua stays the one implementation of a report.
INCLUDES: dict[str, tuple[str, ...]] = {"report_many": ("report",), "register_many": ("register",)}


@cache
def script(name: str) -> LuaScript:
    parts = []
    for inner in INCLUDES.get(name, ()):
        body = (LUA_DIR / f"{inner}.lua").read_text()
        parts.append(f"-- ===== {inner}.lua, as a function =====\n"
                     f"local function {inner}(KEYS, ARGV)\n{body}\nend")
    body = (LUA_DIR / f"{name}.lua").read_text()
    parts.append(f"-- ===== {name}.lua =====\n{body}")
    return LuaScript(name, "\n".join([library_for("\n".join(parts), COLD.get(name)), *parts]))


# The libraries are sent with every script, and Redis runs them at every
# call: each `local function` is a closure made anew, which cost about a
# quarter of a registration's Lua time. So a script carries only the
# top-level statements it reaches (what its code names, transitively), in
# their original order. The libraries' top level is nothing but `local`
# statements (tests/test_scripts.py checks it), so a statement is the text
# from one column-0 `local` to the next; naming is judged by identifiers in
# comment-free code, which can only keep too much, never too little.
_STATEMENT = re.compile(r"^local\s", re.M)
_DEFINES = re.compile(r"^local\s+(?:function\s+(\w+)|([\w\s,]+?)\s*(?:=|$))", re.M)
_IDENT = re.compile(r"[A-Za-z_]\w*")


def _names(code: str) -> set[str]:
    return set(_IDENT.findall(re.sub(r"--[^\n]*", "", code)))


@cache
def _statements() -> tuple[tuple[frozenset[str], frozenset[str], str], ...]:
    """(names defined, names used, text) of each top-level statement of the
    libraries, in order."""
    text = "\n".join((LUA_DIR / f"{lib}.lua").read_text() for lib in LIBRARIES)
    starts = [m.start() for m in _STATEMENT.finditer(text)] + [len(text)]
    out = []
    for start, end in zip(starts, starts[1:]):
        chunk = text[start:end]
        m = _DEFINES.match(re.sub(r"--[^\n]*", "", chunk))
        assert m, chunk[:80]
        defined = {m.group(1)} if m.group(1) else {n.strip() for n in m.group(2).split(",")}
        out.append((frozenset(defined), frozenset(_names(chunk) - defined), chunk))
    return tuple(out)


def _reached(wanted: set[str], blocked: frozenset[str] = frozenset()) -> list[bool]:
    """Which library statements ``wanted`` names reach (transitively), not
    following the names in ``blocked``."""
    statements = _statements()
    wanted = set(wanted) - blocked
    keep = [False] * len(statements)
    changed = True
    while changed:
        changed = False
        for i, (defined, used, _) in enumerate(statements):
            if not keep[i] and defined & wanted:
                keep[i], changed = True, True
                wanted |= used - blocked
    return keep


# A claim continues the dependency resolutions left on the `resolve` list
# (resolve() in the prelude), which reaches half the library (mark_terminal,
# release, ...): ~50k instructions of closures made at every call, for a
# list that is almost always empty. So the statements a script reaches only
# through such a cold name are made only when a guard (a prelude local,
# computed first) says they can run: script -> (cold name, guard).
COLD: dict[str, tuple[str, str]] = {"claim": ("resolve", "_resolve_owed")}

_LOCAL_FUNCTION = re.compile(r"^local function (\w+)\(", re.M)
_LOCAL_ASSIGN = re.compile(r"^local ([\w\s,]+?)\s*=", re.M)


def cold_form(text: str, guard: str) -> str:
    """A library statement as an assignment made only when ``guard`` holds
    (its names are declared as locals before the first such statement)."""
    body = _LOCAL_FUNCTION.sub(r"\1 = function(", text, count=1)
    if body == text:
        body = _LOCAL_ASSIGN.sub(r"\1 =", text, count=1)
    return f"if {guard} then\n{body.rstrip()}\nend\n"


def library_for(code: str, cold: tuple[str, str] | None = None) -> str:
    """The libraries' statements that ``code`` reaches, in their order; with
    ``cold`` = (name, guard), those reached only through that name in
    their cold_form."""
    statements = _statements()
    keep = _reached(_names(code))
    if cold is None:
        return "".join(text for (_, _, text), kept in zip(statements, keep) if kept)
    name, guard = cold
    assert name not in _names(code), cold  # the script itself calls it: not cold
    hot = _reached(_names(code) | {guard}, frozenset({name}))
    cold_names = set().union(*(d for (d, _, _), k, h in zip(statements, keep, hot) if k and not h))
    guard_at = [guard in d for d, _, _ in statements].index(True)
    # The guard's statement (the prelude's first ones) comes before every
    # statement that makes a cold name, and the cold names are declared
    # right after it, so every later statement sees them as locals.
    assert not any(cold_names & d for d, _, _ in statements[:guard_at + 1]), cold
    parts: list[str] = []
    for i, ((_, _, text), kept, is_hot) in enumerate(zip(statements, keep, hot)):
        if is_hot:
            parts.append(text)
        elif kept:
            parts.append(cold_form(text, guard))
        if i == guard_at and cold_names:
            parts.append(f"local {', '.join(sorted(cold_names))}\n")
    return "".join(parts)


def _identity(raw: Any) -> Any:
    return raw


@dataclass(frozen=True)
class Call(Generic[T]):
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]
    parse: Callable[[Any], T] = _identity

    @property
    def evalsha_args(self) -> tuple[Any, ...]:
        return (self.script.sha, len(self.keys), *self.keys, *self.args)


@dataclass(frozen=True)
class Cmd(Generic[T]):
    """A plain Redis command with its reply parser (reads, mostly)."""

    args: Sequence[Any]
    parse: Callable[[Any], T] = _identity


def busy_error(exc: BaseException) -> ServerBusyError | None:
    """The ServerBusyError for an OOM or BUSY reply, else None. Both are
    transient server states, told apart from real script errors here once."""
    if isinstance(exc, ServerBusyError):
        return exc
    if isinstance(exc, OutOfMemoryError):
        return ServerBusyError("oom", str(exc))
    if isinstance(exc, ResponseError):
        # A pipeline prefixes the reply: "Command # 1 (TIME) of pipeline caused error: BUSY ..."
        text = str(exc).rpartition("caused error: ")[2]
        if text.startswith("OOM "):
            return ServerBusyError("oom", text)
        if text.startswith("BUSY"):
            return ServerBusyError("busy", text)
    return None


def raise_if_busy(exc: BaseException) -> None:
    """Raise the ServerBusyError standing for ``exc`` (its cause), if it is
    an OOM or BUSY reply; otherwise return so the caller re-raises ``exc``
    unchanged (not as its own cause)."""
    busy = busy_error(exc)
    if busy is not None and busy is not exc:
        raise busy from exc


def _direct(client: Any, call: "Call[T]") -> tuple[bool, Any]:
    """One EVALSHA on a plain client's own connection, without the client's
    per-command layers (retry wrapper, metrics hooks, the pool's checkout):
    most of a single register_task's client CPU once its Python is cheap.
    (False, None) when the regular path must run instead: another kind of
    client, a NOSCRIPT reply (the regular path loads the script), or a
    connection that failed in use (the regular path retries; scripts resent
    after a lost reply are fenced or answer 'exists'). A connection that
    cannot be made raises, its retries spent."""
    lane = getattr(client, "_taskmesh_lane", None)
    if lane is None:
        lane = _Lane.for_client(client)
    if not lane:  # (False: a client the lane does not serve)
        return False, None
    return lane.evalsha(call.evalsha_args)


class _Lane:
    """Connections of a plain client's pool kept aside for :func:`_direct`
    (made by the pool's connection class with its options, so AUTH, TLS,
    SELECT and the client name go as on any connection), each with its own
    hiredis reader. An idle list rather than the pool: a pop and an append
    (atomic under the GIL, so threads share it) instead of the pool's lock
    and bookkeeping. After a fork the parent's connections are dropped, never
    used (``close_lane`` closes them in their own process)."""

    def __init__(self, pool: Any):
        self.pool = pool
        self.idle: list[tuple[Any, Any]] = []
        self.pid = os.getpid()

    @classmethod
    def for_client(cls, client: Any) -> "_Lane | False":  # type: ignore[valid-type]
        pool = getattr(client, "connection_pool", None)
        ok = (type(client) is redis.Redis and type(pool) is redis.ConnectionPool
              and _hiredis is not None
              and not pool.connection_kwargs.get("decode_responses")
              and pool.connection_kwargs.get("protocol") in (None, 2, "2"))
        lane: _Lane | bool = cls(pool) if ok else False
        try:
            client._taskmesh_lane = lane
        except AttributeError:
            return False
        return lane if isinstance(lane, _Lane) else False

    def _take(self) -> tuple[Any, Any]:
        """A connected connection and its reader (connecting raises as the
        pool's would: refused, or wrong credentials)."""
        if self.pid != os.getpid():
            self.idle, self.pid = [], os.getpid()
        try:
            conn, reader = self.idle.pop()
        except IndexError:
            conn, reader = self.pool.connection_class(**self.pool.connection_kwargs), None
        if conn._sock is None or reader is None:
            try:
                conn.connect()
            except BaseException:
                conn.disconnect()
                raise
            reader = _hiredis.Reader(replyError=_parse_error)
        return conn, reader

    @staticmethod
    def _send(conn: Any, args: tuple[Any, ...]) -> None:
        try:
            packed = _hiredis.pack_command(("EVALSHA", *args))
        except TypeError:  # an argument hiredis does not take: redis-py explains it
            packed = b"".join(conn.pack_command("EVALSHA", *args))
        conn._sock.sendall(packed)

    @staticmethod
    def _read(conn: Any, reader: Any) -> Any:
        reply = reader.gets()
        while reply is False:
            data = conn._sock.recv(65536)
            if not data:
                raise RedisConnectionError("Connection closed by server.")
            reader.feed(data)
            reply = reader.gets()
        return reply

    def evalsha(self, args: tuple[Any, ...]) -> tuple[bool, Any]:
        # A connect that fails here has had the pool's retries already (the
        # connection runs them): it raises, rather than the regular path
        # running them a second time (a stopped Redis reported in 1.4 s, not 0.7).
        conn, reader = self._take()
        try:
            self._send(conn, args)
            reply = self._read(conn, reader)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            conn.disconnect()
            return False, None
        except BaseException:  # a half-read reply must never be read as the next one's
            conn.disconnect()
            raise
        self.idle.append((conn, reader))
        if isinstance(reply, NoScriptError):
            return False, None
        if isinstance(reply, ResponseError):
            raise_if_busy(reply)
            raise reply
        return True, reply

    def stream(self, client: Any, calls: Iterable["Call[Any]"], window: int) -> list[Any]:
        """:func:`run_pipelined` on one connection: each call is sent as soon
        as it is built, with up to ``window`` replies outstanding. Calls not
        answered (a lost connection) and those that answered NOSCRIPT go
        again through :func:`run_batch` (which reconnects, retries and loads
        scripts); a registration sent twice answers 'exists'."""
        pending = iter(calls)
        sent: list[Call[Any]] = []
        raws: list[Any] = []
        conn, reader = self._take()  # raises after the pool's retries, as in evalsha
        try:
            for call in pending:
                sent.append(call)  # before sending: a call whose send fails goes again
                self._send(conn, call.evalsha_args)
                if len(sent) - len(raws) > window:
                    raws.append(self._read(conn, reader))
            while len(raws) < len(sent):
                raws.append(self._read(conn, reader))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            conn.disconnect()
            rest = sent[len(raws):] + list(pending)
            return [_parse(c, raw) for c, raw in zip(sent, raws)] + run_batch(client, rest)
        except BaseException:
            conn.disconnect()
            raise
        self.idle.append((conn, reader))
        missing = [i for i, raw in enumerate(raws) if isinstance(raw, NoScriptError)]
        out = [_parse(c, raw) for c, raw in zip(sent, raws)]
        if missing:
            for i, result in zip(missing, run_batch(client, [sent[i] for i in missing])):
                out[i] = result
        return out

    def close(self) -> None:
        idle, self.idle = self.idle, []
        if self.pid == os.getpid():
            for conn, _ in idle:
                conn.disconnect()


def close_lane(client: Any) -> None:
    """Closes the connections :func:`_direct` kept aside for ``client``."""
    lane = getattr(client, "_taskmesh_lane", None)
    if isinstance(lane, _Lane):
        lane.close()


def _parse_error(message: str) -> ResponseError:
    """The redis-py exception of an error reply (NoScriptError, OOM, ...)."""
    error: ResponseError = _BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


def run(client: Any, call: "Call[T] | Cmd[T]") -> T:
    if not isinstance(call, Cmd):
        done, raw = _direct(client, call)
        if done:
            return call.parse(raw)
    try:
        if isinstance(call, Cmd):
            return call.parse(client.execute_command(*call.args))
        try:
            raw = client.evalsha(*call.evalsha_args)
        except NoScriptError:
            client.script_load(call.script.source)
            raw = client.evalsha(*call.evalsha_args)
    except ResponseError as exc:
        raise_if_busy(exc)
        raise
    return call.parse(raw)


async def arun(client: Any, call: "Call[T] | Cmd[T]") -> T:
    try:
        if isinstance(call, Cmd):
            return call.parse(await client.execute_command(*call.args))
        try:
            raw = await client.evalsha(*call.evalsha_args)
        except NoScriptError:
            await client.script_load(call.script.source)
            raw = await client.evalsha(*call.evalsha_args)
    except ResponseError as exc:
        raise_if_busy(exc)
        raise
    return call.parse(raw)


def run_atomic(client: Any, cmds: Sequence[Cmd[Any]]) -> list[Any]:
    """Plain commands as one MULTI/EXEC: for blind multi-key writes."""
    pipe = client.pipeline(transaction=True)
    for cmd in cmds:
        pipe.execute_command(*cmd.args)
    return [cmd.parse(raw) for cmd, raw in zip(cmds, pipe.execute())]


async def arun_atomic(client: Any, cmds: Sequence[Cmd[Any]]) -> list[Any]:
    """Plain commands as one MULTI/EXEC: for blind multi-key writes."""
    pipe = client.pipeline(transaction=True)
    for cmd in cmds:
        pipe.execute_command(*cmd.args)
    try:
        raws = await pipe.execute()
    except ResponseError as exc:
        raise_if_busy(exc)
        raise
    return [cmd.parse(raw) for cmd, raw in zip(cmds, raws)]


def run_pipelined(client: Any, calls: Iterable[Call[Any]], window: int = 8) -> list[Any]:
    """:func:`run_batch`'s results for calls built lazily: on a plain Redis
    client each is sent as soon as the iterator yields it, so building the
    next overlaps Redis running the last (register_many)."""
    lane = getattr(client, "_taskmesh_lane", None)
    if lane is None:
        lane = _Lane.for_client(client)
    if not lane:
        return run_batch(client, list(calls))
    return lane.stream(client, calls, window)


def run_batch(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    """Pipelined (non-transactional): each script is atomic on its own. After
    a NOSCRIPT (first use, or Redis restarted) the scripts are loaded once and
    only the calls that answered NOSCRIPT are sent again, still pipelined."""
    raws = _pipeline(client, calls)
    missing = [i for i, raw in enumerate(raws) if isinstance(raw, NoScriptError)]
    if missing:
        for source in {calls[i].script.source for i in missing}:
            client.script_load(source)
        for i, raw in zip(missing, _pipeline(client, [calls[i] for i in missing])):
            raws[i] = raw
    return [_parse(call, raw) for call, raw in zip(calls, raws)]


async def arun_batch(client: Any, calls: Sequence[Call[Any]]) -> list[Any]:
    raws = await _pipeline(client, calls)
    missing = [i for i, raw in enumerate(raws) if isinstance(raw, NoScriptError)]
    if missing:
        for source in {calls[i].script.source for i in missing}:
            await client.script_load(source)
        for i, raw in zip(missing, await _pipeline(client, [calls[i] for i in missing])):
            raws[i] = raw
    return [_parse(call, raw) for call, raw in zip(calls, raws)]


def _pipeline(client: Any, calls: Sequence[Call[Any]]) -> Any:
    """Queues the calls on a pipeline; returns its execute() (awaitable on an
    asyncio client) with errors returned in place rather than raised."""
    pipe = client.pipeline(transaction=False)
    for call in calls:
        # execute_command, not pipe.evalsha(): redis-py's cluster pipeline
        # refuses the evalsha() method but routes the command by its keys.
        pipe.execute_command("EVALSHA", *call.evalsha_args)
    return pipe.execute(raise_on_error=False)


def _parse(call: Call[Any], raw: Any) -> Any:
    if isinstance(raw, Exception):
        return busy_error(raw) or raw
    return call.parse(raw)
