"""Every Redis operation taskmesh performs, as Calls built in one place.

Producers (manager), workers and the CLI all build their commands here and
execute them with :mod:`taskmesh.scripts` on whichever client they hold, sync
or async. Each state change is one Lua script (see ``lua/`` and
docs/design.md for the state machine); reads are plain commands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import msgpack

from .exceptions import CorruptRecordError, TaskNotFoundError
from .keys import Keys
from .models import RECORD_DEFAULTS, TaskError, TaskInfo, TaskStatus
from .remote import attach
from .retry_policy import jitter_factor
from .scripts import Call, Cmd, busy_error, script


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _str(value: Any) -> str:
    return _s(value) or ""


def _f(value: Any) -> float | None:
    text = _s(value)
    return float(text) if text not in (None, "") else None


class ClaimedTask(NamedTuple):
    """One task a claim made RUNNING for this worker (a tuple: built for
    every task, so built cheaply)."""

    id: str
    token: str
    attempt: int
    executor: str
    timeout: float | None
    payload: bytes
    metadata: dict[str, Any]
    name: str
    defect: str | None = None  # why the stored record is unusable, if it is


@dataclass(frozen=True)
class ClaimResult:
    tasks: list[ClaimedTask]
    capped: bool
    lane_full: bool
    more_queued: bool
    next_due_ms: int


@dataclass(frozen=True)
class RenewResult:
    lost: list[str]
    cancel_requested: list[str]


def decode_metadata(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return {}
    return value if isinstance(value, dict) else {}


def decode_error(raw: Any, pickled: Any = None) -> TaskError | None:
    """The TaskError of a record; ``pickled`` is its ``error_exc`` field (the
    worker's pickled exception, see :mod:`taskmesh.remote`)."""
    if not raw:
        return None
    try:
        error = TaskError.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        return TaskError("StoreError", f"undecodable error record: {raw!r}")
    return attach(error, pickled)


@dataclass(frozen=True)
class ListStep:
    """One list.lua answer: matching ids with their walk positions, and
    where to resume (``resume`` is None when the walk reached its end)."""

    matches: list[tuple[str, str, str]]  # (phase, score, id)
    resume: tuple[str, str, str] | None


def _parse_register(raw: list[Any]) -> tuple[str, str | None]:
    return _s(raw[0]) or "", _s(raw[1]) if len(raw) > 1 else None


class Commands:
    """Builds the Calls for one namespace. Holds no connection."""

    def __init__(self, keys: Keys):
        self.keys = keys
        self.prefix = keys.prefix
        # register.lua's KEYS[2..4], made once (a Keys property formats its
        # prefix anew at each use).
        self._register_keys = (keys.seq, keys.stats, keys.queues)

    # ---- producer-side state changes ------------------------------------
    def register(
        self, task_id: str, fields: dict[str, Any], dependencies: Sequence[str], defer: bool,
        remote: Sequence[tuple[str, str]] = (),
    ) -> Call[tuple[str, str | None]]:
        """``dependencies`` are in this shard; ``remote`` pairs a dependency
        in another shard with what link.lua answered there (sharding.py)."""
        prefix = self.prefix
        args: list[Any] = [prefix, task_id, "1" if defer else "0", len(fields)]
        for pair in fields.items():
            args += pair
        args += dependencies
        if remote:
            args.append("")
            for pair in remote:
                args += pair
        return Call(script("register"), [self.keys.task(task_id), *self._register_keys], args,
                    _parse_register)

    def register_many(self, registrations: Sequence[Call[tuple[str, str | None]]]
                      ) -> Call[list[Any]]:
        """Several :meth:`register` Calls of this shard as one script call
        (register_many.lua runs register.lua's body for each). The reply is
        one entry per registration: its parsed reply, or the exception its
        script raised."""
        k = self.keys
        args: list[Any] = [self.prefix]
        for call in registrations:
            assert call.script.name == "register" and call.args[0] == self.prefix
            args += [len(call.args) - 1, *call.args[1:]]

        def parse(raw: list[Any]) -> list[Any]:
            return [(busy_error(r) or r) if isinstance(r, Exception) else call.parse(r)
                    for call, r in zip(registrations, raw)]

        return Call(script("register_many"), [k.seq, k.stats, k.queues], args, parse)

    def register_chunk(self, head: dict[str, Any], tail: dict[str, Any], defer: bool,
                       ids: Sequence[str], payloads: Sequence[bytes]) -> Call[list[Any]]:
        """:meth:`register_many` of tasks that share every field but the
        payload (register_many without dependencies), built without a Call
        per task. Each reply entry is register.lua's raw reply, or the
        exception its script raised."""
        shared: list[Any] = ["1" if defer else "0", len(head) + len(tail)]
        for pair in head.items():
            shared += pair
        for pair in tail.items():
            shared += pair
        # register_many.lua's shared form: the fields once, then id, payload
        args: list[Any] = [self.prefix, "shared", len(shared), *shared]
        for pair in zip(ids, payloads):
            args += pair
        k = self.keys

        def parse(raw: list[Any]) -> list[Any]:
            return [(busy_error(r) or r) if isinstance(r, Exception) else r for r in raw]

        return Call(script("register_many"), [k.seq, k.stats, k.queues], args, parse)

    def execute(self, task_id: str) -> Call[TaskStatus]:
        def parse(raw: Any) -> TaskStatus:
            if raw is None:
                raise TaskNotFoundError(task_id)
            return TaskStatus(_str(raw))

        return Call(script("execute"), [self.keys.task(task_id), self.keys.pending],
                    [self.prefix, task_id], parse)

    def cancel(self, task_id: str) -> Call[int]:
        def parse(raw: Any) -> int:
            if int(raw) < 0:
                raise TaskNotFoundError(task_id)
            return int(raw)

        return Call(script("cancel"), [self.keys.task(task_id)], [self.prefix, task_id], parse)

    def resolve(self) -> Call[int]:
        """Continues a cascade left on the ``resolve`` list; returns what is
        left (-1: nothing was there)."""
        return Call(script("resolve"), [self.keys.resolve], [self.prefix], int)

    def progress(
        self, task_id: str, progress: float, message: str | None, token: str = "",
        force: bool = False,
    ) -> Call[bool]:
        """Every call records and publishes: throttling is the worker's
        (TaskContext). ``force`` is kept for callers that pass it."""

        def parse(raw: Any) -> bool:
            if int(raw) < 0:
                raise TaskNotFoundError(task_id)
            return int(raw) == 1

        return Call(
            script("progress"),
            [self.keys.task(task_id)],
            [self.prefix, task_id, repr(float(progress)), "0" if message is None else "1",
             message or "", token, "1" if force else "0"],
            parse,
        )

    def set_rate_limit(self, rate_key: str, limit: tuple[float, float] | None) -> Call[bool]:
        """``limit`` is (per_second, capacity), validated; None removes it."""
        k = self.keys
        rate, burst = ("", "") if limit is None else (repr(limit[0]), repr(limit[1]))
        return Call(script("ratelimit"), [k.ratelimits, k.rate_bucket(rate_key)],
                    [self.prefix, rate_key, rate, burst], lambda raw: int(raw) == 1)

    def unpark(self, rate_key: str, queue: str, cursor: str) -> Call[str]:
        return Call(script("unpark"), [self.keys.parked(queue)],
                    [self.prefix, rate_key, queue, cursor], _str)

    # ---- worker-side state changes ---------------------------------------
    def claim(
        self, worker_id: str, queues: Sequence[str], count: int, lease_timeout_ms: int, seq_slots: int,
        process_slots: int, claim_id: str = "", fresh: bool = False,
    ) -> Call[ClaimResult]:
        """``claim_id`` names one logical claim: resent after a lost reply,
        the same id gets the same tasks back (claim.lua, "Replay").
        ``fresh``: this id was never sent before, so there is no earlier
        claim of it to replay and claim.lua does not look for one (a resend
        must pass False)."""
        k = self.keys
        return Call(
            script("claim"),
            [k.running, k.config, k.claims, k.workers],
            [self.prefix, worker_id, count, lease_timeout_ms, seq_slots, process_slots, claim_id,
             "1" if fresh and claim_id else "", *queues],
            _parse_claim,
        )

    def report(self, task_id: str, token: str, outcome: str, data: bytes | str,
               retryable: bool = False, queued_locally_ms: int = 0,
               pickled_error: bytes | None = None) -> Call[str]:
        k = self.keys
        return Call(
            script("report"),
            [k.task(task_id), k.running, k.stats],
            [self.prefix, task_id, token, outcome, data, "1" if retryable else "0",
             queued_locally_ms, pickled_error or b"", repr(jitter_factor())],
            _status_text,
        )

    def report_many(self, reports: Sequence[Call[str]]) -> Call[list[Any]]:
        """Several :meth:`report` Calls as one script call (report_many.lua
        runs report.lua's body for each). The reply is one entry per report:
        its status, or the exception its script raised."""
        k = self.keys
        full = len(reports[0].args) - 1
        # A completion reads only its first 4 arguments, and the 6th (the
        # wait in the worker) when not 0: a batch of such sends no more
        # (report.lua reads what is left out as absent; each argument costs
        # Redis a string object and Lua a string).
        assert all(len(call.args) - 1 == full and call.script.name == "report" for call in reports)
        width = 4
        for call in reports:
            if call.args[3] != "completed":
                width = full
                break
            if call.args[6] not in (0, "0"):
                width = 6
        args: list[Any] = [self.prefix, width]
        for call in reports:
            args += call.args[1:width + 1]

        def parse(raw: list[Any]) -> list[Any]:
            return [(busy_error(r) or r) if isinstance(r, Exception) else call.parse(r)
                    for call, r in zip(reports, raw)]

        return Call(script("report_many"), [k.running, k.stats], args, parse)

    def renew(self, worker_id: str, lease_timeout_ms: int, held: dict[str, str],
              info: dict[str, Any] | None = None) -> Call[RenewResult]:
        k = self.keys
        info_pairs: list[Any] = []
        for name, value in (info or {}).items():
            info_pairs += [name, value]
        held_pairs: list[str] = []
        for task_id, token in held.items():
            held_pairs += [task_id, token]

        def parse(raw: list[Any]) -> RenewResult:
            items = [_s(x) or "" for x in raw]
            cut = items.index("")
            return RenewResult(items[:cut], items[cut + 1:])

        return Call(
            script("renew"),
            [k.running, k.workers, k.worker(worker_id)],
            [self.prefix, worker_id, lease_timeout_ms, len(info or {}), *info_pairs, *held_pairs],
            parse,
        )

    def recover(self, limit: int = 100) -> Call[int]:
        k = self.keys
        return Call(script("recover"), [k.running, k.workers, k.stats], [self.prefix, limit], int)

    def handback(self, held: Iterable[tuple[str, str, bool]]) -> Call[int]:
        args: list[str] = []
        for task_id, token, started in held:
            args += [task_id, token, "1" if started else "0"]
        return Call(script("handback"), [self.keys.running], [self.prefix, *args], int)

    def unregister_worker(self, worker_id: str) -> list[Cmd[Any]]:
        """Blind writes, sent together in one MULTI (see scripts.arun_atomic)."""
        return [Cmd(("ZREM", self.keys.workers, worker_id)),
                Cmd(("DEL", self.keys.worker(worker_id), self.keys.alarm(worker_id))),
                Cmd(("HDEL", self.keys.capres, worker_id))]

    # ---- reads -------------------------------------------------------------
    def list_step(self, statuses: Sequence[str], queue: str | None, tag: str | None,
                  position: tuple[str, str, str] | None, want: int,
                  budget: int) -> Call[ListStep]:
        """Walks the status indexes from ``position`` (see lua/list.lua)."""

        def parse(raw: list[Any]) -> ListStep:
            items = [_str(x) for x in raw]
            matches = [(items[i], items[i + 1], items[i + 2]) for i in range(4, len(items), 3)]
            resume = (items[1], items[2], items[3]) if items[0] == "more" else None
            return ListStep(matches, resume)

        phase, score, task_id = position or ("", "", "")
        return Call(script("list"), [self.keys.queues],
                    [self.prefix, want, budget, ",".join(statuses), queue or "", tag or "",
                     phase, score, task_id], parse)

    def read_fields(self, task_id: str, *fields: str) -> Cmd[list[Any]]:
        """HMGET status + fields; raises TaskNotFoundError if there is no record."""

        def parse(raw: list[Any]) -> list[Any]:
            if raw[0] is None:
                raise TaskNotFoundError(task_id)
            return [field_status(f"task {task_id}", raw[0]), *raw[1:]]

        return Cmd(("HMGET", self.keys.task(task_id), "status", *fields), parse)

    def read_status(self, task_id: str) -> Cmd[TaskStatus]:
        """read_fields(task_id)[0], typed: the one field most reads need."""
        inner = self.read_fields(task_id)
        return Cmd(inner.args, lambda raw: inner.parse(raw)[0])

    def read_record(self, task_id: str) -> Cmd[dict[str, Any]]:
        """The whole record (field names decoded, values raw)."""

        def parse(raw: dict[Any, Any]) -> dict[str, Any]:
            if not raw:
                raise TaskNotFoundError(task_id)
            return {_str(k): v for k, v in raw.items()}

        return Cmd(("HGETALL", self.keys.task(task_id)), parse)

    def read_task(self, task_id: str) -> Cmd[TaskInfo]:
        record = self.read_record(task_id)
        return Cmd(record.args, lambda raw: task_info(task_id, record.parse(raw)))


# Registrations per register_many.lua call: the batch pays the per-call
# costs once, and the chunk bounds how long one call holds Redis (~2 ms).
REGISTER_CHUNK = 100


def register_batches(pairs: Sequence[tuple[Commands, Call[tuple[str, str | None]]]]
                     ) -> list[Call[list[Any]]]:
    """register_many's registrations (each with its shard's Commands) as
    register_many.lua calls: grouped by shard, REGISTER_CHUNK per call."""
    groups: dict[str, tuple[Commands, list[Call[tuple[str, str | None]]]]] = {}
    for commands, call in pairs:
        groups.setdefault(commands.prefix, (commands, []))[1].append(call)
    return [commands.register_many(group[start:start + REGISTER_CHUNK])
            for commands, group in groups.values()
            for start in range(0, len(group), REGISTER_CHUNK)]


def unbatched(results: Iterable[Any]) -> list[Any]:
    """The per-registration replies of register_batches' calls (a batch that
    failed as a whole stays one exception); single replies pass through."""
    out: list[Any] = []
    for result in results:
        out += result if isinstance(result, list) else [result]
    return out


def _parse_claim(raw: list[Any]) -> ClaimResult:
    flags = _s(raw[0]) or ""
    tasks = [_claimed(*raw[i:i + 8]) for i in range(2, len(raw), 8)]
    return ClaimResult(tasks, "c" in flags, "l" in flags, "q" in flags, int(raw[1]))


def _claimed(task_id: bytes, token: bytes, attempt: Any, executor: bytes, timeout: Any,
             payload: Any, metadata: Any, name: Any) -> ClaimedTask:
    """One claimed task from claim.lua's reply (bytes, as the client reads
    them). A field another writer corrupted (not UTF-8, not a number) makes
    a task whose ``defect`` fails that task: never the worker."""
    defect = None
    try:
        timeout_s = float(timeout) if timeout else None
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout {timeout_s} is not > 0")
    except ValueError as exc:
        timeout_s, defect = None, f"task record has an invalid timeout field: {exc}"
    try:
        text_name = name.decode() if name else ""
        text_executor = executor.decode()
    except (UnicodeDecodeError, AttributeError) as exc:
        text_name, text_executor = "", ""
        defect = defect or f"task record has an unreadable field: {exc}"
    return ClaimedTask(
        task_id.decode(), token.decode(), int(attempt), text_executor, timeout_s,
        payload or b"", decode_metadata(metadata), text_name, defect)


def _status_text(raw: Any) -> str:
    return _s(raw) or ""


class Fields:
    """Reads one stored record's fields, each conversion naming its field:
    a value written by something else (invalid UTF-8, a non-number) is a
    CorruptRecordError saying which record and field, never a bare
    UnicodeDecodeError or ValueError from deep inside a reader."""

    def __init__(self, record: str, h: dict[str, Any]):
        self.record = record
        self.h = h

    def text(self, name: str) -> str | None:
        """The field as text; an option left at its default (not stored,
        models.RECORD_DEFAULTS) as that default."""
        value = self.h.get(name)
        if value is None:
            return RECORD_DEFAULTS.get(name)
        return field_text(self.record, name, value)

    def number(self, name: str, conv: Callable[[str], Any] = float) -> Any:
        text = self.text(name)
        if text in (None, ""):
            return None
        try:
            return conv(text)
        except ValueError:
            raise CorruptRecordError(self.record, name, f"not a number: {text!r}") from None

    def json(self, name: str, default: str) -> Any:
        text = self.text(name) or default
        try:
            return json.loads(text)
        except ValueError:
            raise CorruptRecordError(self.record, name, f"not JSON: {text[:80]!r}") from None


def field_text(record: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise CorruptRecordError(record, name, f"not UTF-8: {exc}") from None


def field_status(record: str, value: Any) -> TaskStatus:
    text = field_text(record, "status", value) or ""
    try:
        return TaskStatus(text)
    except ValueError:
        raise CorruptRecordError(record, "status", f"not a task status: {text!r}") from None


def task_info(task_id: str, h: dict[str, Any]) -> TaskInfo:
    f = Fields(f"task {task_id}", h)
    status = field_status(f.record, h.get("status"))
    error = decode_error(h.get("error"), h.get("error_exc")) if status.is_terminal else None
    return TaskInfo(
        id=task_id,
        name=f.text("name") or "",
        description=f.text("description") or "",
        status=status,
        priority=f.number("priority", int) or 0,
        queue=f.text("queue") or "default",
        executor_type=f.text("executor") or RECORD_DEFAULTS["executor"],
        dependencies=f.json("dependencies", "[]"),
        attempts=f.number("attempts", int) or 0,
        max_retries=f.number("max_retries", int) or 0,
        worker=f.text("worker"),
        created_at=f.number("created_at"),
        started_at=f.number("started_at"),
        finished_at=f.number("finished_at"),
        progress=f.number("progress") or 0.0,
        progress_message=f.text("progress_message"),
        tags=f.json("tags", "[]"),
        metadata=decode_metadata(h.get("metadata")),
        error=error,
        recoveries=f.number("recoveries", int) or 0,
        pending_dependencies=f.number("pending_dependencies", int) or 0,
    )
