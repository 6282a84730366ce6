"""list_tasks (SPEC §11, §17): filters, cursors and one page's reads.

The walk over the indexes runs in ``lua/list.lua`` (one script call returns
the next matching ids in listing order); this module validates the query,
reads those records in one pipelined round trip, applies the metadata
filter (metadata has no index) and turns positions into opaque cursors.

A page costs about ``limit`` record reads: the script returns ids that
already match status, queue and tag, so records are read only for them,
plus one to learn whether anything follows (so a full last page still
ends with ``cursor=None``). Records that vanished (expired) between the
walk and the read are skipped: a page may then hold fewer than ``limit``.
With a metadata filter, non-matching records are read and dropped; the
page stops after :data:`READS_PER_LIMIT` x limit reads and returns a
cursor to go on from there. Likewise a filter the indexes serve sparsely (a
big tag rare in the statuses asked for) stops after :data:`MAX_STEPS` x
:data:`SCRIPT_BUDGET` index entries examined.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Iterable

from .keys import validate_queue_name
from .models import TaskInfo, TaskStatus
from .scripts import Cmd
from .store import Commands, ListStep, _str, task_info

MAX_LIMIT = 1000
SCRIPT_BUDGET = 10_000  # index entries one list.lua call examines at most
MAX_STEPS = 5  # list.lua calls one page makes at most (a sparse filter)
READS_PER_LIMIT = 10  # record reads a metadata-filtered page may spend per slot
CURSOR_VERSION = 1
PHASES = ("q", "p", "u", "f")

Position = tuple[str, str, str]  # (phase, score, task id), see lua/list.lua


@dataclass(frozen=True)
class Query:
    statuses: tuple[TaskStatus, ...]
    queue: str | None
    tag: str | None
    metadata: dict[str, str] | None  # key -> JSON form of the wanted value
    limit: int


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serializable: {exc}") from None


def build_query(status: TaskStatus | str | Iterable[TaskStatus | str] | None,
                queue: str | None, tag: str | None, metadata: dict[str, Any] | None,
                limit: int) -> Query:
    """Validates list_tasks' arguments (ValueError / TypeError, nothing read)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an int in 1..{MAX_LIMIT}, got {limit!r}")
    if status is None:
        statuses = tuple(TaskStatus)
    else:
        items = [status] if isinstance(status, str) else list(status)
        if not items:
            raise ValueError("status must be a TaskStatus, a list of them, or None")
        try:
            wanted = {TaskStatus(s) for s in items}
        except ValueError:
            raise ValueError(f"unknown status in {status!r}; use TaskStatus values") from None
        statuses = tuple(s for s in TaskStatus if s in wanted)
    if queue is not None:
        validate_queue_name(queue)
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise ValueError("tag must be a non-empty string")
    wanted_meta = None
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be a dict of exact key/value matches")
        wanted_meta = {str(k): _json(v, f"metadata[{k!r}]") for k, v in metadata.items()}
    return Query(statuses, queue, tag, wanted_meta, limit)


def encode_cursor(position: Position) -> str:
    raw = json.dumps([CURSOR_VERSION, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not cursor:
        raise ValueError("cursor must be a string returned by list_tasks")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, phase, score, task_id = json.loads(raw)
        float(score)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError(f"malformed cursor {cursor[:40]!r}") from None
    if (version != CURSOR_VERSION or phase not in PHASES or not isinstance(score, str)
            or not isinstance(task_id, str) or not task_id):
        raise ValueError(f"malformed cursor {cursor[:40]!r}")
    return phase, score, task_id


def _matches(info: TaskInfo, query: Query) -> bool:
    """Re-checks the read record: its status may have moved since the walk,
    and a stale index entry must not smuggle in a task without the tag."""
    if info.status not in query.statuses:
        return False
    if query.tag is not None and query.tag not in info.tags:
        return False
    if query.queue is not None and info.queue != query.queue:
        return False
    if query.metadata:
        for key, wanted in query.metadata.items():
            if key not in info.metadata or _json(info.metadata[key], key) != wanted:
                return False
    return True


class PageReader:
    """Builds one page with a caller-supplied way of running Calls, so the
    same rule serves any client (``run`` runs one Call, ``run_many`` a
    pipelined list of plain commands)."""

    def __init__(self, commands: Commands, run: Any, run_many: Any):
        self.commands = commands
        self.run = run
        self.run_many = run_many

    def page(self, query: Query, cursor: str | None) -> tuple[list[TaskInfo], str | None]:
        found, next_cursor = self.entries(query, cursor)
        return [info for _, info in found], next_cursor

    def entries(self, query: Query,
                cursor: str | None) -> tuple[list[tuple[Position, TaskInfo]], str | None]:
        """The page with each task's position (what a cursor after it would
        hold): sharding.list_merged resumes a shard after any of them."""
        position = decode_cursor(cursor)
        want = query.limit + 1  # one more than the page: is there a next page?
        found: list[tuple[Position, TaskInfo]] = []
        reads, max_reads = 0, READS_PER_LIMIT * query.limit + 100
        statuses = [s.value for s in query.statuses]
        for _ in range(MAX_STEPS):
            step: ListStep = self.run(self.commands.list_step(
                statuses, query.queue, query.tag, position, want - len(found), SCRIPT_BUDGET))
            reads += len(step.matches)
            for pos, info in zip(step.matches, self._read([m[2] for m in step.matches])):
                if info is not None and _matches(info, query):
                    found.append((pos, info))
                    if len(found) == want:
                        break
            if len(found) == want:
                return found[:-1], encode_cursor(found[-2][0])
            if step.resume is None:
                return found, None
            position = step.resume
            if reads >= max_reads:
                break
        # Budget spent (a sparse filter): a short page that resumes from the
        # last entry examined.
        assert position is not None
        return found, encode_cursor(position)

    def _read(self, ids: list[str]) -> list[TaskInfo | None]:
        if not ids:
            return []
        cmds: list[Cmd[Any]] = [Cmd(("HGETALL", self.commands.keys.task(i))) for i in ids]
        out: list[TaskInfo | None] = []
        for task_id, raw in zip(ids, self.run_many(cmds)):
            h = {_str(k): v for k, v in (raw or {}).items()}
            out.append(task_info(task_id, h) if h else None)
        return out
