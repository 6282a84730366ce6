"""Sharded namespaces: one namespace over N hash tags (README and
docs/design.md, *Sharded namespaces*).

A namespace of N shards has N key prefixes (:class:`taskmesh.keys.Keys`
with a tag each). Shard 0 keeps the tag ``{namespace}``, so a namespace
written before shards existed is simply a 1-shard namespace. Shard i > 0
gets the tag ``namespace:i:j`` with the smallest j whose cluster slot lies
in the middle of the i-th of the N equal windows of the 16384 slots after
the window of shard 0's slot: the shards spread evenly, which puts them on
different masters of a cluster whose N masters own equal slot ranges (what
``redis-cli --cluster create`` makes). (``:`` cannot appear in a
namespace, so no other namespace's tag can collide with these.)

A task's shard is ``crc32(id) % N``: any process finds any task, ids chosen
by callers included, and a task never moves. Each shard is a complete
namespace of its own (queues, running, events, stats); what crosses shards:

* the shard count, stored in shard 0's config (``shards.lua``): fixed by the
  first registration or settings write, read by everyone else;
* dependencies: ``link.lua`` in the dependency's shard, then ``register.lua``
  in the dependent's; the dependency's finishing script writes the outcome
  to its shard's ``outbox`` (prelude ``resolve()``), and whoever drains that
  outbox applies it with ``apply.lua`` on the dependent's shard, which
  records what it applied (at-least-once delivery, applied once);
* the cap: ``reserve.lua`` on shard 0 grants each worker room before it
  claims in any shard;
* events, metrics and workers' claims, which read every shard and merge.
"""

from __future__ import annotations

import binascii
import json
import logging
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Sequence, cast

from . import scripts
from .exceptions import TaskNotFoundError
from .keys import Keys
from .scripts import Call, Cmd, script
from .store import Commands

if TYPE_CHECKING:
    from .metrics import Metrics, QueueMetrics, TaskCounts

log = logging.getLogger(__name__)

MAX_SHARDS = 1024
SLOTS = 16384
OUTBOX_BATCH = 200


def validate_shards(shards: Any) -> int | None:
    """None (follow what is stored) or an int in 1..1024; else ValueError."""
    if shards is None:
        return None
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be an int from 1 to {MAX_SHARDS}, got {shards!r}")
    return shards


def _slot(tag: str) -> int:
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


@lru_cache(maxsize=64)
def shard_tags(namespace: str, count: int) -> tuple[str, ...]:
    """The hash tag of each shard (see the module docstring). Slot windows
    are the N equal parts of 0..16383; shard 0 sits where ``{namespace}``
    hashes, and shard i takes the i-th window after that one, its slot in the
    window's middle half, so equal-range masters each get their share."""
    base = _slot(namespace)
    first = base * count // SLOTS
    tags = [namespace]
    for i in range(1, count):
        window = (first + i) % count
        low, high = window * SLOTS // count, (window + 1) * SLOTS // count
        quarter = (high - low) // 4
        low, high = low + quarter, high - quarter
        j = 0
        while True:
            tag = f"{namespace}:{i}:{j}"
            if low <= _slot(tag) < high:
                tags.append(tag)
                break
            j += 1
    return tuple(tags)


def shard_of(task_id: str, count: int) -> int:
    return zlib.crc32(task_id.encode("utf-8", "surrogatepass")) % count if count > 1 else 0


def shard_of_tag(namespace: str, tag: str) -> int:
    """Shard index from a tag (``ns`` -> 0, ``ns:i:j`` -> i)."""
    if tag == namespace:
        return 0
    return int(tag[len(namespace) + 1:].split(":", 1)[0])


def shard_from_channel(namespace: str, channel: str) -> int:
    """Shard index of a pub/sub channel ``taskmesh:{tag}:...``."""
    start = channel.find("{")
    end = channel.find("}", start)
    return shard_of_tag(namespace, channel[start + 1:end])


def channel_patterns(namespace: str, suffix: str) -> list[str]:
    """Patterns matching channel ``suffix`` of every shard: shard 0's tag is
    the namespace, the others' ``namespace:i:j``."""
    return [f"taskmesh:{{{namespace}}}:{suffix}", f"taskmesh:{{{namespace}:*}}:{suffix}"]


@dataclass(frozen=True)
class ShardSet:
    """The keys and commands of every shard of one namespace."""

    namespace: str
    count: int

    @property
    def keys(self) -> tuple[Keys, ...]:
        return _shard_keys(self.namespace, self.count)

    @property
    def commands(self) -> tuple[Commands, ...]:
        return _shard_commands(self.namespace, self.count)

    def of(self, task_id: str) -> int:
        return shard_of(task_id, self.count)

    def for_task(self, task_id: str) -> Commands:
        return self.commands[self.of(task_id)]


