"""Reliability and security defects found by an independent attack (issue 8).

Each test here failed before its fix. They run against the suite's private
redis-server and real ``taskmesh worker`` processes (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
import time

import pytest
import redis

from taskmesh import (
    CorruptRecordError,
    SerializationError,
    SignatureError,
    TaskCancelledError,
    ServerBusyError,
    StoreError,
    TaskFailedError,
    TaskManager,
    TaskStatus,
)
from taskmesh import scripts
from taskmesh.keys import Keys
from taskmesh.worker import WorkerOptions
from tests import bad_tasks, tasks
from tests.conftest import REPO_ROOT, RedisServer, namespace_snapshot
from tests.helpers import wait_until

WAIT = 20.0


# ---- 17: registration catches everything, stores nothing ------------------------------

@pytest.mark.parametrize(
    "call, part",
    [
        (lambda tm: tm.register_task(tasks.echo, bad_tasks.ExitOnPickle()), "args[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, bad_tasks.InterruptOnPickle()), "args[1]"),
        (lambda tm: tm.register_task(tasks.echo, kwargs={"x": bad_tasks.ExitOnPickle()}),
         "kwargs['x']"),
        (lambda tm: tm.register_many(tasks.echo, [1, bad_tasks.ExitOnPickle()]), "args[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, name="bad \udc80 name"), "name"),
        (lambda tm: tm.register_task(tasks.echo, 1, description="\udcff"), "description"),
        (lambda tm: tm.register_task(tasks.echo, 1, task_id="id-\ud800"), "task_id"),
        (lambda tm: tm.register_task(tasks.echo, 1, dependencies=["\udc80"]), "dependencies[0]"),
        (lambda tm: tm.register_task(tasks.echo, 1, metadata={"k": "\udc80"}), "metadata"),
    ],
    ids=["reduce-systemexit", "reduce-keyboardinterrupt", "kwarg-systemexit", "many",
         "surrogate-name", "surrogate-description", "surrogate-task-id",
         "surrogate-dependency", "surrogate-metadata"],
)
def test_registration_turns_everything_into_serialization_error(tm, rds, namespace, call, part):
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(SerializationError) as info:
        call(tm)
    assert info.value.part == part
    assert part in str(info.value)
    assert namespace_snapshot(rds, namespace) == before


@pytest.mark.all_backends  # the reliability contract on every backend (issue 10)
def test_surrogate_in_a_string_argument_round_trips(tm, worker_factory):
    """A lone surrogate or an int over 64 bits inside an *argument* is carried
    intact (that part alone pickled) also when func is a callable."""
    task_id = tm.register_task(tasks.echo, "a\udc80b", 2**70)
    worker_factory("--burst")
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == (("a\udc80b", 2**70), {})
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED


# ---- 2: results too large for the limit, or for Redis ---------------------------------

@pytest.mark.all_backends  # the reliability contract on every backend (issue 10)
def test_result_over_max_payload_bytes_fails_that_task(tm, worker_factory):
    worker = worker_factory("--burst", "--max-payload-bytes", "4000")
    big = tm.register_task("tests.bad_tasks:return_bytes", 10_000)
    small = tm.register_task("tests.bad_tasks:return_bytes", 10)
    assert tm.wait_for_task_sync(small, timeout=WAIT) == b"\0" * 10
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(big, timeout=WAIT)
    assert info.value.error.type == "PayloadTooLargeError"
    assert "result" in info.value.error.message and "4000" in info.value.error.message
    assert worker.wait() == 0


def test_outcome_redis_refuses_fails_that_task_and_holds_up_no_other(small_bulk_redis,
                                                                     namespace, worker_factory):
    """A 2 MB result passes the worker's limit but Redis drops the connection
    over it: that task ends FAILED (PayloadTooLargeError), and the 20 tasks
    reported alongside it are all reported too."""
    with TaskManager(small_bulk_redis.url, namespace=namespace) as tm:
        big = tm.register_task("tests.bad_tasks:return_bytes", 2 * 1024 * 1024)
        huge_error = tm.register_task("tests.bad_tasks:raise_huge_message", 2 * 1024 * 1024)
        others = tm.register_many("tests.bad_tasks:return_bytes", list(range(20)))
        worker = worker_factory("--concurrency", "30", "--max-payload-bytes", str(8 << 20),
                                url=small_bulk_redis.url)
        assert [tm.wait_for_task_sync(t, timeout=WAIT) for t in others] == [
            b"\0" * n for n in range(20)]
        with pytest.raises(TaskFailedError) as info:
            tm.wait_for_task_sync(big, timeout=WAIT)
        assert info.value.error.type == "PayloadTooLargeError"
        assert "result" in info.value.error.message
        with pytest.raises(TaskFailedError) as info:
            tm.wait_for_task_sync(huge_error, timeout=WAIT)
        assert info.value.error.type == "ValueError"  # message capped, so it fits
        assert len(info.value.error.message) < 100_000
        assert worker.returncode is None


def test_a_small_report_whose_node_is_gone_waits_and_is_not_taken_for_refused(tm, rds):
    """A cluster failover: the node owning a report's slot refuses
    connections while the others answer PING. Found by the slow cluster
    failover test: the reporter took the second drop for a refusal and
    replaced the task's result by a PayloadTooLargeError, which the new
    master then stored. Only a report large enough to be refused may be;
    this one waits for its node and completes the task."""
    import redis.asyncio
    from taskmesh.reporter import Reporter
    from taskmesh.store import Commands

    commands = Commands(tm.keys)
    task_id = tm.register_task(tasks.add, 1, 2)
    claimed = scripts.run(rds, commands.claim("w-test", ["default"], 1, 30_000, 2, 2)).tasks[0]
    drops = []

    async def node_gone_for_a_while(calls):
        if len(drops) < 3:
            drops.append(len(calls))
            raise redis.exceptions.ConnectionError(
                "Error 111 connecting to 127.0.0.1:1. Connection refused.")
        return None  # the node is back: the plain path sends it

    async def main():
        client = redis.asyncio.Redis.from_url(tm.url)
        reporter = Reporter(client, replicated=node_gone_for_a_while)
        reporter.start()
        try:
            return await reporter.submit(commands.report(
                claimed.id, claimed.token, "completed", tm.codec.encode_result(3)))
        finally:
            await reporter.close(timeout=5)
            await client.aclose()

    assert asyncio.run(main()) == "completed"
    assert drops == [1, 1, 1]
    assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
    assert tm.get_task_result(task_id) == 3


# ---- 3: OOM (maxmemory + noeviction) and BUSY are transient ---------------------------

@pytest.fixture
def private_redis():
    server = RedisServer(appendonly=True, extra_args=["--maxmemory-policy", "noeviction",
                                                      "--busy-reply-threshold", "100"])
    server.start()
    yield server
    server.cleanup()


def test_workers_ride_out_redis_oom_and_producers_get_a_typed_error(private_redis, namespace,
                                                                   worker_factory):
    """At maxmemory writes are refused: the running task's report waits, the
    worker lives, and everything goes through once memory is back."""
    rds = private_redis.client()
    with TaskManager(private_redis.url, namespace=namespace) as tm:
        running = tm.register_task("tests.reliability_tasks:sleep_then", 1.5,
                                   executor_type="thread_pool")
        queued = tm.register_task(tasks.add, 20, 22)
        worker = worker_factory("--concurrency", "1", url=private_redis.url)
        wait_until(lambda: tm.get_task_status(running) is TaskStatus.RUNNING, timeout=WAIT,
                   what="the task to start")
        rds.config_set("maxmemory", "1")  # every write is refused from now on
        try:
            with pytest.raises(ServerBusyError) as info:
                tm.register_task(tasks.add, 1, 2)
            assert info.value.reason == "oom" and isinstance(info.value, StoreError)
            with pytest.raises(ServerBusyError):
                tm.register_many(tasks.add, [(1, 2), (3, 4)])
            # The task finishes meanwhile: its report is refused and waits.
            # (claim.lua may still succeed: its first write, ZPOPMIN, frees
            # memory, and Redis then lets the script finish atomically.)
            wait_until(lambda: "cannot report 1 outcome(s): Redis is out of memory" in worker.log(),
                       timeout=WAIT, what="the reporter to back off")
            assert tm.get_task_status(running) is TaskStatus.RUNNING
            assert worker.returncode is None, worker.log()
        finally:
            rds.config_set("maxmemory", "0")
        assert tm.wait_for_task_sync(running, timeout=WAIT) == "done"
        assert tm.wait_for_task_sync(queued, timeout=WAIT) == 42
        assert worker.returncode is None
        log = worker.log()
        assert "Traceback" not in log, log
        # logged once per episode per component, not once per retry
        assert log.count("Redis is out of memory") <= 4, log
    rds.close()


def test_workers_ride_out_a_busy_script_and_producers_get_a_typed_error(private_redis, namespace,
                                                                       worker_factory):
    rds = private_redis.client()
    with TaskManager(private_redis.url, namespace=namespace) as tm:
        worker = worker_factory("--concurrency", "4", url=private_redis.url)
        first = tm.register_task(tasks.add, 1, 1)
        assert tm.wait_for_task_sync(first, timeout=WAIT) == 2
        # Another client's endless read-only script: Redis answers BUSY to all.
        blocker = threading.Thread(target=_run_endless_script, args=(private_redis,), daemon=True)
        blocker.start()
        try:
            wait_until(lambda: _is_busy(rds), timeout=WAIT, what="Redis to answer BUSY")
            with pytest.raises(ServerBusyError) as info:
                tm.register_task(tasks.add, 1, 2)
            assert info.value.reason == "busy"
            wait_until(lambda: "busy running a script" in worker.log(), timeout=WAIT,
                       what="the worker to notice BUSY")
            assert worker.returncode is None, worker.log()
        finally:
            wait_until(lambda: _script_kill(rds), timeout=WAIT, what="SCRIPT KILL")
            blocker.join(WAIT)
        later = tm.register_task(tasks.add, 2, 3)
        assert tm.wait_for_task_sync(later, timeout=WAIT) == 5
        assert worker.returncode is None
        assert "Traceback" not in worker.log(), worker.log()
    rds.close()


def _run_endless_script(server: RedisServer) -> None:
    client = server.client()
    try:
        client.eval("while true do end", 0)
    except redis.ResponseError:
        pass  # killed by SCRIPT KILL
    finally:
        client.close()


def _is_busy(client: redis.Redis) -> bool:
    try:
        client.get("x")
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def _script_kill(client: redis.Redis) -> bool:
    try:
        client.script_kill()
    except redis.ResponseError as exc:
        return "No scripts in execution" in str(exc)
    return True


# ---- 4: progress while Redis restarts never fails the task ----------------------------

@pytest.mark.parametrize("func, executor_type", [
    ("tests.reliability_tasks:progress_for", "thread_pool"),
    ("tests.reliability_tasks:progress_for", "sequential"),
    ("tests.reliability_tasks:progress_for", "async"),
    ("tests.reliability_tasks:async_progress_for", "async"),
])
def test_progress_during_a_redis_restart_never_fails_the_task(private_redis, namespace,
                                                              worker_factory, func,
                                                              executor_type):
    with TaskManager(private_redis.url, namespace=namespace) as tm:
        task_id = tm.register_task(func, 4.0, executor_type=executor_type)
        worker = worker_factory("--lease-timeout", "10", url=private_redis.url)
        wait_until(lambda: tm.get_task_progress(task_id)[0] > 0, timeout=WAIT,
                   what="the first progress update")
        private_redis.stop()
        time.sleep(1.0)  # the outage itself: longer than redis-py's quick retries
        private_redis.start()
        assert tm.wait_for_task_sync(task_id, timeout=WAIT) > 0
        assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
        assert worker.returncode is None


# ---- 6: thousands of waiters in one loop, bounded connections --------------------------

def test_two_thousand_concurrent_waiters_share_a_bounded_pool(tm, rds, worker_factory):
    n = 2000
    ids = tm.register_many(tasks.add, [(i, i) for i in range(n)])
    baseline = rds.info("clients")["connected_clients"]
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        probe = redis.Redis(connection_pool=rds.connection_pool)
        while not sampling.is_set():
            peak[0] = max(peak[0], probe.info("clients")["connected_clients"])
            time.sleep(0.01)

    async def main() -> list[int]:
        waits = [asyncio.ensure_future(tm.wait_for_task(t, timeout=60)) for t in ids]
        waiting = tm._state().waiter.waiting
        while waiting() < len(ids):  # every waiter is subscribed and parked
            await asyncio.sleep(0)
        assert not any(w.done() for w in waits)
        worker_factory("--burst", "--concurrency", "50")
        return await asyncio.gather(*waits)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        results = asyncio.run(main())
    finally:
        sampling.set()
        sampler.join(5)
    assert results == [2 * i for i in range(n)]
    # The waiters' loop used at most its pool (+1 pub/sub); the worker a handful.
    assert peak[0] - baseline <= 64 + 1 + 10, peak[0] - baseline


# ---- 7: a cascade never needs a running worker ----------------------------------------

@pytest.mark.all_backends  # the reliability contract on every backend (issue 10)
def test_cancelling_a_parent_of_1000_dependents_finishes_the_cascade_without_workers(tm):
    parent = tm.register_task(tasks.add, 1, 1, defer=True)
    dependents = tm.register_many(tasks.add, [(i, i) for i in range(1000)],
                                  dependencies=[parent])
    assert tm.cancel_task_sync(parent)
    statuses = [tm.get_task_status(d) for d in dependents]
    assert statuses.count(TaskStatus.CANCELLED) == 1000, Counter(statuses)
    assert sum(tm._client.llen(keys.resolve) for keys in tm._shards().keys) == 0
    error = tm.get_task_error(dependents[-1])
    assert error is not None and error.type == "DependencyFailedError"


def test_a_waiter_on_a_dependent_finishes_a_cascade_left_on_the_list(tm, rds):
    """The cascade is left half done (cancel.lua run straight, as another
    client would) and no worker runs: waiting on the last dependent finishes it."""
    parent = tm.register_task(tasks.add, 1, 1, defer=True)
    dependents = tm.register_many(tasks.add, [(i, i) for i in range(1000)],
                                  dependencies=[parent])
    assert scripts.run(rds, tm.commands.cancel(parent)) == 1
    assert rds.llen(Keys(tm.namespace).resolve) > 0  # the rest is left for later
    # The first call cancelled 200 dependents picked at random (SPOP): wait
    # on one it left WAITING (dependents[-1] was among them about one run in five).
    waiting = next(d for d in dependents if tm.get_task_status(d) is TaskStatus.WAITING)
    with pytest.raises(TaskCancelledError) as info:
        tm.wait_for_task_sync(waiting, timeout=10)
    assert info.value.error.type == "DependencyFailedError"
    assert rds.llen(Keys(tm.namespace).resolve) == 0


# ---- 12: no glob characters in names; no pattern crosses namespaces --------------------

@pytest.mark.parametrize("bad", ["a*", "a?", "a[bc]", "a]", "a\\\\b"])
def test_glob_characters_are_refused_in_namespaces_and_queue_names(redis_server, tm, bad):
    with pytest.raises(ValueError, match="glob"):
        TaskManager(redis_server.url, namespace=bad)
    with pytest.raises(ValueError, match="glob"):
        WorkerOptions(url=redis_server.url, namespace=bad)
    with pytest.raises(ValueError, match="glob"):
        WorkerOptions(url=redis_server.url, namespace="ok", queues=[bad])
    with pytest.raises(ValueError, match="glob"):
        tm.register_task(tasks.add, 1, 2, queue=bad)


def test_no_pattern_subscription_crosses_namespaces(redis_server, rds, namespace):
    """The waiters' pattern of one namespace hears its own tasks and none of a
    namespace whose name merely starts the same (or contains it)."""
    neighbours = [namespace + "x", namespace + "-b", "x" + namespace]
    pubsub = rds.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(Keys(namespace).done_channel("*"))
    wait_until(lambda: rds.pubsub_numpat() >= 1, what="the pattern subscription")
    try:
        managers = [TaskManager(redis_server.url, namespace=ns) for ns in neighbours]
        for other in managers:
            assert other.cancel_task_sync(other.register_task(tasks.add, 1, 1, defer=True))
        with TaskManager(redis_server.url, namespace=namespace) as own:
            mine = own.register_task(tasks.add, 1, 1, defer=True)
            assert own.cancel_task_sync(mine)
        heard = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=1.0)
            if msg:
                heard.append(msg["channel"].decode())
                if heard[-1].endswith(mine):
                    break
        assert heard == [Keys(namespace).done_channel(mine)], heard
    finally:
        for m in managers:
            m.close()
        pubsub.close()


# ---- 11: operator tools never unpickle by default ---------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TASKMESH_SECRET", None)
    return subprocess.run([sys.executable, "-m", "taskmesh", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, env=env)


def test_inspect_never_unpickles_a_result_unless_asked(tm, redis_server, namespace,
                                                       worker_factory, tmp_path):
    marker = tmp_path / "unpickled"
    task_id = tm.register_task("tests.reliability_tasks:return_touch_on_unpickle", str(marker))
    worker_factory("--burst")
    wait_until(lambda: tm.get_task_status(task_id) is TaskStatus.COMPLETED, timeout=WAIT,
               what="the task to complete")
    common = ["--url", redis_server.url, "--namespace", namespace]
    out = _cli("inspect", task_id, *common)
    assert out.returncode == 0, out.stderr
    assert re.search(r"<pickled, \d+ bytes>", out.stdout), out.stdout
    assert "[1, 2]" in out.stdout  # what decodes without unpickling is shown
    assert not marker.exists(), "inspect unpickled a result read from Redis"
    preview = tm.get_task_result(task_id, unpickle=False)
    assert repr(preview["marker"]).startswith("<pickled, ") and not marker.exists()
    out = _cli("inspect", "--unpickle", task_id, *common)
    assert out.returncode == 0, out.stderr
    assert marker.exists()  # the explicit flag does unpickle


# ---- 14: metrics use Redis TIME, not the reader's clock --------------------------------

@pytest.mark.all_backends  # the reliability contract on every backend (issue 10)
def test_metrics_do_not_depend_on_the_readers_clock(tm, worker_factory, monkeypatch):
    worker_factory("--concurrency", "4")
    ids = tm.register_many(tasks.add, [(i, i) for i in range(20)])
    for task_id in ids:
        tm.wait_for_task_sync(task_id, timeout=WAIT)
    honest = tm.get_metrics()
    assert honest["workers"] and honest["throughput_per_s"] > 0
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 120)  # the reader's clock is off
    skewed = tm.get_metrics()
    assert [w["id"] for w in skewed["workers"]] == [w["id"] for w in honest["workers"]]
    assert skewed["throughput_per_s"] > 0
    assert skewed["tasks"]["completed"] == honest["tasks"]["completed"] == 20


# ---- 13: corrupted records: typed errors naming the field; metrics skip and say so -----

@pytest.mark.parametrize("field", ["name", "queue", "progress_message", "status", "tags"])
def test_invalid_utf8_in_a_record_is_a_typed_error_naming_the_field(tm, rds, redis_server,
                                                                     namespace, field):
    task_id = tm.register_task(tasks.add, 1, 2, defer=True)
    rds.hset(Keys(namespace).task(task_id), field, b"\xff\xfe not utf-8")
    with pytest.raises(CorruptRecordError) as info:
        tm.get_task(task_id)
    assert info.value.field == field and task_id in str(info.value)
    assert isinstance(info.value, StoreError)
    if field in ("progress_message", "status"):
        with pytest.raises(CorruptRecordError, match=field):
            tm.get_task_progress(task_id)
    out = _cli("inspect", task_id, "--url", redis_server.url, "--namespace", namespace)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "CorruptRecordError" in lines[0] and field in lines[0], out.stderr


def test_garbage_number_in_a_record_is_a_typed_error(tm, rds, namespace):
    task_id = tm.register_task(tasks.add, 1, 2, defer=True)
    rds.hset(Keys(namespace).task(task_id), "priority", "high")
    with pytest.raises(CorruptRecordError, match="priority"):
        tm.get_task(task_id)


def test_invalid_utf8_in_an_event_is_a_typed_error(tm, rds, namespace):
    tm.register_task(tasks.add, 1, 2, defer=True)
    rds.xadd(Keys(namespace).events, {"type": "TASK_CREATED", "task_id": b"\xff\xfe",
                                      "ts": "1.0", "data": "{}"})
    with pytest.raises(CorruptRecordError) as info:
        tm.get_events()
    assert info.value.field == "task_id" and info.value.record.startswith("event ")


@pytest.mark.parametrize("fmt", ["--json", "--prometheus", None])
def test_metrics_skip_a_garbage_counter_and_say_so(tm, rds, redis_server, namespace, fmt):
    tm.register_task(tasks.add, 1, 2, defer=True)
    k = Keys(namespace)
    rds.hset(k.stats, "completed", "not-a-number")
    rds.hset(k.qcount("default"), "5", "garbage")
    rds.rpush(k.runtimes, "nan?")
    m = tm.get_metrics()
    assert m["totals"]["completed"] == 0 and m["totals"]["registered"] == 1
    assert any("stats.completed" in n for n in m["notes"]), m["notes"]
    args = ["metrics", "--url", redis_server.url, "--namespace", namespace]
    out = _cli(*args, *([fmt] if fmt else []))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "stats.completed" in out.stdout, out.stdout
    if fmt == "--json":
        assert json.loads(out.stdout)["notes"]


# ---- 15: a deadline passed while the loop was blocked still fails the attempt ----------

@pytest.mark.parametrize("executor_type", ["thread_pool", "sequential"])
def test_thread_task_past_its_timeout_fails_even_if_the_loop_was_blocked(tm, worker_factory,
                                                                         executor_type):
    """The thread task (claimed first: higher priority) runs 0.4 s against a
    0.1 s timeout while an async task blocks the worker's loop for 1.5 s, so
    the deadline timer cannot fire before the function has returned."""
    slow = tm.register_task("tests.reliability_tasks:sleep_then", 0.4, timeout=0.1,
                            executor_type=executor_type, priority=200)
    blocker = tm.register_task("tests.reliability_tasks:block_loop_for", 1.5, priority=100)
    worker_factory("--burst", "--concurrency", "2")
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(slow, timeout=WAIT)
    assert info.value.error.type == "TaskTimeoutError"
    assert tm.wait_for_task_sync(blocker, timeout=WAIT) == "blocked"
    assert tm.get_task(slow).started_at <= tm.get_task(blocker).started_at


# ---- 16: claim tokens stay unique across a Redis rollback -----------------------------

def test_claim_tokens_stay_unique_across_a_rollback(tm, rds, namespace):
    """Emulated power loss: every key of the namespace is put back as it was
    before a claim (the ``claims`` counter too). The next claim of the same
    task must get a different token, so the pre-crash holder is fenced off."""
    task_id = tm.register_task(tasks.add, 1, 2)
    before = namespace_snapshot(rds, namespace)
    first = scripts.run(rds, tm.commands.claim("worker-a", ["default"], 1, 30_000, 2, 0))
    [old_claim] = first.tasks
    for key, dumped in before.items():  # the rollback
        rds.delete(key)
        if dumped is not None:
            rds.restore(key, 0, dumped)
    for key in set(namespace_snapshot(rds, namespace)) - set(before):
        rds.delete(key)
    assert tm.get_task_status(task_id) is TaskStatus.QUEUED
    claimed_ms = int(old_claim.token.rpartition("-")[2] or 0)

    def redis_ms() -> int:
        sec, usec = rds.time()
        return sec * 1000 + usec // 1000

    wait_until(lambda: redis_ms() > claimed_ms, what="the Redis clock to move on")  # as a restart does
    second = scripts.run(rds, tm.commands.claim("worker-b", ["default"], 1, 30_000, 2, 0))
    [new_claim] = second.tasks
    assert new_claim.id == task_id and new_claim.token != old_claim.token
    late = tm.commands.report(task_id, old_claim.token, "completed", tm.codec.encode_result(3))
    assert scripts.run(rds, late) == "stale"  # the pre-crash holder is fenced off
    assert tm.get_task_status(task_id) is TaskStatus.RUNNING


# ---- a claim whose reply is lost is replayed, not repeated ------------------------------

def test_a_resent_claim_gets_its_tasks_back_instead_of_claiming_more(tm, rds):
    """Redis ran a claim and stopped before replying: the worker resends it
    (same claim id). It must get the tasks that claim took, not new ones,
    or those would sit RUNNING, unknown to any worker, until their lease ran
    out (seen as a recovery in test_chaos's outage test)."""
    ids = [tm.register_task(tasks.add, i, 1) for i in range(4)]
    claim = tm.commands.claim("worker-a", ["default"], 2, 30_000, 2, 0, "req-1")
    first = scripts.run(rds, claim)
    assert [t.id for t in first.tasks] == ids[:2]
    again = scripts.run(rds, claim)  # the same request, resent
    assert [(t.id, t.token, t.attempt) for t in again.tasks] == [
        (t.id, t.token, t.attempt) for t in first.tasks]
    assert again.more_queued and again.next_due_ms == 0  # the worker looks again at once
    assert [tm.get_task_status(i) for i in ids[2:]] == [TaskStatus.QUEUED] * 2
    done = tm.commands.report(ids[0], first.tasks[0].token, "completed", tm.codec.encode_result(1))
    assert scripts.run(rds, done) == "completed"
    assert [t.id for t in scripts.run(rds, claim).tasks] == [ids[1]]  # only what still runs
    fresh = scripts.run(rds, tm.commands.claim("worker-a", ["default"], 2, 30_000, 2, 0, "req-2"))
    assert [t.id for t in fresh.tasks] == ids[2:]


def test_a_claim_first_sent_as_fresh_is_replayed_when_resent(tm, rds):
    """The worker's first send of a request id says so (claim.lua then does
    not look for a claim to replay); its resend does not, and gets the
    tasks of the first send back."""
    ids = [tm.register_task(tasks.add, i, 1) for i in range(13)]
    first = scripts.run(rds, tm.commands.claim("worker-a", ["default"], 12, 30_000, 2, 0, "req-1",
                                               fresh=True))
    assert [t.id for t in first.tasks] == ids[:12]
    again = scripts.run(rds, tm.commands.claim("worker-a", ["default"], 12, 30_000, 2, 0, "req-1"))
    assert [(t.id, t.token) for t in again.tasks] == [(t.id, t.token) for t in first.tasks]
    assert [tm.get_task_status(i) for i in ids[12:]] == [TaskStatus.QUEUED]


# ---- 8 & 9: signatures bound to namespace, task id and attempt -------------------------

SECRET = "reliability-secret"


def test_signed_payload_copied_into_another_record_is_refused(redis_server, rds, namespace,
                                                              worker_factory, tmp_path):
    """A raw-Redis writer copies a signed payload into another task of the
    namespace, and into a same-id task of another namespace: neither runs."""
    other_ns = namespace + "-other"
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm, \
            TaskManager(redis_server.url, namespace=other_ns, secret=SECRET) as other:
        marker = tmp_path / "ran"
        original = tm.register_task("tests.tasks:record", redis_server.url, "rel:runs",
                                    str(marker), defer=True)
        victim = tm.register_task(tasks.add, 1, 1, defer=True)
        twin = other.register_task(tasks.add, 1, 1, task_id=original, defer=True)
        payload = rds.hget(Keys(namespace).task(original), "payload")
        rds.hset(Keys(namespace).task(victim), "payload", payload)
        rds.hset(Keys(other_ns).task(twin), "payload", payload)
        rds.delete("rel:runs")
        for manager, task_id in ((tm, victim), (other, twin)):
            manager.execute_task_sync(task_id)
        worker_factory("--burst", "--secret", SECRET)
        worker_factory("--burst", "--secret", SECRET, namespace=other_ns)
        for manager, task_id in ((tm, victim), (other, twin)):
            with pytest.raises(TaskFailedError) as info:
                manager.wait_for_task_sync(task_id, timeout=WAIT)
            assert info.value.error.type == "SignatureError"
        assert rds.llen("rel:runs") == 0  # the copied function never ran
        tm.execute_task_sync(original)  # positive control: in its own record it runs
        worker_factory("--burst", "--secret", SECRET)
        tm.wait_for_task_sync(original, timeout=WAIT)
        assert rds.llen("rel:runs") == 1
        rds.delete("rel:runs")


def test_signed_results_verify_only_for_their_own_task(redis_server, rds, namespace,
                                                       worker_factory):
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm:
        a = tm.register_task(tasks.add, 1, 1)
        b = tm.register_task(tasks.add, 2, 2)
        worker_factory("--burst", "--secret", SECRET)
        assert tm.wait_for_task_sync(a, timeout=WAIT) == 2
        assert tm.wait_for_task_sync(b, timeout=WAIT) == 4
        ka, kb = Keys(namespace).task(a), Keys(namespace).task(b)
        rds.hset(kb, "result", rds.hget(ka, "result"))  # A's signed result spliced into B
        with pytest.raises(SignatureError):
            tm.get_task_result(b)
        with pytest.raises(SignatureError):
            tm.wait_for_task_sync(b, timeout=WAIT)
        rds.hdel(kb, "result")  # completed, with no result at all
        with pytest.raises(SignatureError):
            tm.get_task_result(b)
        with pytest.raises(SignatureError):
            tm.wait_for_task_sync(b, timeout=WAIT)
        rds.hset(ka, "attempts", 2)  # the result of another attempt of the same task
        with pytest.raises(SignatureError):
            tm.get_task_result(a)


def test_retry_and_periodic_tasks_still_verify_with_a_secret(redis_server, namespace,
                                                             worker_factory):
    """retry_task copies a payload into a new id (re-signed for it); every
    periodic tick carries its schedule's payload (bound to the schedule)."""
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm:
        failed = tm.register_task(tasks.fail, "first run")
        worker_factory("--secret", SECRET)
        with pytest.raises(TaskFailedError):
            tm.wait_for_task_sync(failed, timeout=WAIT)
        again = tm.retry_task(failed)
        with pytest.raises(TaskFailedError) as info:
            tm.wait_for_task_sync(again, timeout=WAIT)
        assert info.value.error.type == "ValueError", info.value.error
        tm.add_periodic("tick", tasks.add, 20, 22, every=1)
        last = wait_until(lambda: next((p.last_task_id for p in tm.list_periodic()
                                        if p.last_task_id), None), timeout=WAIT,
                          what="a periodic tick")
        assert tm.wait_for_task_sync(last, timeout=WAIT) == 42
        tm.remove_periodic("tick")


# ---- 10: with a secret, control messages are signed; unsigned ones are refused ---------

def test_unsigned_control_messages_cannot_cancel_with_a_secret(redis_server, rds, namespace,
                                                               worker_factory):
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm:
        worker = worker_factory("--secret", SECRET, "--lease-timeout", "30")
        target = tm.register_task("tests.reliability_tasks:async_sleep_then", 2.0)
        wait_until(lambda: tm.get_task_status(target) is TaskStatus.RUNNING, timeout=WAIT,
                   what="the task to start")
        channel = Keys(namespace).control_channel
        wait_until(lambda: rds.pubsub_numsub(channel)[0][1] >= 1, timeout=WAIT,
                   what="the worker's control subscription")
        forged = json.dumps({"action": "cancel", "task_id": target, "sig": "00" * 32})
        for message in (json.dumps({"action": "cancel", "task_id": target}), forged):
            rds.publish(channel, message)  # anyone who may PUBLISH
        wait_until(lambda: worker.log().count("ignored an unsigned control message") >= 2,
                   timeout=WAIT, what="the worker to refuse both")
        assert tm.wait_for_task_sync(target, timeout=WAIT) == "done"
        # The producer's own cancellation (signed) still works, at once.
        victim = tm.register_task("tests.reliability_tasks:async_sleep_then", 60.0)
        wait_until(lambda: tm.get_task_status(victim) is TaskStatus.RUNNING, timeout=WAIT,
                   what="the second task to start")
        began = time.monotonic()
        assert tm.cancel_task_sync(victim)
        with pytest.raises(TaskCancelledError):
            tm.wait_for_task_sync(victim, timeout=WAIT)
        assert time.monotonic() - began < 5  # the signal, not the 10 s renewal round
