"""Shared fixtures: a private redis-server, per-test namespaces, managers and
real worker subprocesses.

The suite never touches a Redis on 6379: :class:`taskmesh.server.RedisServer`
starts its own ``redis-server`` (from PATH) on a free port with a private
data directory and stops it by PID. The class is reusable for chaos tests
(``restart``, ``kill``, ``pause``, AOF on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import redis

from taskmesh import TaskManager
# RedisServer, FORBIDDEN_PORT and stop_process: test modules import them from here.
from taskmesh.server import FORBIDDEN_PORT, RedisServer, free_port, stop_process  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent


# The one launcher (taskmesh/server.py): a private redis-server on a free
# port, AOF, cluster node or sentinel; stop, kill -9, SIGSTOP, restart.
_free_port = free_port


def signal_pid(proc: subprocess.Popen, sig: int) -> None:
    """Signals our own child by PID (never by name); one that already
    exited is not an error."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def child_env(drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment for a ``python -m taskmesh ...`` child: this tree first
    on PYTHONPATH (so the child imports the code under test, not the
    editable install), without the variables in ``drop`` (so nothing the
    test did not pass reaches it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for var in drop:
        env.pop(var, None)
    return env


@pytest.fixture
def small_bulk_redis() -> Iterator[RedisServer]:
    """A Redis that refuses any argument over 1 MB (proto-max-bulk-len): it
    drops the connection sending one (tests of outcomes Redis will not store)."""
    server = RedisServer(extra_args=["--proto-max-bulk-len", "1mb"])
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    # Safety net: code that forgets to pass a URL reaches the private server,
    # never the machine's Redis on 6379.
    saved = os.environ.get("TASKMESH_URL")
    os.environ["TASKMESH_URL"] = server.url
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop("TASKMESH_URL", None)
        else:
            os.environ["TASKMESH_URL"] = saved
        server.cleanup()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:16]}"


# ---- backends: one contract suite, run against a single Redis and a cluster -----------
#
# A module opts in with ``pytestmark = pytest.mark.all_backends``; its tests
# that use ``backend`` (directly or through ``tm`` / ``worker_factory``) then
# run once per entry of BACKENDS. ``@pytest.mark.single_backend`` keeps one
# test on the single server (it inspects raw keys there, say). Side channels
# the test tasks write to (stamp lists, gates) stay on ``redis_server``.

BACKENDS = ("redis", "cluster", "cluster-shards3")


@dataclass(frozen=True)
class Backend:
    name: str
    url: str
    manager_options: dict = field(default_factory=dict)

    def manager(self, namespace: str, **options) -> TaskManager:
        return TaskManager(self.url, namespace=namespace, **{**self.manager_options, **options})


def pytest_generate_tests(metafunc):
    if ("backend" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("all_backends") is not None
            and metafunc.definition.get_closest_marker("single_backend") is None):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def redis_cluster():
    """A real 3-master + 3-replica Redis Cluster, started on first use."""
    from tests.cluster import LocalCluster

    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def backend(request, redis_server: RedisServer) -> Backend:
    kind = getattr(request, "param", "redis")
    if kind == "redis":
        return Backend("redis", redis_server.url)
    cluster = request.getfixturevalue("redis_cluster")
    return Backend(kind, cluster.url, {"shards": 3} if kind == "cluster-shards3" else {})


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A raw client on the private server, for checking stored state."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def tm(backend: Backend, namespace: str) -> Iterator[TaskManager]:
    with backend.manager(namespace) as manager:
        yield manager


# ---- the dashboard: one real process per test module ---------------------------------

@pytest.fixture(scope="module")
def dash_ns() -> str:
    return f"dash{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def dash(redis_server: RedisServer, dash_ns: str, tmp_path_factory):
    """A ``taskmesh dashboard`` process on the module's namespace."""
    from tests.dashboard_helpers import DashboardProcess  # it imports this module

    with DashboardProcess(redis_server.url, dash_ns,
                          logpath=tmp_path_factory.mktemp("dash") / "dashboard.log") as proc:
        yield proc


@pytest.fixture
def dtm(redis_server: RedisServer, dash_ns: str) -> Iterator[TaskManager]:
    """A manager on the dashboard's namespace."""
    with TaskManager(redis_server.url, namespace=dash_ns) as manager:
        yield manager


# ---- worker subprocesses -----------------------------------------------------------

class WorkerProcess:
    """One ``python -m taskmesh worker`` subprocess."""

    def __init__(self, args: list[str], logpath: Path):
        self.args = args
        self.logpath = logpath
        self._logfile = open(logpath, "wb")
        env = child_env(drop=("TASKMESH_URL", "TASKMESH_NAMESPACE", "TASKMESH_SECRET"))
        env["PYTHONUNBUFFERED"] = "1"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self._logfile, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def log(self) -> str:
        if not self._logfile.closed:
            self._logfile.flush()
        try:
            return self.logpath.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float = 30.0) -> int:
        """Waits for exit and returns the exit code; fails the test (with the
        worker's log) if it does not exit in time."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} did not exit within {timeout}s; log:\n{self.log()}")

    def send_signal(self, sig: int) -> None:
        signal_pid(self.proc, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL."""
        code = stop_process(self.proc, timeout)
        self._logfile.close()
        return code

    def __repr__(self) -> str:
        return f"WorkerProcess(pid={self.pid}, rc={self.returncode})"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def worker_factory(request, backend: Backend, namespace: str, tmp_path: Path):
    """``worker_factory("--burst", "--concurrency", "1", namespace=..., url=...)``
    starts a real worker process (on the test's backend unless ``url`` is given); all are stopped at teardown (SIGTERM, then
    SIGKILL after 10 s). Their logs are printed when the test failed."""
    workers: list[WorkerProcess] = []

    def start(*flags: str, namespace: str = namespace, url: str | None = None,
              lease_timeout: float | None = 3.0, grace_period: float | None = 2.0) -> WorkerProcess:
        args = [sys.executable, "-m", "taskmesh", "worker",
                "--url", url or backend.url, "--namespace", namespace]
        if lease_timeout is not None and "--lease-timeout" not in flags:
            args += ["--lease-timeout", str(lease_timeout)]
        if grace_period is not None and "--grace-period" not in flags:
            args += ["--grace-period", str(grace_period)]
        args += [str(f) for f in flags]
        w = WorkerProcess(args, tmp_path / f"worker-{len(workers)}.log")
        workers.append(w)
        return w

    yield start

    for w in workers:
        w.terminate()
    for w in workers:
        w.stop(timeout=10)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for w in workers:
            print(f"\n===== worker {w.pid} (rc={w.returncode}) {' '.join(w.args[2:])}\n{w.log()}")


# ---- helpers used by several test modules --------------------------------------------

def namespace_keys(client: redis.Redis, namespace: str, pattern: str = "*") -> list[bytes]:
    return sorted(client.scan_iter(match=f"taskmesh:{{{namespace}}}:{pattern}", count=1000))


def namespace_snapshot(client: redis.Redis, namespace: str) -> dict[bytes, bytes | None]:
    """Every key of the namespace with its DUMPed value: equal snapshots mean
    nothing was written in between."""
    return {k: client.dump(k) for k in namespace_keys(client, namespace)}
