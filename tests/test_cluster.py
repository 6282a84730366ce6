"""Redis Cluster and Sentinel URLs (SPEC §14): parsing, errors, and the
real thing - a local 3+3 cluster and a master/replica/sentinel set-up,
including failovers by kill -9 while a producer, a worker process and a
subscriber are attached."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time

import pytest

from taskmesh import EventType, TaskManager, TaskmeshError
from taskmesh.connection import CONNECTION_ERRORS, parse_multi_host, resolve_url
from taskmesh.exceptions import TaskmeshConnectionError
from tests import chaos_tasks as ct
from tests import semantics_tasks as st
from tests import tasks
from tests.cluster import LocalCluster, LocalSentinel, _cluster_port
from tests.conftest import REPO_ROOT
from tests.helpers import wait_until

WAIT = 30.0


# ---- URLs --------------------------------------------------------------------------

def test_cluster_url_is_parsed_into_hosts_and_typed_options():
    target = parse_multi_host(
        "redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
        "/?read_from_replicas=false&socket_timeout=2.5&reinitialize_steps=7")
    assert target.kind == "cluster" and not target.tls
    assert target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (target.username, target.password) == ("user", "p@ss")
    assert target.options == {"read_from_replicas": False, "socket_timeout": 2.5,
                              "reinitialize_steps": 7}
    assert parse_multi_host("rediss+cluster://h:1").tls


def test_read_from_replicas_becomes_redis_pys_load_balancing_strategy():
    """The URL keeps redis-py's old option name; the client gets the new
    one, so it warns of nothing."""
    from redis.cluster import LoadBalancingStrategy

    from taskmesh.connection import _cluster_kwargs

    on = _cluster_kwargs(parse_multi_host("redis+cluster://h:1/?read_from_replicas=true"), {})
    off = _cluster_kwargs(parse_multi_host("redis+cluster://h:1/?read_from_replicas=false"), {})
    assert "read_from_replicas" not in on and "read_from_replicas" not in off
    assert on["load_balancing_strategy"] is LoadBalancingStrategy.ROUND_ROBIN
    assert "load_balancing_strategy" not in off


def test_sentinel_url_names_service_and_db():
    target = parse_multi_host("redis+sentinel://:pw@s1:26379,s2/mymaster/3")
    assert target.kind == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379))  # sentinel default port
    assert (target.service, target.db, target.password) == ("mymaster", 3, "pw")


@pytest.mark.parametrize("url", [
    "redis+cluster://",                        # no host
    "redis+cluster://h:notaport",
    "redis+cluster://h:1/3",                   # a cluster has db 0 only
    "redis+sentinel://h:26379",                # no service name
    "redis+sentinel://h:26379/svc/x",          # bad db
    "redis+cluster://h:1/?socket_timeout=abc",
])
def test_bad_multi_host_urls_are_value_errors_before_any_io(url):
    with pytest.raises(ValueError):
        resolve_url(url)
    with pytest.raises(ValueError):
        TaskManager(url)


def test_unreachable_cluster_is_a_clear_error_within_the_connect_timeout(redis_server):
    dead = f"127.0.0.1:{_cluster_port()}"
    started = time.monotonic()
    with pytest.raises(TaskmeshConnectionError, match="Redis Cluster") as info:
        TaskManager(f"redis+cluster://{dead}?socket_connect_timeout=2")
    assert time.monotonic() - started < 3.0
    assert isinstance(info.value, TaskmeshError) and isinstance(info.value, ConnectionError)
    # A plain Redis named as a cluster is refused just as clearly.
    with pytest.raises(TaskmeshConnectionError, match="Cluster mode is not enabled"):
        TaskManager(f"redis+cluster://127.0.0.1:{redis_server.port}")


def test_worker_on_an_unreachable_cluster_exits_with_the_error(worker_factory, namespace):
    w = worker_factory(url=f"redis+cluster://127.0.0.1:{_cluster_port()}?socket_connect_timeout=1")
    assert w.wait(20) != 0
    assert "TaskmeshConnectionError" in w.log()


# ---- the real cluster ------------------------------------------------------------------

def test_query_options_reach_the_cluster_client(redis_cluster, namespace):
    with TaskManager(redis_cluster.url + "/?reinitialize_steps=7&read_from_replicas=false",
                     namespace=namespace) as tm:
        assert tm._client.reinitialize_steps == 7
        assert tm.get_task_status(tm.register_task(tasks.add, 1, 1)).value == "queued"


def test_cli_metrics_and_events_over_a_cluster_url(redis_cluster, namespace, worker_factory):
    with TaskManager(redis_cluster.url, namespace=namespace) as tm:
        task_id = tm.register_task(tasks.add, 2, 2)
        assert worker_factory("--burst", url=redis_cluster.url).wait(WAIT) == 0
        assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 4
    out = subprocess.run(
        [sys.executable, "-m", "taskmesh", "metrics", "--json", "--url", redis_cluster.url,
         "--namespace", namespace], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"completed": 1' in out.stdout


def test_namespace_keys_share_one_slot_on_one_master(redis_cluster, namespace, worker_factory):
    with TaskManager(redis_cluster.url, namespace=namespace) as tm:
        ids = tm.register_many(tasks.add, [(i, i) for i in range(20)])
        assert worker_factory("--burst", url=redis_cluster.url).wait(WAIT) == 0
        assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [2 * i for i in range(20)]
        keys = list(tm._client.scan_iter(match=f"taskmesh:{{{namespace}}}:*", count=1000,
                                         target_nodes=tm._client.ALL_NODES))
        slots = {tm._client.keyslot(k) for k in keys}
        assert len(keys) > 20 and len(slots) == 1


# ---- failover -----------------------------------------------------------------------------

def _retry_connection(fn, *args, timeout: float = 30.0, **kwargs):
    """What SPEC §17 asks of producers during a failover: retry (safely,
    the task ids are caller-chosen)."""
    from taskmesh import ReplicationError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(*args, **kwargs)
        except (*CONNECTION_ERRORS, ReplicationError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _Collector:
    def __init__(self) -> None:
        self.completed: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, event) -> None:
        with self.lock:
            self.completed.add(event.task_id)


def _carry_on_after(kill, url, namespace, redis_server, worker_factory):
    """Producer, worker process and subscriber attached; ``kill()`` fails the
    master over; all three go on without a restart. Returns the counts."""
    marks = f"marks:{namespace}"
    seen = _Collector()
    with TaskManager(url, namespace=namespace) as tm:
        sub = tm.subscribe(EventType.TASK_COMPLETED, seen)
        worker = worker_factory("--concurrency", "4", url=url, lease_timeout=3.0)
        before = [tm.register_task(ct.sleeper, redis_server.url, marks, 0.3,
                                   task_id=f"before-{i}") for i in range(8)]
        wait_until(lambda: redis_server.client().llen(marks) >= 2, WAIT, what="work started")
        kill()
        _subscriber_hears_again(tm, seen.completed.__contains__)
        after = [_retry_connection(tm.register_task, ct.sleeper, redis_server.url, marks, 0.05,
                                   task_id=f"after-{i}") for i in range(8)]
        results = {i: _retry_connection(tm.wait_for_task_sync, i, timeout=WAIT)
                   for i in after}
        assert set(results.values()) == {worker.pid}  # the same worker process ran them
        wait_until(lambda: set(after) <= seen.completed, WAIT, what="subscriber saw them")
        statuses = {i: _retry_connection(tm.get_task_status, i).value for i in before}
        sub.close()
        assert worker.returncode is None
        worker.stop()  # while Redis is up: it stops at once then
    runs = [m.split()[0].decode() for m in redis_server.client().lrange(marks, 0, -1)]
    return statuses, runs


def test_sentinel_failover_producer_worker_subscriber_carry_on(
        redis_server, worker_factory, namespace):
    sentinel = LocalSentinel().start()
    try:
        statuses, runs = _carry_on_after(sentinel.kill_master_and_wait_promotion, sentinel.url,
                                         namespace, redis_server, worker_factory)
    finally:
        sentinel.cleanup()
    assert all(s in ("completed", "running", "queued") for s in statuses.values()), statuses
    assert {f"after-{i}" for i in range(8)} <= set(runs)


@pytest.mark.slow
def test_cluster_master_failover_producer_worker_subscriber_carry_on(
        redis_server, worker_factory, namespace):
    cluster = LocalCluster().start()
    try:
        from redis.crc import key_slot

        victim = cluster.node_for_slot(key_slot(f"taskmesh:{{{namespace}}}:seq".encode()))
        statuses, runs = _carry_on_after(lambda: cluster.kill_master(victim), cluster.url,
                                         namespace, redis_server, worker_factory)
    finally:
        cluster.cleanup()
    assert {f"after-{i}" for i in range(8)} <= set(runs)


def load_through_failover(url, kill, namespace, redis_server, worker_factory, *,
                          tasks_n=300, manager_options=None):
    """Two worker processes of concurrency 8 and a subscriber attached; 300
    tasks registered one by one (each retried on a connection or replication
    error, with its own task id); ``kill()`` after the 100th kills -9 a
    master (and brings a replica back for ``min_replicas=1``), the producer
    goes on at once. Returns the counts: registered, completed, ran twice
    (started more than once: an upper bound on completed twice), completed
    twice as the subscriber heard it, lost (record gone or never finished)."""
    from taskmesh.exceptions import TaskNotFoundError

    marks = f"marks:{namespace}"
    heard: dict[str, int] = {}
    lock = threading.Lock()

    def on_completed(event) -> None:
        with lock:
            heard[event.task_id] = heard.get(event.task_id, 0) + 1

    with TaskManager(url, namespace=namespace, **(manager_options or {})) as tm:
        sub = tm.subscribe(EventType.TASK_COMPLETED, on_completed)
        workers = [worker_factory("--concurrency", "8", url=url, lease_timeout=3.0)
                   for _ in range(2)]
        registered = []
        for n in range(tasks_n):
            if n == tasks_n // 3:
                kill()
            task_id = f"{namespace}-{n}"
            _retry_connection(tm.register_task, ct.sleeper, redis_server.url, marks, 0.02,
                              task_id=task_id)
            registered.append(task_id)

        def status(task_id):
            try:
                return _retry_connection(tm.get_task_status, task_id).value
            except TaskNotFoundError:
                return "lost"

        try:
            wait_until(lambda: all(status(i) in ("completed", "failed", "cancelled", "lost")
                                   for i in registered), 90,
                       interval=0.5, what="every task finished or lost")
        except AssertionError:
            pass
        statuses = {i: status(i) for i in registered}
        _subscriber_hears_again(tm, heard.__contains__)
        sub.close()
        assert all(w.returncode is None for w in workers), "a worker process died"
        for w in workers:  # while Redis is up: a worker stops at once then
            w.stop()
    runs: dict[str, int] = {}
    for m in redis_server.client().lrange(marks, 0, -1):
        task_id = m.split()[0].decode()
        runs[task_id] = runs.get(task_id, 0) + 1
    return {
        "registered": len(registered),
        "completed": sum(s == "completed" for s in statuses.values()),
        "ran_twice": sum(n > 1 for n in runs.values()),
        "completed_twice_heard": sum(n > 1 for n in heard.values()),
        "lost": sum(s != "completed" for s in statuses.values()),
        "not_completed": {i: s for i, s in statuses.items() if s != "completed"},
    }


def _subscriber_hears_again(tm, heard) -> None:
    """Live events published while a listener re-subscribes are lost by
    design (get_events replays them): probe until it hears again."""
    deadline = time.monotonic() + WAIT
    for n in itertools.count():
        probe = _retry_connection(tm.register_task, tasks.add, n, 0, task_id=f"probe-{n}")
        try:
            wait_until(lambda: heard(probe), 2.0, what="a probe's event")
            return
        except AssertionError:
            assert time.monotonic() < deadline, "the subscriber never heard again"


def failover_under_load(namespace, redis_server, worker_factory, *, tasks_n=300, shards=3,
                        manager_options=None):
    """kill -9 the master of the last shard under :func:`load_through_failover`;
    the killed node is restarted once its replica took over (it rejoins as
    a replica of its successor, so the shard has a replica again)."""
    from redis.crc import key_slot
    from taskmesh.sharding import ShardSet

    cluster = LocalCluster().start()
    rejoin: list[_Background] = []
    try:
        victim = cluster.node_for_slot(
            key_slot(ShardSet(namespace, shards).keys[shards - 1].seq.encode()))

        def kill() -> None:
            victim.kill()  # promotion happens while the producer goes on
            rejoin.append(_Background(_rejoin, cluster, victim))
            rejoin[0].start()

        counts = load_through_failover(
            cluster.url, kill, namespace, redis_server, worker_factory, tasks_n=tasks_n,
            manager_options={"shards": shards, **(manager_options or {})})
        for thread in rejoin:
            thread.finish()
        return counts
    finally:
        for thread in rejoin:
            thread.join(60)
        cluster.cleanup()


class _Background(threading.Thread):
    """A helper thread whose exception fails the test at join() instead of
    being printed and forgotten."""

    def __init__(self, target, *args) -> None:
        super().__init__(daemon=True)
        self._call = (target, args)
        self.error: BaseException | None = None

    def run(self) -> None:
        target, args = self._call
        try:
            target(*args)
        except BaseException as exc:  # re-raised by finish()
            self.error = exc

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        if self.error is not None:
            raise self.error


def _rejoin(cluster, victim) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(cluster.masters()) < 3:
        time.sleep(0.2)
    victim.start()


@pytest.mark.slow
@pytest.mark.parametrize("min_replicas", [0, 1])
def test_failover_of_one_shard_master_under_load(redis_server, worker_factory, namespace,
                                                 min_replicas):
    counts = failover_under_load(namespace, redis_server, worker_factory,
                                 manager_options={"min_replicas": min_replicas})
    print(f"\nfailover figures (cluster, shards=3, min_replicas={min_replicas}): {counts}")
    _check_failover_counts(counts, min_replicas)


def _check_failover_counts(counts, min_replicas) -> None:
    assert counts["registered"] == 300
    # Redis replicates asynchronously: writes acknowledged just before the
    # kill may be missing on the promoted replica (SPEC §17), nothing else.
    assert counts["completed"] + counts["lost"] == counts["registered"]
    assert counts["completed_twice_heard"] == 0
    # With min_replicas=1 every acknowledged write was on a replica first.
    assert counts["lost"] == 0 if min_replicas else counts["lost"] <= 10, counts["not_completed"]


@pytest.mark.slow
@pytest.mark.parametrize("min_replicas", [0, 1])
def test_sentinel_failover_under_load(redis_server, worker_factory, namespace, min_replicas):
    """The same load through a Sentinel failover: kill -9 of the monitored
    master, the replica promoted, the old master restarted (empty: no
    persistence) as the new master's replica."""
    sentinel = LocalSentinel().start()
    rejoin: list[_Background] = []
    try:
        def kill() -> None:
            sentinel.master.kill()  # promotion happens while the producer goes on
            rejoin.append(_Background(sentinel.rejoin_old_master))
            rejoin[0].start()

        counts = load_through_failover(sentinel.url, kill, namespace, redis_server,
                                       worker_factory,
                                       manager_options={"min_replicas": min_replicas})
        for thread in rejoin:
            thread.finish()
    finally:
        for thread in rejoin:
            thread.join(60)
        sentinel.cleanup()
    print(f"\nfailover figures (sentinel, min_replicas={min_replicas}): {counts}")
    _check_failover_counts(counts, min_replicas)