@lru_cache(maxsize=64)
def _shard_keys(namespace: str, count: int) -> tuple[Keys, ...]:
    return tuple(Keys(namespace, None if i == 0 else tag)
                 for i, tag in enumerate(shard_tags(namespace, count)))


@lru_cache(maxsize=64)
def _shard_commands(namespace: str, count: int) -> tuple[Commands, ...]:
    return tuple(Commands(k) for k in _shard_keys(namespace, count))


# ---- Calls ----------------------------------------------------------------------------

def shards_call(keys: Keys, fix: int = 0) -> Call[int]:
    """Reads (fix=0) or fixes the stored shard count; ``keys`` is shard 0."""
    return Call(script("shards"), [keys.config, keys.seq, keys.stats], [keys.prefix, fix], int)


def link_call(dep_keys: Keys, dep_id: str, dependent_shard: int, dependent_id: str) -> Call[str]:
    return Call(script("link"), [dep_keys.task(dep_id)],
                [dep_keys.prefix, dep_id, dependent_shard, dependent_id], _text)


def apply_call(keys: Keys, task_id: str, dep_id: str, status: str) -> Call[str]:
    return Call(script("apply"), [keys.task(task_id)], [keys.prefix, task_id, dep_id, status],
                _text)


def reserve_call(keys: Keys, worker_id: str, held: int, want: int) -> Call[int]:
    return Call(script("reserve"), [keys.config, keys.capres, keys.workers],
                [keys.prefix, worker_id, held, want], int)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# ---- the outbox --------------------------------------------------------------------

async def drain_outboxes(client: Any, shardset: ShardSet, shards: Iterable[int],
                         rounds: int = 8) -> int:
    """Applies what the given shards' outboxes hold; returns how many entries
    were delivered (applied, or found already applied by another drainer). Entries are read, applied on their dependents' shards, and
    only then removed, so a drainer that dies half-way leaves them for the
    next one (apply.lua makes a second delivery a no-op). A cascade that
    reaches further shards is followed for up to ``rounds`` rounds; the rest
    waits for the next drain."""
    keys = shardset.keys
    todo = set(shards)
    applied = 0
    for _ in range(rounds):
        if not todo:
            break
        order = sorted(todo)
        reads: list[Cmd[Any]] = [Cmd(("LRANGE", keys[s].outbox, 0, OUTBOX_BATCH - 1))
                                 for s in order]
        batches = await _abatch(client, reads)
        todo = set()
        calls: list[Call[Any]] = []
        removals: list[Cmd[Any]] = []
        for source, raw_entries in zip(order, batches):
            for raw in raw_entries or ():
                try:
                    parent, status, shard, dependent = json.loads(raw)
                    target = keys[int(shard)]
                except (ValueError, TypeError, IndexError):
                    log.warning("dropping malformed outbox entry %r", raw[:200])
                    removals.append(Cmd(("LREM", keys[source].outbox, 1, raw)))
                    continue
                calls.append(apply_call(target, dependent, parent, status))
                removals.append(Cmd(("LREM", keys[source].outbox, 1, raw)))
                todo.add(int(shard))
            if raw_entries and len(raw_entries) >= OUTBOX_BATCH:
                todo.add(source)
        if not calls and not removals:
            break
        results = await scripts.arun_batch(client, calls) if calls else []
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise failures[0]  # nothing removed: the next drain retries
        applied += len(results)
        await _abatch(client, removals)
    return applied


