"""What the dashboard reads, as plain JSON-ready dicts.

Everything goes through the TaskManager (``get_metrics``, ``list_tasks``,
``get_task``, ``get_events``) except three raw reads that have no public
call, made on the store's own key schema and never decoded with pickle:
a task's stored payload and result bytes (shown through
:mod:`taskmesh.dashboard.display`), its dependents (those still waiting, in
the ``dependents:<id>`` and ``remote_dependents:<id>`` sets, and those its
outcome already resolved, which the scripts keep in the record's
``resolved_dependents`` field until it expires), and the per-second ``rate:*``
outcome buckets behind the overview charts (kept 120 s by the scripts).
All of it is synchronous; the app runs it in a thread pool.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..exceptions import TaskNotFoundError
from ..manager import TaskManager
from ..models import Event, TaskInfo, TaskStatus
from .display import payload_view, result_view
from .hub import REPLAY_BATCH, event_json

CHART_SECONDS = 120  # the scripts keep rate:<second> buckets this long
TIMELINE_PAGES = 3   # replay-stream pages (1000 events each) read forward from creation
TIMELINE_BATCH = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(event_id: str | None) -> tuple[int, ...]:
    """Orders stream ids ("ms-seq", possibly shard-prefixed) numerically."""
    try:
        return tuple(int(p) for p in (event_id or "").replace(":", "-").split("-"))
    except ValueError:
        return ()


def _dependents(resolved: Any, waiting: Any, remote: Any) -> list[str]:
    """Every dependent of a task, sorted: the ids its outcome resolved (a
    JSON list), those still in its dependents set, and those in other shards
    (``"<shard>|<id>"`` members)."""
    ids = set(json.loads(resolved) if resolved else [])
    ids.update(_text(d) for d in waiting)
    ids.update(_text(m).partition("|")[2] for m in remote)
    return sorted(ids)


def task_json(info: TaskInfo) -> dict[str, Any]:
    """Every TaskInfo field, JSON-ready (status as its lower-case value)."""
    data = dataclasses.asdict(info)
    data["status"] = str(info.status)
    return data


class Reader:
    """The dashboard's reads for one TaskManager."""

    def __init__(self, tm: TaskManager, client: Any):
        self.tm = tm
        self.client = client
        self.keys = tm.keys

    # ---- overview ------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        metrics = self.tm.get_metrics()
        return {"metrics": metrics, "series": self.rate_series(float(metrics["timestamp"]))}

    def rate_series(self, now: float, seconds: int = CHART_SECONDS) -> list[dict[str, int]]:
        """Completed/failed/cancelled counts of each of the last ``seconds``
        whole seconds, oldest first (the current, partial second excluded)."""
        last = int(now) - 1
        pipe = self.client.pipeline(transaction=False)
        for sec in range(last - seconds + 1, last + 1):
            pipe.hgetall(self.keys.rate(sec))
        out = []
        for sec, raw in zip(range(last - seconds + 1, last + 1), pipe.execute()):
            counts = {_text(k): int(v) for k, v in (raw or {}).items()}
            out.append({"t": sec, "completed": counts.get("completed", 0),
                        "failed": counts.get("failed", 0),
                        "cancelled": counts.get("cancelled", 0)})
        return out

    # ---- tasks -----------------------------------------------------------------
    def list_tasks(self, status: list[TaskStatus] | None, queue: str | None, tag: str | None,
                   limit: int, cursor: str | None) -> dict[str, Any]:
        page = self.tm.list_tasks(status=status or None, queue=queue, tag=tag, limit=limit,
                                  cursor=cursor)
        return {"tasks": [task_json(t) for t in page.tasks], "cursor": page.cursor}

    def task(self, task_id: str) -> dict[str, Any]:
        """TaskInfo fields plus display strings of func/args/kwargs/result and
        every dependent, resolved or still waiting. TaskNotFoundError if unknown."""
        info = self.tm.get_task(task_id)
        keys = self.tm._cmds(task_id).keys  # the task's own shard
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.task(task_id), "payload", "result", "resolved_dependents")
        pipe.smembers(keys.dependents(task_id))
        pipe.smembers(keys.remote_dependents(task_id))
        (payload, result, resolved), waiting, remote = pipe.execute()
        view = payload_view(payload)
        data = task_json(info)
        data.update(
            func=view.func if payload else None,
            args=view.args,
            kwargs=view.kwargs,
            result=result_view(result) if info.status is TaskStatus.COMPLETED else None,
            dependents=_dependents(resolved, waiting, remote),
        )
        return data

    def exists(self, task_id: str) -> bool:
        try:
            self.tm.get_task_status(task_id)
        except TaskNotFoundError:
            return False
        return True

    def timeline(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """This task's events from the replay stream: read forward from its
        creation for a few pages, and (if that stopped short) from its
        start and its end, so the transitions always show. In a busy
        namespace events in between (progress of a long task) may be left
        out; the stream is capped anyway."""
        created = info.get("created_at")
        if not created:
            return []
        found: dict[str, Event] = {}
        reached = self._scan(info["id"], created, TIMELINE_PAGES, found)
        for moment in (info.get("started_at"), info.get("finished_at")):
            if moment and moment > reached:
                reached = max(reached, self._scan(info["id"], moment, 1, found))
        ordered = sorted(found.values(), key=lambda e: (e.timestamp, _id_key(e.id)))
        return [event_json(e) for e in ordered]

    def _scan(self, task_id: str, from_ts: float, pages: int, found: dict[str, Event]) -> float:
        """Collects ``task_id``'s events from time ``from_ts`` on; returns the
        timestamp the scan got to (infinity when it reached the end)."""
        since = f"{int(from_ts * 1000) - 1}-0"
        for _ in range(pages):
            batch = self.tm.get_events(since=since, count=TIMELINE_BATCH)
            for event in batch:
                if event.task_id == task_id:
                    found[event.id or f"{event.timestamp}"] = event
            if len(batch) < TIMELINE_BATCH or not batch[-1].id:
                return float("inf")
            since = batch[-1].id
        return batch[-1].timestamp

    # ---- events ------------------------------------------------------------------
    def recent_events(self, count: int = 100) -> list[dict[str, Any]]:
        return [event_json(e) for e in self.tm.get_events(count=count)]

    def replay(self, since: str) -> list[Event]:
        return self.tm.get_events(since=since, count=REPLAY_BATCH)