@pytest.mark.slow
@pytest.mark.parametrize("min_replicas", [0, 1])
def test_sentinel_failover_after_the_replica_fell_behind(redis_server, namespace, min_replicas):
    """What ``min_replicas`` is for. The replica stops reading (SIGSTOP, a
    stand-in for a slow or partitioned link) and falls 32 MB behind; 100
    more registrations are sent; the master is killed -9 and the resumed replica promoted. Without
    min_replicas the master acknowledged all 100 and the new master has
    none of them; with min_replicas=1 none was acknowledged
    (ReplicationError), so the producer knows to send them again."""
    from taskmesh import ReplicationError
    from taskmesh.exceptions import TaskNotFoundError

    sentinel = LocalSentinel().start()
    try:
        with TaskManager(sentinel.url, namespace=namespace, min_replicas=min_replicas) as tm:
            before = tm.register_many(tasks.add, [(i, i) for i in range(100)])
            sentinel.replica.pause()  # SIGSTOP
            # 32 MB for the stopped replica: more than the kernel's socket
            # buffers take, so what follows waits in the master's memory.
            master = sentinel.master.client()
            for i in range(4):
                master.set(f"tests:pad:{i}", b"x" * (8 << 20))
            try:
                acknowledged = tm.register_many(tasks.add, [(i, i) for i in range(100)])
            except ReplicationError:
                acknowledged = []
            sentinel.master.kill()
            sentinel.replica.resume()

            def missing(ids):
                def gone(task_id):
                    try:
                        _retry_connection(tm.get_task_status, task_id)
                        return False
                    except TaskNotFoundError:
                        return True
                return sum(gone(i) for i in ids)

            counts = {"registered_before": len(before), "lost_before": missing(before),
                      "acknowledged_while_behind": len(acknowledged),
                      "lost_of_acknowledged": missing(acknowledged)}
    finally:
        if sentinel.replica.is_running():
            sentinel.replica.resume()
        sentinel.cleanup()
    print(f"\nstalled-replica failover (sentinel, min_replicas={min_replicas}): {counts}")
    assert counts["lost_before"] == 0
    if min_replicas:
        assert counts["acknowledged_while_behind"] == 0
    else:
        assert counts["acknowledged_while_behind"] == 100
        assert counts["lost_of_acknowledged"] == 100


