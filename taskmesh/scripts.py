"""Loads the Lua scripts in ``lua/`` and runs them on sync or async clients.

Each script is the prelude plus its own file, sent once per connection pool
with SCRIPT LOAD and then called by EVALSHA (SHA computed locally, as
redis-py's ``register_script`` does). A NOSCRIPT reply (Redis restarted, or
flushed its script cache) reloads and retries; that is safe because a script
that answered NOSCRIPT did not run.

A :class:`Call` is a script invocation plus the function that parses its
reply. The same Call object is executed by :func:`run` (sync client),
:func:`arun` (asyncio client) or in a batch through a pipeline, so every
rule is written once and sent either way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).with_name("lua")
T = TypeVar("T")


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@cache
def script(name: str) -> LuaScript:
    prelude = (LUA_DIR / "prelude.lua").read_text()
    body = (LUA_DIR / f"{name}.lua").read_text()
    return LuaScript(name, f"{prelude}\n-- ===== {name}.lua =====\n{body}")


def _identity(raw: Any) -> Any:
    return raw


@dataclass(frozen=True)
class Call(Generic[T]):
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]
    parse: Callable[[Any], T] = _identity

    @property
    def evalsha_args(self) -> tuple:
        return (self.script.sha, len(self.keys), *self.keys, *self.args)


@dataclass(frozen=True)
class Cmd(Generic[T]):
    """A plain Redis command with its reply parser (reads, mostly)."""

    args: Sequence[Any]
    parse: Callable[[Any], T] = _identity


def run(client: Any, call: "Call[T] | Cmd[T]") -> T:
    if isinstance(call, Cmd):
        return call.parse(client.execute_command(*call.args))
    try:
        raw = client.evalsha(*call.evalsha_args)
    except NoScriptError:
        client.script_load(call.script.source)
        raw = client.evalsha(*call.evalsha_args)
    return call.parse(raw)


async def arun(client: Any, call: "Call[T] | Cmd[T]") -> T:
    if isinstance(call, Cmd):
        return call.parse(await client.execute_command(*call.args))
    try:
        raw = await client.evalsha(*call.evalsha_args)
    except NoScriptError:
        await client.script_load(call.script.source)
        raw = await client.evalsha(*call.evalsha_args)
    return call.parse(raw)


def run_batch(client: Any, calls: Sequence[Call]) -> list[Any]:
    """Pipelined (non-transactional): each script is atomic on its own."""
    if not calls:
        return []
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(*call.evalsha_args)
    raws = pipe.execute(raise_on_error=False)
    return [_settle(client, call, raw) for call, raw in zip(calls, raws)]


async def arun_batch(client: Any, calls: Sequence[Call]) -> list[Any]:
    if not calls:
        return []
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(*call.evalsha_args)
    raws = await pipe.execute(raise_on_error=False)
    out = []
    for call, raw in zip(calls, raws):
        if isinstance(raw, NoScriptError):
            raw = await arun(client, call)
            out.append(raw)
        else:
            out.append(raw if isinstance(raw, Exception) else call.parse(raw))
    return out


def _settle(client: Any, call: Call, raw: Any) -> Any:
    if isinstance(raw, NoScriptError):
        return run(client, call)
    return raw if isinstance(raw, Exception) else call.parse(raw)
