"""``min_replicas`` (SPEC §14, §17): a producer's state change returns only
once ``n`` replicas hold it.

Redis's ``WAIT n timeout`` counts the replicas that acknowledged every write
*of the connection it is sent on*, so each script call and its WAIT travel
together in one pipeline on one connection: of the single Redis (or the
Sentinel-named master), or of the cluster node that owns the call's slot.
Fewer than ``n`` acknowledgements within :data:`WAIT_MS` raise
:class:`~taskmesh.exceptions.ReplicationError`; the write itself has
happened (on the master) and is retried safely (registration with the same
``task_id`` is idempotent).

The setting lives in shard 0's config (``min_replicas``), last writer wins;
managers re-read it at most every :data:`REFRESH_S` seconds.
"""

from __future__ import annotations

from typing import Any, Sequence

import redis.cluster
from redis.exceptions import NoScriptError

from .exceptions import ReplicationError
from .scripts import Call

WAIT_MS = 2000
REFRESH_S = 1.0


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
        raws = _send(node, [calls[i] for i in indexes], replicas)
        for i, raw in zip(indexes, raws):
            out[i] = raw if isinstance(raw, Exception) else calls[i].parse(raw)
    return out


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
    acked = raws[-1]
    if isinstance(acked, Exception):
        raise acked
    if int(acked) < replicas:
        raise ReplicationError(
            f"only {int(acked)} of {replicas} replica(s) acknowledged the write within "
            f"{WAIT_MS / 1000:.0f} s")
    return list(raws[:-1])
