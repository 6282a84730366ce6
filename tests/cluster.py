"""Real local Redis Cluster and Sentinel set-ups for the test suite.

They live in :mod:`taskmesh.server` (the one redis-server launcher, also
used by the benchmarks): :class:`LocalCluster` starts 3 masters + 3
replicas (``redis-server --cluster-enabled yes`` on free ports, never 6379),
joins them with ``redis-cli --cluster create ... --cluster-replicas 1
--cluster-yes`` and waits for ``cluster_state:ok`` on every node;
:class:`LocalSentinel` starts a master, one replica and one sentinel. Both
stop every process they started by PID.

Timeouts are short (node timeout 1.5 s, sentinel down-after 1 s) so a
failover test promotes a replica in a few seconds.
"""

from __future__ import annotations

from taskmesh.server import (  # noqa: F401 (the names test modules use)
    CLUSTER_NODE_TIMEOUT_MS as NODE_TIMEOUT_MS,
    LocalCluster,
    LocalSentinel,
    cluster_port as _cluster_port,
    wait_for as _wait,
)
