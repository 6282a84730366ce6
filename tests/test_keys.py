"""The key schema: one prefix per namespace, one Cluster slot, and the Lua
prelude builds exactly the keys ``taskmesh.keys.Keys`` builds."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import pytest
from redis.crc import key_slot

from taskmesh.keys import Keys, validate_namespace, validate_queue_name
from taskmesh.models import TaskStatus

PRELUDE = Path(__file__).resolve().parent.parent / "taskmesh" / "lua" / "prelude.lua"

# Lua names whose Keys counterpart is not simply the lower-cased suffix
LUA_ALIASES = {"K_CONTROL": "control_channel"}
NAMESPACES = ["default", "prod-eu", "ns_1", "ünï"]
ARGUMENTS = ["abc123", "a-b.c_d", "queue name?", "x" * 64, "1700000000"]


def _is_property(name: str) -> bool:
    return isinstance(getattr(Keys, name), property)


def _builders() -> list[str]:
    return sorted(n for n in dir(Keys) if not n.startswith("_") and n not in ("namespace", "prefix", "shard_tag"))


def _all_keys(keys: Keys) -> list[str]:
    """Every key Keys can build (properties, and methods over sample arguments)."""
    built = []
    for name in _builders():
        if _is_property(name):
            built.append(getattr(keys, name))
        else:
            built += [getattr(keys, name)(arg) for arg in ARGUMENTS]
    built += [keys.done(s) for s in TaskStatus]
    return built


def _prelude_names() -> tuple[list[str], list[str]]:
    text = PRELUDE.read_text()
    functions = sorted(set(re.findall(r"local function (k_\w+)\(", text)))
    constants = sorted(set(re.findall(r"local (K_\w+)\s*=\s*PREFIX", text)))
    return functions, constants


def _keys_attr(lua_name: str) -> str:
    return LUA_ALIASES.get(lua_name, lua_name[2:].lower())


@pytest.mark.parametrize("ns", NAMESPACES)
def test_every_key_starts_with_the_namespace_prefix(ns):
    keys = Keys(ns)
    prefix = f"taskmesh:{{{ns}}}:"
    assert keys.prefix == prefix
    for key in _all_keys(keys):
        assert key.startswith(prefix), key
        assert len(key) > len(prefix)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_every_key_of_a_namespace_is_in_one_cluster_slot(ns):
    keys = Keys(ns)
    slots = {key_slot(key.encode()) for key in _all_keys(keys)}
    assert slots == {key_slot(ns.encode())}


def test_distinct_kinds_do_not_collide():
    """Different builders never produce the same key for the same argument
    (``events`` is both the stream and the pub/sub channel; channels live
    apart from keys, so that is no collision)."""
    keys = Keys("ns")
    seen: dict[str, str] = {}
    for name in _builders():
        if name in ("events_channel", "control_channel", "done_channel"):
            continue  # pub/sub channels, not keys
        key = getattr(keys, name) if _is_property(name) else getattr(keys, name)("x")
        assert key not in seen, f"{name} and {seen.get(key)} both build {key}"
        seen[key] = name


def test_every_prelude_key_has_a_keys_builder():
    functions, constants = _prelude_names()
    assert {"k_task", "k_queue", "k_done_channel", "k_periodic_schedule"} <= set(functions)
    assert {"K_RUNNING", "K_EVENTS", "K_CONTROL", "K_PERIODIC"} <= set(constants)
    for name in functions:
        attr = _keys_attr(name)
        assert hasattr(Keys, attr) and not _is_property(attr), f"{name}: no Keys.{attr}()"
    for name in constants:
        attr = _keys_attr(name)
        assert hasattr(Keys, attr) and _is_property(attr), f"{name}: no Keys.{attr} property"


def _lua_probe() -> str:
    """prelude.lua + a return of every key it builds, in a fixed order."""
    functions, constants = _prelude_names()
    parts = [f"{name}(ARGV[2])" for name in functions] + constants
    return PRELUDE.read_text() + "\nreturn {" + ", ".join(parts) + "}\n"


def _expected(keys: Keys, arg: str) -> list[str]:
    functions, constants = _prelude_names()
    return ([getattr(keys, _keys_attr(n))(arg) for n in functions]
            + [getattr(keys, _keys_attr(n)) for n in constants])


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("arg", ARGUMENTS + ["completed"])
def test_lua_prelude_builds_the_same_keys_fakeredis(ns, arg):
    keys = Keys(ns)
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    got = client.eval(_lua_probe(), 0, keys.prefix, arg)
    assert [g.decode() for g in got] == _expected(keys, arg)


def test_lua_prelude_builds_the_same_keys_real_redis(redis_server):
    client = redis_server.client()
    try:
        for ns in NAMESPACES:
            keys = Keys(ns)
            for arg in ARGUMENTS:
                got = client.eval(_lua_probe(), 0, keys.prefix, arg)
                assert [g.decode() for g in got] == _expected(keys, arg)
    finally:
        client.close()


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("count", [2, 3, 7, 64])
def test_each_shard_is_one_slot_and_the_shards_spread_evenly(ns, count):
    from taskmesh.sharding import ShardSet

    shardset = ShardSet(ns, count)
    assert shardset.keys[0] == Keys(ns)  # shard 0 is the unsharded namespace
    slots = []
    for keys in shardset.keys:
        built = {key_slot(key.encode()) for key in _all_keys(keys)}
        assert len(built) == 1
        slots.append(built.pop())
    windows = [slot * count // 16384 for slot in slots]  # one of count equal windows each
    assert sorted(windows) == list(range(count))
    assert windows == [(windows[0] + i) % count for i in range(count)]


@pytest.mark.parametrize("bad", ["", "a:b", "a{b", "a}b", "a b", "a\nb"])
def test_bad_namespace_rejected(bad):
    with pytest.raises(ValueError):
        validate_namespace(bad)


@pytest.mark.parametrize("bad", ["", "a,b", "a{b", "a b"])
def test_bad_queue_name_rejected(bad):
    with pytest.raises(ValueError):
        validate_queue_name(bad)


LUA_DIR = PRELUDE.parent


def test_prelude_queue_score_span_is_the_python_one():
    """The queue-score formula is written once per language: prelude.lua's
    queue_score and keys.queue_band must agree on the band width."""
    from taskmesh.keys import PRIORITY_SPAN, band_rank, queue_band

    text = PRELUDE.read_text()
    span = re.search(r"local PRIORITY_SPAN = (\d+)", text)
    assert span and int(span.group(1)) == PRIORITY_SPAN == 2 ** 44
    assert "* PRIORITY_SPAN + tonumber(seq)" in text
    assert queue_band(255) == (0, PRIORITY_SPAN)
    low, high = queue_band(5)
    assert band_rank(low) == band_rank(high - 1) == 250 and band_rank(high) == 251  # priority 4
    # flow.lua and the scripts use prelude's constant rather than their own.
    others = [f.name for f in LUA_DIR.glob("*.lua")
              if f != PRELUDE and re.search(r"local PRIORITY_SPAN\b|17592186044416", f.read_text())]
    assert others == []


def test_terminal_statuses_are_one_list_per_language():
    from taskmesh.models import TERMINAL_ORDER, TERMINAL_STATUSES

    listed = re.search(r"local TERMINAL = \{([^}]*)\}", PRELUDE.read_text())
    assert listed and re.findall(r"'(\w+)'", listed.group(1)) == [s.value for s in TERMINAL_ORDER]
    assert TERMINAL_STATUSES == {s for s in TaskStatus if s.is_terminal} == set(TERMINAL_ORDER)
    copies = [f.name for f in LUA_DIR.glob("*.lua")
              if re.search(r"\{\s*'completed',\s*'failed',\s*'cancelled'\s*\}", f.read_text())
              and f != PRELUDE]
    assert copies == []


def test_wake_tokens_are_pushed_by_one_function():
    """The wake:<queue> lists are written by prelude.lua's push_wakes only
    (wake(q) and batch_end call it), which skips a push to a full list."""
    uses = {f.name: len(re.findall(r"\bk_wake\(", f.read_text())) for f in LUA_DIR.glob("*.lua")}
    assert {name: n for name, n in uses.items() if n} == {"prelude.lua": 2}  # defined, used once
    body = re.search(r"^local function push_wakes.*?^end$", PRELUDE.read_text(), re.M | re.S)
    assert body and "'LLEN', key" in body.group(0) and "'LTRIM'" not in body.group(0)


def test_record_defaults_are_one_rule_per_language():
    """An option at its default is not stored (registration.py): Python's
    readers take it from models.RECORD_DEFAULTS, the scripts from the
    prelude's DEFAULT_* constants; both say the same."""
    from taskmesh.models import RECORD_DEFAULTS

    text = PRELUDE.read_text()
    lua = {name: re.search(rf"^local {const} = (\S+)", text, re.M).group(1).strip("'")
           for name, const in (("executor", "DEFAULT_EXECUTOR"),
                               ("max_retries", "DEFAULT_MAX_RETRIES"),
                               ("retry_delay", "DEFAULT_RETRY_DELAY_S"),
                               ("retry_backoff", "DEFAULT_RETRY_BACKOFF"),
                               ("ttl", "DEFAULT_TTL_S"))}
    assert lua["executor"] == RECORD_DEFAULTS["executor"]
    assert lua["ttl"] == RECORD_DEFAULTS["ttl"]
    for name in ("max_retries", "retry_delay", "retry_backoff"):
        assert float(lua[name]) == float(RECORD_DEFAULTS[name]), name
    # No script writes its own copy of a default where it reads the field.
    copies = [f.name for f in LUA_DIR.glob("*.lua")
              if f != PRELUDE and re.search(r"or 'async'", f.read_text())]
    assert copies == []