# ---- min_replicas -----------------------------------------------------------------------

def test_min_replicas_waits_for_replicas_and_says_when_too_few(redis_cluster, namespace):
    from taskmesh import ReplicationError

    with pytest.raises(ValueError):
        TaskManager(redis_cluster.url, namespace=namespace, min_replicas=-1)
    with TaskManager(redis_cluster.url, namespace=namespace, shards=3, min_replicas=1) as tm:
        ids = tm.register_many(tasks.add, [(i, i) for i in range(12)])  # every shard
        assert tm.cancel_task_sync(ids[0]) is True
        assert tm.update_task_progress(ids[1], 0.5) is True
        with TaskManager(redis_cluster.url, namespace=namespace) as other:
            assert other._min_replicas() == 1  # a namespace setting
        tm.set_min_replicas(2)  # each master has one replica
        started = time.monotonic()
        with pytest.raises(ReplicationError):
            tm.register_task(tasks.add, 1, 1, task_id=f"{namespace}-late")
        assert time.monotonic() - started < 5
        # The write itself happened on the master; registering again is safe.
        tm.set_min_replicas(0)
        assert tm.register_task(tasks.add, 1, 1, task_id=f"{namespace}-late") == f"{namespace}-late"


def test_min_replicas_on_a_redis_without_replicas_is_a_replication_error(redis_server, namespace):
    from taskmesh import ReplicationError

    with TaskManager(redis_server.url, namespace=namespace, min_replicas=1) as tm:
        with pytest.raises(ReplicationError, match="0 of 1"):
            tm.register_task(tasks.add, 1, 1)


