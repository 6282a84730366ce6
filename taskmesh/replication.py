"""``min_replicas``: a producer's state change returns only once ``n``
replicas hold it (README *Redis Cluster, Sentinel and failover*).

Redis's ``WAIT n timeout`` counts the replicas that acknowledged every write
*of the connection it is sent on*, so each script call and its WAIT travel
together in one pipeline on one connection: of the single Redis (or the
Sentinel-named master), or of the cluster node that owns the call's slot.
Fewer than ``n`` acknowledgements within :data:`WAIT_MS` raise
:class:`~taskmesh.exceptions.ReplicationError`; the write itself has
happened (on the master) and is retried safely (registration with the same
``task_id`` is idempotent).

The setting lives in shard 0's config (``min_replicas``), last writer wins;
managers re-read it at most every :data:`REFRESH_S` seconds, workers at
every heartbeat. A worker sends its reports the same way
(:func:`reports_replicated`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Sequence

import redis.cluster
import redis.exceptions
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError

from .connection import CONNECTION_ERRORS
from .exceptions import ReplicationError
from .scripts import Call

log = logging.getLogger(__name__)

WAIT_MS = 2000
REFRESH_S = 1.0


class _Moved(Exception):
    """The node answered for a slot it no longer owns."""


def check_min_replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"min_replicas must be an int >= 0, got {value!r}")
    return value


def run_replicated(client: Any, calls: Sequence[Call[Any]], replicas: int) -> list[Any]:
    """Runs the calls (sync client), each group of one node followed by
    ``WAIT replicas 2000`` on the same connection; returns the parsed
    replies (exceptions in place, as scripts.run_batch does)."""
    groups: dict[Any, list[int]] = {}
    for i, call in enumerate(calls):
        groups.setdefault(_node_client(client, call), []).append(i)
    out: list[Any] = [None] * len(calls)
    for node, indexes in groups.items():
        try:
            raws = _send(node, [calls[i] for i in indexes], replicas)
        except _Moved as exc:
            # A failover moved the slot (the node we chose is a replica now):
            # refresh the slot map and let the caller retry, as it does any
            # connection error during a failover.
            _refresh_slots(client)
            raise redis.exceptions.ConnectionError(f"slot moved during a failover: {exc}")
        except CONNECTION_ERRORS:
            # The node is gone (killed, its replica being promoted): the node
            # was picked from the slot map by hand, so the client's own
            # refresh-on-error never runs; the caller's retry must see the
            # new master.
            _refresh_slots(client)
            raise
        for i, raw in zip(indexes, raws):
            out[i] = raw if isinstance(raw, Exception) else calls[i].parse(raw)
    return out


async def reports_replicated(client: Any, calls: list[Call[Any]], replicas: Callable[[], int],
                             stopping: Callable[[], bool]) -> list[Any]:
    """A worker's reports under min_replicas (the worker retries its report:
    README *Redis Cluster, Sentinel and failover*). Each try re-sends the
    reports with WAIT; a report that the
    master already holds answers 'stale' (fenced), so the first answer is
    kept for it, while one lost in a failover is applied again. ``replicas``
    is re-read before each try (the setting may change meanwhile); gives up,
    keeping the first answers, when it drops to 0 or the worker stops."""
    first: list[Any] | None = None
    delay = 0.2
    while True:
        wanted = replicas()
        if first is not None and (not wanted or stopping()):
            return first
        try:
            replies = await asyncio.to_thread(run_replicated, client, calls, max(wanted, 1))
        except ReplicationError as exc:
            first = first or exc.replies
            log.warning("%d report(s) not yet on %d replica(s): %s; retrying", len(calls),
                        wanted, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if first is None:
            return replies
        return [old if new == "stale" else new for old, new in zip(first, replies)]


def _refresh_slots(client: Any) -> None:
    if isinstance(client, redis.cluster.RedisCluster):
        try:
            client.nodes_manager.initialize()
        except CONNECTION_ERRORS:
            pass  # no node answers yet: the caller's next try refreshes again


def _node_client(client: Any, call: Call[Any]) -> Any:
    if isinstance(client, redis.cluster.RedisCluster):
        node = client.get_node_from_key(call.keys[0])  # type: ignore[no-untyped-call]
        return client.get_redis_connection(node)
    return client


def _send(node: Any, calls: Sequence[Call[Any]], replicas: int) -> list[Any]:
    for attempt in range(2):
        pipe = node.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command("EVALSHA", *call.evalsha_args)
        pipe.execute_command("WAIT", replicas, WAIT_MS)
        raws = pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(r, NoScriptError) for r in raws[:-1]):
            for source in {c.script.source for c in calls}:
                node.script_load(source)
            continue  # a call that answered NOSCRIPT did not run: send again
        break
    moved = [r for r in raws[:-1] if isinstance(r, (MovedError, AskError))]
    if moved or (isinstance(raws[-1], ResponseError) and "replica" in str(raws[-1])):
        raise _Moved(str(moved[0] if moved else raws[-1]))
    acked = raws[-1]
    if isinstance(acked, Exception):
        raise acked
    if int(acked) < replicas:
        error = ReplicationError(
            f"only {int(acked)} of {replicas} replica(s) acknowledged the write within "
            f"{WAIT_MS / 1000:.0f} s")
        error.replies = [r if isinstance(r, Exception) else c.parse(r)
                         for c, r in zip(calls, raws[:-1])]
        raise error
    return list(raws[:-1])
