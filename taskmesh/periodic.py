"""Periodic tasks: schedules stored in Redis, fired by any worker (README
*Periodic tasks*; docs/design.md *Periodic schedules*).

A schedule is a hash ``periodic:<name>`` (cron or every, tz, next_run_at,
last_run_at, last_task_id, and ``task``: the registration fields built once
by :func:`taskmesh.registration.build_task` when it was added), indexed by
the zset ``periodic`` scored by its next tick.

Every worker runs a :class:`PeriodicTicker` thread. It sleeps until the
earliest next tick (checking at least every ``POLL_S``), then for each due
schedule fires the latest tick that has passed — ticks missed while no worker
ran collapse into that one — by registering the task
``"periodic:<name>:<tick>"`` through the idempotent ``task_id`` path, then
advancing ``next_run_at`` with a compare-and-set script
(``lua/periodic_advance.lua``). Several workers firing the same tick compute
the same task id, so one registration creates the task and the others create
nothing: exactly one task per tick without electing a leader.

Ticks are whole epoch seconds: for ``every``, the multiples of ``every``
since the epoch; for ``cron`` (standard 5 fields, parsed by croniter), the
times the expression names in the schedule's time zone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

import msgpack

from . import scripts
from .background import BackgroundThread
from .connection import CONNECTION_ERRORS
from .keys import Keys
from .registration import TaskOptions, build_task
from .scripts import Call, Cmd, script
from .serialization import Codec
from .store import Commands

log = logging.getLogger(__name__)

POLL_S = 0.5  # a ticker looks for new or changed schedules at least this often
FIRE_BATCH = 100  # due schedules fired per pass
BROKEN_RETRY_S = 60  # an unreadable schedule is looked at again after this long
MAX_NAME = 200  # the tick's task id must fit registration's MAX_TASK_ID
# Tick tasks get their id from the schedule; these options would fight it.
NOT_FOR_SCHEDULES = ("task_id", "dependencies", "defer", "delay", "eta", "args")


@dataclass(frozen=True)
class PeriodicInfo:
    """One schedule as ``list_periodic()`` reports it (epoch seconds)."""

    name: str
    cron: str | None
    every: int | None
    tz: str
    next_run_at: float
    last_run_at: float | None
    last_task_id: str | None


@dataclass(frozen=True)
class Schedule:
    """When a schedule ticks: exactly one of ``cron`` and ``every``."""

    cron: str | None
    every: int | None
    tz: str

    def next_after(self, t: float) -> int:
        """The first tick strictly after epoch time ``t``."""
        if self.every is not None:
            return (math.floor(t / self.every) + 1) * self.every
        return int(self._cron(math.floor(t)).get_next(float))

    def latest_at(self, t: float) -> int:
        """The last tick at or before ``t`` (ticks are whole seconds, and
        croniter's get_prev is strict, hence the ``+ 1``)."""
        if self.every is not None:
            return math.floor(t / self.every) * self.every
        return int(self._cron(math.floor(t) + 1).get_prev(float))

    def _cron(self, start: int) -> Any:
        from zoneinfo import ZoneInfo  # (both on first use: workers start faster, smaller)

        from croniter import croniter

        if self.cron is None:  # an `every` schedule never gets here (see the callers)
            raise ValueError("not a cron schedule")
        return croniter(self.cron, datetime.fromtimestamp(start, ZoneInfo(self.tz)))

    def fields(self) -> dict[str, str]:
        return {"cron": self.cron or "", "every": "" if self.every is None else str(self.every),
                "tz": self.tz}

    @classmethod
    def from_record(cls, h: Mapping[str, str]) -> "Schedule":
        return cls(h.get("cron") or None, int(h["every"]) if h.get("every") else None,
                   h.get("tz") or "UTC")


def check_schedule(cron: Any, every: Any, tz: Any) -> Schedule:
    """Validates add_periodic's timing arguments (``ValueError`` naming the
    bad one); nothing is stored before this passes."""
    if (cron is None) == (every is None):
        raise ValueError("add_periodic needs exactly one of cron= or every=")
    if not isinstance(tz, str) or not tz:
        raise ValueError(f"tz must be a time zone name like 'Europe/Paris', got {tz!r}")
    from zoneinfo import ZoneInfo  # on first use (see Schedule._cron)

    try:
        ZoneInfo(tz)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone tz={tz!r}") from exc
    if every is not None:
        whole = isinstance(every, int) or (isinstance(every, float) and every.is_integer())
        if isinstance(every, bool) or not whole or every < 1:
            raise ValueError(f"every must be a whole number of seconds >= 1, got {every!r}")
        return Schedule(None, int(every), tz)
    if not isinstance(cron, str) or len(cron.split()) != 5:
        raise ValueError(f"cron must be a standard 5-field expression "
                         f"('minute hour day month weekday'), got {cron!r}")
    from croniter import croniter

    cron = " ".join(cron.split())
    schedule = Schedule(cron, None, tz)
    try:
        if not croniter.is_valid(cron):
            raise ValueError("croniter cannot parse it")
        schedule.next_after(datetime.now().timestamp())  # e.g. "0 0 30 2 *" never fires
    except Exception as exc:
        raise ValueError(f"bad cron expression {cron!r}: {exc}") from exc
    return schedule


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a periodic schedule's name must be a non-empty string")
    if len(name) > MAX_NAME or any(ch.isspace() for ch in name):
        raise ValueError(f"schedule name {name!r} must be at most {MAX_NAME} characters, "
                         "without whitespace")
    return name


def tick_task_id(name: str, tick: int) -> str:
    return f"periodic:{name}:{tick}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _info(name: str, h: Mapping[str, str]) -> PeriodicInfo:
    schedule = Schedule.from_record(h)
    last = h.get("last_run_at")
    return PeriodicInfo(name=name, cron=schedule.cron, every=schedule.every, tz=schedule.tz,
                        next_run_at=float(h["next_run_at"]),
                        last_run_at=float(last) if last else None,
                        last_task_id=h.get("last_task_id") or None)


def _redis_now(client: Any) -> float:
    sec, usec = client.execute_command("TIME")
    return int(sec) + int(usec) / 1e6


# ---- the producer side (TaskManager.add_periodic & co.) -----------------------------
def add(client: Any, keys: Keys, codec: Codec, result_ttl: int | None, name: str,
        func: Any, args: tuple[Any, ...], *, cron: Any, every: Any, tz: Any,
        kwargs: dict[str, Any] | None, options: dict[str, Any],
        first_use: Callable[[], object] = lambda: None) -> PeriodicInfo:
    """Validates and encodes everything, then calls ``first_use`` (the
    manager fixes a sharded namespace's count there: every tick registers
    a task, and a worker ticking an unfixed namespace would fix it at one
    shard), then stores the schedule. Bad input stores nothing."""
    name = check_name(name)
    schedule = check_schedule(cron, every, tz)
    for bad in NOT_FOR_SCHEDULES:
        if bad in options:
            raise TypeError(f"add_periodic() does not take {bad}= (each tick's task is "
                            f"registered as {tick_task_id(name, 0)[:-1]}<tick>)")
    # Bound (with a secret) to the schedule, not to one tick: every tick's
    # task carries this payload (Codec.for_payload).
    new = build_task(codec, func, args, kwargs,
                     TaskOptions(name=name, task_id=tick_task_id(name, 0), **options), result_ttl)
    task = msgpack.packb(new.fields, use_bin_type=True)
    first_use()
    next_run_at = schedule.next_after(_redis_now(client))
    key = keys.periodic_schedule(name)
    pairs = [x for item in {**schedule.fields(), "next_run_at": str(next_run_at),
                            "task": task}.items() for x in item]
    # Blind writes: HSET leaves last_run_at / last_task_id as they were.
    *_, last = scripts.run_atomic(client, [
        Cmd(("HSET", key, *pairs)),
        Cmd(("ZADD", keys.periodic, next_run_at, name)),
        Cmd(("HMGET", key, "last_run_at", "last_task_id")),
    ])
    h = {**schedule.fields(), "next_run_at": str(next_run_at)}
    if last[0]:
        h.update(last_run_at=_text(last[0]), last_task_id=_text(last[1] or b""))
    return _info(name, h)


def remove(client: Any, keys: Keys, name: str) -> bool:
    removed, deleted = scripts.run_atomic(client, [
        Cmd(("ZREM", keys.periodic, name)), Cmd(("DEL", keys.periodic_schedule(name)))])
    return bool(removed or deleted)


def list_all(client: Any, keys: Keys) -> list[PeriodicInfo]:
    names = sorted(_text(n) for n in client.zrange(keys.periodic, 0, -1))
    pipe = client.pipeline(transaction=False)
    fields = ("cron", "every", "tz", "next_run_at", "last_run_at", "last_task_id")
    for name in names:
        pipe.hmget(keys.periodic_schedule(name), *fields)
    out = []
    for name, values in zip(names, pipe.execute()):
        if values[3] is not None:  # removed between the two reads
            out.append(_info(name, {f: _text(v) for f, v in zip(fields, values) if v is not None}))
    return out


# ---- the worker side ---------------------------------------------------------------
def advance_call(keys: Keys, name: str, expected: str, next_run_at: int, tick: int | None,
                 task_id: str) -> Call[int]:
    return Call(script("periodic_advance"), [keys.periodic_schedule(name), keys.periodic],
                [keys.prefix, name, expected, next_run_at, "" if tick is None else tick, task_id],
                int)


class PeriodicTicker(BackgroundThread):
    """Fires due ticks from a worker, on its own thread (like the lease
    keeper) so a task that blocks the event loop does not delay them."""

    def __init__(self, client: Any, keys: Keys, commands: Commands, worker_id: str):
        super().__init__(name=f"taskmesh-periodic-{worker_id}")
        self.client = client
        self.keys = keys
        self.commands = commands
        self._redis_down = False

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                wait = self.check()
                self._redis_down = False
            except CONNECTION_ERRORS as exc:
                if not self._redis_down:
                    log.warning("periodic ticks paused, Redis unreachable: %s", exc)
                self._redis_down, wait = True, 1.0
            except Exception as exc:
                busy = scripts.busy_error(exc)  # OOM/BUSY: transient, like an outage
                if busy is None:
                    log.exception("periodic tick pass failed; retrying")
                elif not self._redis_down:
                    log.warning("periodic ticks paused: %s", busy)
                self._redis_down, wait = busy is not None, 1.0
            if wait > 0:
                self.stopped.wait(wait)

    def check(self) -> float:
        """Fires what is due; returns how long to sleep before looking again.
        Time is the Redis server's, the clock every worker shares."""
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("TIME")
        pipe.zrange(self.keys.periodic, 0, 0, withscores=True)
        (sec, usec), head = pipe.execute()
        now = int(sec) + int(usec) / 1e6  # the Redis clock, shared by every worker
        if not head:
            return POLL_S
        first_due = float(head[0][1])
        if first_due > now:
            return min(first_due - now, POLL_S)
        for name in self.client.zrangebyscore(self.keys.periodic, "-inf", now, 0, FIRE_BATCH):
            self.fire(_text(name), now)
        return 0.0

    def fire(self, name: str, now: float) -> bool:
        """Registers the latest passed tick of one schedule and advances it.
        Returns True if this call advanced the schedule."""
        raw = self.client.hgetall(self.keys.periodic_schedule(name))
        if not raw:  # removed since the index was read: the script drops the index entry
            return bool(scripts.run(self.client, advance_call(self.keys, name, "", 0, None, "")))
        h = {_text(k): v for k, v in raw.items()}
        expected = _text(h.get("next_run_at", b""))
        try:
            if expected and float(expected) > now:
                return False  # replaced (or fired by another worker) since the index was read
        except ValueError:
            pass  # a damaged next_run_at: fired below, which rewrites it
        tick: int | None = None
        task_id = ""
        try:
            schedule = Schedule.from_record({k: _text(v) for k, v in h.items() if k != "task"})
            next_run_at = schedule.next_after(now)
            tick = schedule.latest_at(now)
            task_id = tick_task_id(name, tick)
            fields = msgpack.unpackb(h["task"], raw=False)
            created, _ = scripts.run(self.client, self.commands.register(task_id, fields, [],
                                                                        False))
        except CONNECTION_ERRORS:
            raise
        except Exception:  # a damaged record: look again later, never stop the worker
            log.exception("periodic schedule %r cannot fire; next try in %d s", name,
                          BROKEN_RETRY_S)
            tick, task_id, next_run_at = None, "", math.ceil(now) + BROKEN_RETRY_S
        else:
            if created == "created":
                log.info("periodic %s: tick %d registered task %s", name, tick, task_id)
        return bool(scripts.run(self.client, advance_call(self.keys, name, expected, next_run_at,
                                                          tick, task_id)))
