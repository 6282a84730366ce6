"""Real local Redis Cluster and Sentinel set-ups for the test suite.

:class:`LocalCluster` starts 3 masters + 3 replicas (``redis-server
--cluster-enabled yes`` on free ports, never 6379), joins them with
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` and
waits for ``cluster_state:ok`` on every node. :class:`LocalSentinel` starts a
master, one replica and one sentinel. Both stop every process they started
by PID (through :class:`tests.conftest.RedisServer`).

Timeouts are short (node timeout 1.5 s, sentinel down-after 1 s) so a
failover test promotes a replica in a few seconds.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.conftest import RedisServer, _free_port

NODE_TIMEOUT_MS = 1500
# Replicas sync at once (the default waits 5 s for more replicas to arrive).
SYNC_AT_ONCE = ["--repl-diskless-sync-delay", "0"]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too; cluster
    nodes need port <= 55535."""
    while True:
        port = random.randint(20000, 45000)
        if port != 6379 and _port_free(port) and _port_free(port + 10000):
            return port


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def replicas_streaming(client: redis.Redis, expected: int, key: str = "tests:sync-probe") -> bool:
    """``expected`` replicas of the master behind ``client`` acknowledged a
    write made now (``WAIT``). A replica's own "master_link_status:up", and
    even "state=online" on the master, come before the master streams to
    it: after a diskless sync it holds new writes until the replica's first
    REPLCONF ACK (up to 1 s), and a kill -9 in that window loses them.
    ``key`` must live on this master (any name on a plain master)."""
    client.set(key, 1)
    acked = int(client.execute_command("WAIT", expected, 1000))
    client.delete(key)
    return acked >= expected


