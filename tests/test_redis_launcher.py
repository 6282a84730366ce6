"""taskmesh.server.RedisServer, the one redis-server launcher of the demo,
the tests and the benchmarks: free port, AOF, kill -9, SIGSTOP, restart on
the same port and data directory, cluster node, all by PID."""

from __future__ import annotations

import pytest
import redis

from taskmesh.server import FORBIDDEN_PORT, RedisServer


def test_a_crash_keeps_what_aof_fsynced_and_restarts_on_the_same_port():
    with RedisServer(appendonly=True, appendfsync="always") as server:
        port, first_pid = server.port, server.pid
        assert port != FORBIDDEN_PORT
        client = server.client()
        client.set("k", "v")
        assert int(client.info("server")["process_id"]) == first_pid
        client.close()
        server.restart(hard=True)  # kill -9, then start again
        assert server.port == port and server.pid != first_pid
        assert server.client().get("k") == b"v"


def test_without_aof_a_restart_starts_empty():
    with RedisServer() as server:
        server.client().set("k", "v")
        server.restart(hard=True)
        assert server.client().get("k") is None


def test_a_paused_server_answers_nothing_until_resumed():
    with RedisServer() as server:
        server.pause()
        slow = server.client(socket_timeout=0.5)
        with pytest.raises(redis.TimeoutError):
            slow.ping()
        server.resume()
        assert server.client(socket_timeout=5).ping()


def test_stop_then_start_keeps_port_and_directory():
    server = RedisServer(appendonly=True)
    try:
        server.start()
        port, directory = server.port, server.dir
        server.client().set("k", "v")
        server.stop()  # graceful: the AOF is complete
        assert not server.is_running()
        server.start()
        assert (server.port, server.dir) == (port, directory)
        assert server.client().get("k") == b"v"
    finally:
        server.cleanup()


def test_a_cluster_node_has_its_bus_port_free():
    with RedisServer(cluster=True) as node:
        assert node.port + 10000 <= 65535
        info = node.client().info("cluster")
        assert info["cluster_enabled"] == 1


def test_port_6379_is_refused():
    with pytest.raises(ValueError):
        RedisServer(FORBIDDEN_PORT)