def test_workers_follow_min_replicas_and_retry_reports_until_replicated(
        redis_cluster, namespace, worker_factory):
    with TaskManager(redis_cluster.url, namespace=namespace, shards=3, min_replicas=1) as tm:
        worker = worker_factory("--concurrency", "4", url=redis_cluster.url)
        ids = [tm.register_task(tasks.add, i, i) for i in range(9)]
        assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [2 * i for i in range(9)]
        # Runs long enough for the worker's heartbeat to see the new setting.
        late = tm.register_task(st.async_sleep, 2.5)
        tm.set_min_replicas(2)  # more than the cluster has: reports cannot be replicated
        wait_until(lambda: "not yet on 2 replica(s)" in worker.log(), WAIT,
                   what="the worker retrying a report")
        tm.set_min_replicas(0)
        assert tm.wait_for_task_sync(late, timeout=WAIT) == "slept"
        # The reporter is free again: later reports go through.
        assert tm.wait_for_task_sync(tm.register_task(tasks.add, 2, 2), timeout=WAIT) == 4


@pytest.mark.slow
def test_a_large_report_whose_master_fails_over_still_completes_its_task(namespace):
    """A result over 1 MiB (large enough that a dropped connection could be
    Redis refusing it) is being reported when the master that owns its slot
    is killed -9. The other masters answer PING, the owner does not: the
    report waits for the promoted replica and the task completes with its
    result. (With any node's PING taken as "Redis is up", the reporter took
    the drops for a refusal and failed the task with PayloadTooLargeError.)"""
    import asyncio

    from redis.crc import key_slot

    from taskmesh import TaskStatus, scripts
    from taskmesh.connection import async_client, sync_client
    from taskmesh.reporter import REFUSABLE_BYTES, Reporter

    cluster = LocalCluster().start()
    try:
        with TaskManager(cluster.url, namespace=namespace) as tm:
            task_id = tm.register_task(tasks.add, 1, 2)
            claimer = sync_client(cluster.url)
            claimed = scripts.run(claimer, tm.commands.claim(
                "w-test", ["default"], 1, 60_000, 2, 2)).tasks[0]
            claimer.close()
            result = tm.codec.encode_result(b"r" * (REFUSABLE_BYTES + 4096))
            report = tm.commands.report(claimed.id, claimed.token, "completed", result)
            cluster.node_for_slot(key_slot(report.keys[0].encode())).kill()

            async def main():
                client = async_client(cluster.url)
                reporter = Reporter(client)
                reporter.start()
                try:
                    return await asyncio.wait_for(reporter.submit(report), 60)
                finally:
                    await reporter.close(timeout=5)
                    await client.aclose()

            assert asyncio.run(main()) == "completed"
            assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
            assert tm.get_task_result(task_id) == b"r" * (REFUSABLE_BYTES + 4096)
    finally:
        cluster.cleanup()