class LocalCluster:
    """3 masters + 3 replicas on 127.0.0.1."""

    def __init__(self, masters: int = 3, replicas_per_master: int = 1):
        self.count = masters * (1 + replicas_per_master)
        self.replicas_per_master = replicas_per_master
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{hosts}"

    def start(self) -> "LocalCluster":
        try:
            for _ in range(self.count):
                node = RedisServer(port=_cluster_port())
                node.extra_args = [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(Path(node.dir) / "nodes.conf"),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # A replica whose master just died may take over at once.
                    "--cluster-replica-validity-factor", "0",
                    *SYNC_AT_ONCE,
                ]
                node.start()
                self.nodes.append(node)
            create = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                      *[f"127.0.0.1:{n.port}" for n in self.nodes],
                      "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
            out = subprocess.run(create, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
            self.wait_ok()
            self.wait_replicas_synced()
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        def synced() -> bool:
            for node in self.nodes:
                if not node.is_running():
                    continue
                client = self.client(node)
                info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
                if info.get("role") == "master" and not replicas_streaming(
                        client, self.replicas_per_master, self._key_on(client)):
                    return False
            return True

        _wait(synced, timeout, "every replica in sync with its master")

    @staticmethod
    def _key_on(client: redis.Redis) -> str:
        """A key name whose slot this master serves."""
        from redis.crc import key_slot

        port = int(client.connection_pool.connection_kwargs["port"])
        ranges = [(start, end) for start, end, master, *_ in
                  client.execute_command("CLUSTER", "SLOTS") if int(master[1]) == port]
        for i in range(100_000):
            key = f"tests:sync-probe:{i}"
            if any(start <= key_slot(key.encode()) <= end for start, end in ranges):
                return key
        raise RuntimeError(f"no slot served by :{port}")

    def client(self, node: RedisServer) -> redis.Redis:
        return node.client(socket_connect_timeout=1, socket_timeout=2)

    def _state_ok(self, node: RedisServer) -> bool:
        c = self.client(node)
        try:
            info = c.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
            # Every node must also know every live node (gossip done).
            nodes = c.execute_command("CLUSTER", "NODES")
            nodes = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
            alive = sum(1 for n in self.nodes if n.is_running())
            return len([line for line in nodes.splitlines()
                        if line and "fail" not in line.split()[2]]) >= alive
        finally:
            c.close()

    def wait_ok(self, timeout: float = 30.0) -> None:
        _wait(lambda: all(self._state_ok(n) for n in self.nodes if n.is_running()),
              timeout, "cluster_state:ok on every node")

    def masters(self) -> list[RedisServer]:
        out = []
        for node in self.nodes:
            if not node.is_running():
                continue
            c = self.client(node)
            try:
                role = c.execute_command("ROLE")[0]
            finally:
                c.close()
            if (role.decode() if isinstance(role, bytes) else role) == "master":
                out.append(node)
        return out

    def node_for_slot(self, slot: int) -> RedisServer:
        """The running master that serves ``slot`` now."""
        by_port = {n.port: n for n in self.nodes}
        for node in self.nodes:
            if not node.is_running():
                continue
            c = self.client(node)
            try:
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        if by_port[port].is_running():
                            return by_port[port]
            finally:
                c.close()
        raise RuntimeError(f"no live master serves slot {slot}")

    def kill_master(self, node: RedisServer, timeout: float = 30.0) -> None:
        """kill -9 one master and wait until a replica has taken its slots."""
        node.kill()
        _wait(lambda: all(self._state_ok(n) for n in self.nodes if n.is_running())
              and len(self.masters()) == 3, timeout, "replica promotion after kill -9")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        self.nodes.clear()


class LocalSentinel:
    """A master, one replica and one sentinel watching service ``mymaster``."""

    service = "mymaster"

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinel = RedisServer()

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def start(self) -> "LocalSentinel":
        try:
            self.master.extra_args = list(SYNC_AT_ONCE)
            self.master.start()
            self.replica.extra_args = [*SYNC_AT_ONCE,
                                       "--replicaof", "127.0.0.1", str(self.master.port)]
            self.replica.start()
            _wait(lambda: replicas_streaming(self.master.client(), 1), 20, "replica in sync")
            conf = Path(self.sentinel.dir) / "sentinel.conf"
            conf.write_text(
                f"port 0\nbind 127.0.0.1\ndir {self.sentinel.dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.sentinel.port = _free_port()
            self.sentinel.extra_args = []
            self.sentinel._command = lambda: [  # type: ignore[method-assign]
                shutil.which("redis-server") or "redis-server", str(conf), "--sentinel",
                "--port", str(self.sentinel.port), "--daemonize", "no",
                "--logfile", str(self.sentinel.logfile)]
            self.sentinel.start()
            _wait(lambda: self.sentinel.client().execute_command(
                "SENTINEL", "REPLICAS", self.service), 20, "sentinel sees the replica")
        except BaseException:
            self.cleanup()
            raise
        return self

    def current_master_port(self) -> int:
        host, port = self.sentinel.client().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def kill_master_and_wait_promotion(self, timeout: float = 30.0) -> None:
        old = self.master.port
        self.master.kill()
        _wait(lambda: self.current_master_port() != old, timeout, "sentinel failover")
        _wait(lambda: self.replica.client().execute_command("ROLE")[0] == b"master",
              timeout, "replica promoted")

    def rejoin_old_master(self, timeout: float = 30.0) -> None:
        """Once Sentinel has promoted the replica, starts the killed master
        again on its port (empty: no persistence) as the new master's
        replica, and waits until it is in sync, so ``min_replicas=1`` can be
        met again."""
        old = self.master.port
        assert old is not None
        _wait(lambda: self.current_master_port() != old, timeout, "sentinel failover")
        # Restarted as the new master's replica at once (Sentinel would
        # convert it too, but only after its next INFO round, up to 10 s).
        # Priority 0: Sentinel never promotes it. While it loads its first
        # full sync it is an empty replica whose link to the master is
        # "down" only briefly, so Sentinel could pick it in a second failover
        # (a stall of the new master past down-after on a loaded machine)
        # and every other node would then resync from its empty dataset.
        self.master.extra_args = [*SYNC_AT_ONCE, "--replica-priority", "0",
                                  "--replicaof", "127.0.0.1", str(self.current_master_port())]
        self.master.start()
        _wait(lambda: replicas_streaming(self.replica.client(), 1), timeout,
              "the old master back as a replica, in sync")

    def cleanup(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.cleanup()