async def _abatch(client: Any, cmds: Sequence[Cmd[Any]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for cmd in cmds:
        pipe.execute_command(*cmd.args)
    return list(await pipe.execute())


# ---- events ----------------------------------------------------------------------------

def event_id(shard: int, stream_id: str) -> str:
    return f"{shard}:{stream_id}"


def parse_event_id(since: str, count: int) -> tuple[int, int, int]:
    """``"<shard>:<ms>-<seq>"`` -> (ms, shard, seq). A bare stream id (as
    taskmesh gave before shards) means shard 0. ValueError when malformed."""
    if not isinstance(since, str):
        raise ValueError(f"since must be an event id string, got {since!r}")
    shard_text, sep, stream_id = since.partition(":")
    if not sep:
        shard_text, stream_id = "0", since
    try:
        shard = int(shard_text)
        ms_text, _, seq_text = stream_id.partition("-")
        ms, seq = int(ms_text), int(seq_text or 0)
    except ValueError:
        raise ValueError(f"malformed event id {since!r}: expected '<shard>:<ms>-<seq>'") from None
    if not 0 <= shard < count or ms < 0 or seq < 0:
        raise ValueError(f"event id {since!r} names no shard of this namespace")
    return ms, shard, seq


def _stream_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def entry_us(fields: dict[Any, Any]) -> Any:
    """An entry's ``us`` (bytes or text), or None: the last value of its
    ``e`` field (no free text there), or its own field in entries written
    before it moved into ``e``."""
    us = fields.get(b"us", fields.get("us"))
    if us is not None:
        return us
    e = fields.get(b"e", fields.get("e"))
    if e is None:
        return None
    values = e.split(b"," if isinstance(e, bytes) else ",")
    return values[-1] if len(values) == 7 else None  # "<type>,...,<runtime_ms>,<us>"


def merge_key(shard: int, stream_id: str, fields: dict[Any, Any]) -> tuple[int, int, int, int]:
    """Events of different shards merge by the microsecond their script ran
    (``us``, see :func:`entry_us`; ms * 1000 for entries written before it
    existed), then shard, then stream position - a total order consistent
    with each shard's own stream order."""
    ms, seq = _stream_key(stream_id)
    us = entry_us(fields)
    try:
        micro = int(us) if us is not None else ms * 1000
    except ValueError:
        micro = ms * 1000
    return micro, shard, ms, seq


def read_events(client: Any, shardset: ShardSet, since: str | None,
                count: int) -> list[tuple[int, str, dict[Any, Any]]]:
    """(shard, stream id, fields) of the replayed events in merge order
    (:func:`merge_key`): the latest ``count`` when ``since`` is None, else
    the first ``count`` after the position ``since`` marks in every shard.

    Paging with ``since=<last id>`` neither skips nor repeats events: the
    marked event's merge key splits every shard's stream in two. Other
    shards are read from one millisecond before the mark (scripts' clock and
    stream ids agree to that) and filtered by merge key."""
    keys = shardset.keys
    text = _text
    merged: list[tuple[tuple[int, int, int, int], int, str, dict[Any, Any]]] = []
    if since is None:
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.execute_command("XREVRANGE", k.events, "+", "-", "COUNT", count)
        for shard, entries in enumerate(pipe.execute()):
            for entry_id, fields in entries or ():
                merged.append((merge_key(shard, text(entry_id), fields), shard,
                               text(entry_id), fields))
        merged.sort(key=lambda item: item[0])
        return [(shard, i, f) for _, shard, i, f in merged[-count:]]
    ms, marked, seq = parse_event_id(since, shardset.count)
    mark_id = f"{ms}-{seq}"
    if shardset.count == 1:
        entries = client.execute_command("XRANGE", keys[0].events, f"({mark_id}", "+",
                                         "COUNT", count) or []
        return [(0, text(i), f) for i, f in entries]
    found = client.execute_command("XRANGE", keys[marked].events, mark_id, mark_id) or []
    mark_key = (merge_key(marked, mark_id, found[0][1]) if found
                else (ms * 1000 + 999, marked, ms, seq))
    low = f"{max(ms - 1, 0)}-0"
    pipe = client.pipeline(transaction=False)
    for shard, k in enumerate(keys):
        start = f"({mark_id}" if shard == marked else low
        # Entries at or before the mark are filtered out below: read that
        # many more than asked (a generous bound on one millisecond's worth).
        pipe.execute_command("XRANGE", k.events, start, "+", "COUNT",
                             count if shard == marked else count + 1000)
    for shard, entries in enumerate(pipe.execute()):
        for entry_id, fields in entries or ():
            key = merge_key(shard, text(entry_id), fields)
            if shard == marked or key > mark_key:
                merged.append((key, shard, text(entry_id), fields))
    merged.sort(key=lambda item: item[0])
    return [(shard, i, f) for _, shard, i, f in merged[:count]]


# ---- registration ----------------------------------------------------------------------

def link_dependencies(client: Any, shardset: ShardSet,
                      tasks: Sequence[Any]) -> dict[str, list[tuple[str, str]]]:
    """Runs link.lua for every dependency that lives in another shard than
    its dependent (sync client, before the dependents are registered).
    Returns, per dependent id, its (dependency id, link answer) pairs for
    register.lua; an unknown dependency is TaskNotFoundError, before the
    dependent is stored."""
    if shardset.count == 1:
        return {}
    calls: list[Call[Any]] = []
    owners: list[tuple[str, str]] = []
    for task in tasks:
        own = shardset.of(task.id)
        for dep in task.dependencies:
            where = shardset.of(dep)
            if where != own:
                calls.append(link_call(shardset.keys[where], dep, own, task.id))
                owners.append((task.id, dep))
    if not calls:
        return {}
    links: dict[str, list[tuple[str, str]]] = {}
    for (task_id, dep), answer in zip(owners, scripts.run_batch(client, calls)):
        if isinstance(answer, Exception):
            raise answer
        if answer == "missing":
            raise TaskNotFoundError(dep)
        links.setdefault(task_id, []).append((dep, answer))
    return links


# ---- metrics ---------------------------------------------------------------------------

def combine_metrics(per_shard: list[Metrics], raws: list[dict[str, Any]]) -> Metrics:
    """One get_metrics() dict from each shard's: counts summed, queues merged,
    runtimes and failure rate recomputed from the shards' samples, workers
    and settings from shard 0 (where workers register). ``shards`` lists each
    shard's own ``tasks`` and ``totals``."""
    from .metrics import _runtime_summary, status_counts

    out = per_shard[0].copy()
    # Every shard's counts have the same keys (collect() writes them all).
    counts = [status_counts(m["tasks"]) for m in per_shard]
    out["tasks"] = cast("TaskCounts", {k: sum(c[k] for c in counts) for k in counts[0]})
    out["totals"] = {k: sum(m["totals"].get(k, 0) for m in per_shard)
                     for k in per_shard[0]["totals"]}
    queues: dict[str, QueueMetrics] = {}
    ages: dict[str, dict[int, float]] = {}
    for m in per_shard:
        for name, view in m["queues"].items():
            into = queues.setdefault(
                name, {"by_priority": {}, "queued": 0, "scheduled": 0, "rate_limited": 0})
            into["queued"] += view["queued"]
            into["scheduled"] += view["scheduled"]
            into["rate_limited"] += view["rate_limited"]
            for p, n in view["by_priority"].items():
                into["by_priority"][p] = into["by_priority"].get(p, 0) + n
        for name, by_p in m.get("oldest_queued_age_s", {}).items():
            target = ages.setdefault(name, {})
            for p, age in by_p.items():
                target[p] = max(target.get(p, 0.0), age)
    for view in queues.values():
        view["by_priority"] = dict(sorted(view["by_priority"].items(), reverse=True))
    out["queues"] = dict(sorted(queues.items()))
    out["oldest_queued_age_s"] = {q: ages.get(q, {}) for q in out["queues"]}
    out["throughput_per_s"] = round(sum(m["throughput_per_s"] for m in per_shard), 3)
    out["blocked_on_dependencies"] = sum(m.get("blocked_on_dependencies", 0) for m in per_shard)
    out["recoveries"] = sum(m.get("recoveries", 0) for m in per_shard)
    out["lease_expiries"] = sum(m.get("lease_expiries", 0) for m in per_shard)
    samples = [x for raw in raws for x in raw.get("runtimes", [])]
    out["runtime_ms"] = _runtime_summary(samples)
    done = sum(raw.get("done_window", 0) for raw in raws)
    failed = sum(raw.get("failed_window", 0) for raw in raws)
    out["failure_rate"] = round(failed / (done + failed), 4) if done + failed else 0.0
    out["shards"] = [{"shard": i, "tasks": m["tasks"], "totals": m["totals"]}
                     for i, m in enumerate(per_shard)]
    return out


class TaskRouter:
    """Commands addressed by task id for code written against one
    :class:`Commands` (the periodic ticker): ``register`` goes to the task's
    shard, every other builder to shard 0.

    With a (sync) ``client``, ``register`` first reads the stored count: a
    worker learns a count fixed after it started only at its next
    heartbeat, and a tick routed by the old view would land in the wrong
    shard, where nobody looks for it. One read per tick."""

    def __init__(self, shardset: Any, client: Any = None):
        self._shardset = shardset  # a ShardSet, or a callable returning the current one
        self._client = client

    def _current(self) -> ShardSet:
        current = self._shardset() if callable(self._shardset) else self._shardset
        assert isinstance(current, ShardSet)
        return current

    def register(self, task_id: str, *args: Any, **kwargs: Any) -> Call[Any]:
        current = self._current()
        if self._client is not None:
            stored = scripts.run(self._client, shards_call(current.keys[0]))
            if stored > current.count:  # a count only ever becomes known, never changes
                current = ShardSet(current.namespace, stored)
        return current.for_task(task_id).register(task_id, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current().commands[0], name)

