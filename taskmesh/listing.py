"""list_tasks: filters, cursors and one page's reads (README *Finding tasks,
retrying one*; docs/design.md *Listing indexes*).

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
from typing import Any, Iterable, Sequence

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


_RANK = {"q": 1, "p": 2, "u": 3, "f": 4}


def _before(a: Position, b: Position) -> bool:
    """Does position ``a`` come before ``b`` in listing order? (The order of
    list.lua: phase, then score ascending for QUEUED phases and descending
    otherwise, then id bytewise the same way.)"""
    if a[0] != b[0]:
        return _RANK[a[0]] < _RANK[b[0]]
    ascending = a[0] in ("q", "p")
    sa, sb = float(a[1]), float(b[1])
    if sa != sb:
        return sa < sb if ascending else sa > sb
    ia, ib = a[2].encode(), b[2].encode()
    return ia < ib if ascending else ia > ib


class _Walk:
    """One shard's walk: its matches not yet taken, and where it resumes."""

    def __init__(self, commands: Commands, position: Position | None):
        self.commands = commands
        self.position = position  # resume point (last entry examined)
        self.matches: list[Position] = []
        self.done = False  # nothing after the matches held
        self.steps = 0


class PageReader:
    """Builds one page with a caller-supplied way of running Calls, so the
    same rule serves any client (``run`` runs one Call, ``run_many`` a
    pipelined list of plain commands).

    A sharded namespace (README *Sharded namespaces*) is one walk per shard, merged: positions
    are totally ordered, so every shard resumes from the same cursor and the
    page takes matches in global order. A shard whose walk is still behind
    (its budget spent without a match) bounds how far the page may go."""

    def __init__(self, commands: Commands | Sequence[Commands], run: Any, run_many: Any):
        self.shards = [commands] if isinstance(commands, Commands) else list(commands)
        self.run = run
        self.run_many = run_many

    def page(self, query: Query, cursor: str | None) -> tuple[list[TaskInfo], str | None]:
        start = decode_cursor(cursor)
        want = query.limit + 1  # one more than the page: is there a next page?
        walks = [_Walk(c, start) for c in self.shards]
        found: list[tuple[Position, TaskInfo]] = []
        reads, max_reads = 0, READS_PER_LIMIT * query.limit + 100
        statuses = [s.value for s in query.statuses]
        last: Position | None = None  # the last match taken, in global order
        while len(found) < want and reads < max_reads:
            for walk in walks:
                while not walk.matches and not walk.done and walk.steps < MAX_STEPS:
                    step: ListStep = self.run(walk.commands.list_step(
                        statuses, query.queue, query.tag, walk.position, want - len(found),
                        SCRIPT_BUDGET))
                    walk.steps += 1
                    walk.matches = list(step.matches)
                    if step.resume is None:
                        walk.done = True
                    else:
                        walk.position = step.resume
            stalled = [w.position for w in walks if not w.matches and not w.done
                       and w.position is not None]
            taken: list[tuple[Position, _Walk]] = []
            while len(taken) < want - len(found):
                live = [w for w in walks if w.matches]
                if not live:
                    break
                walk = min(live, key=lambda w: _Key(w.matches[0]))
                head = walk.matches[0]
                if any(_before(p, head) for p in stalled):
                    break  # a shard behind may still hold an earlier match
                taken.append((walk.matches.pop(0), walk))
            if not taken:
                break
            reads += len(taken)
            for (pos, _), info in zip(taken, self._read(taken)):
                last = pos
                if info is not None and _matches(info, query):
                    found.append((pos, info))
                    if len(found) == want:
                        break
        if len(found) == want:
            return [info for _, info in found[:-1]], encode_cursor(found[-2][0])
        tasks = [info for _, info in found]
        if all(w.done and not w.matches for w in walks):
            return tasks, None
        # A short page (a sparse filter spent its budget): resume after the
        # last match taken, or from the walk furthest behind.
        behind = [w.position for w in walks if w.position is not None and not w.done]
        resume = last or (min(behind, key=_Key) if behind else start)
        assert resume is not None
        return tasks, encode_cursor(resume)

    def _read(self, taken: list[tuple[Position, "_Walk"]]) -> list[TaskInfo | None]:
        cmds: list[Cmd[Any]] = [Cmd(("HGETALL", walk.commands.keys.task(pos[2])))
                                for pos, walk in taken]
        out: list[TaskInfo | None] = []
        for (pos, _), raw in zip(taken, self.run_many(cmds)):
            h = {_str(k): v for k, v in (raw or {}).items()}
            out.append(task_info(pos[2], h) if h else None)
        return out


class _Key:
    """Sort key for positions in listing order."""

    def __init__(self, position: Position):
        self.position = position

    def __lt__(self, other: "_Key") -> bool:
        return _before(self.position, other.position)
