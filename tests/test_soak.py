"""Soak: 100,000 no-op tasks over 3 worker processes while one worker is
killed (kill -9) and replaced every few seconds; then every record expires
(``result_ttl=5``) and Redis memory returns to its baseline. Also one
recovery with the default 30 s lease, timed. Both are ``slow``:
``python -m pytest -q -m slow tests/test_soak.py`` (add ``-s`` for figures).

The soak uses a private Redis (no AOF: the faults here are worker faults),
so its memory figures are not disturbed by other tests.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from taskmesh import TaskManager, TaskStatus
from tests import chaos_tasks as ct
from tests.conftest import RedisServer, namespace_keys
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

N = 100_000
WORKERS = 3
LEASE = 2.0
KILL_EVERY_S = 3.0
RESULT_TTL = 5
SOAK_FUNC = "tests.chaos_tasks:soak_noop"
MEMORY_SLACK = 4 * 1024 * 1024  # bytes over the baseline tolerated after expiry


def _stats(client, namespace: str) -> dict[str, int]:
    raw = client.hgetall(f"taskmesh:{{{namespace}}}:stats")
    return {k.decode(): int(v) for k, v in raw.items()}


def _used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


class DoneCounter(threading.Thread):
    """Counts terminal transitions per task from the per-task ``done:<id>``
    channels (one message per terminal transition, published by the same
    script, the status first): the per-task proof of "completed once" once
    records expired."""

    def __init__(self, client, namespace: str):
        super().__init__(daemon=True, name="soak-done-counter")
        self.prefix = f"taskmesh:{{{namespace}}}:done:".encode()
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe(self.prefix + b"*")
        deadline = time.monotonic() + 10
        while True:  # subscribed before anything is registered
            msg = self.pubsub.get_message(timeout=1.0)
            if msg and msg["type"] == "psubscribe":
                break
            assert time.monotonic() < deadline, "psubscribe not confirmed"
        self.counts: Counter = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        n = len(self.prefix)
        while not self.halt.is_set():
            msg = self.pubsub.get_message(timeout=0.5)
            if msg and msg["type"] == "pmessage":
                # "<status>" or "<status>|<small outcome>" (waiters.py reads the rest)
                status = msg["data"].split(b"|", 1)[0].decode()
                self.counts[(msg["channel"][n:].decode(), status)] += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self.pubsub.close()


def _figures(name: str, **values) -> None:
    print(f"\nFIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@pytest.mark.timeout(900)
def test_soak_100k_tasks_with_worker_kills(namespace, worker_factory):
    server = RedisServer(appendonly=False).start()
    client = server.client()
    tm = TaskManager(server.url, namespace=namespace, result_ttl=RESULT_TTL, events_maxlen=1000)
    key = f"soak:{namespace}:execs"  # outside the namespace; deleted before measuring
    t0 = time.monotonic()
    workers: list = []
    done: DoneCounter | None = None
    try:
        # Warm-up (scripts loaded, counters and settings created), then the baseline.
        warm = tm.register_many(SOAK_FUNC, [(server.url, key)] * 20)
        assert worker_factory("--burst", url=server.url, lease_timeout=LEASE).wait(30) == 0
        assert {tm.get_task_status(i) for i in warm} == {TaskStatus.COMPLETED}
        wait_until(lambda: not namespace_keys(client, namespace, "task:*"), timeout=30,
                   interval=0.5, what="warm-up records expired")
        client.delete(key)
        baseline = _used_memory(client)
        base_stats = _stats(client, namespace)
        claims_key = f"taskmesh:{{{namespace}}}:claims"
        base_claims = int(client.get(claims_key) or 0)

        done = DoneCounter(client, namespace)
        done.start()
        started = time.monotonic()
        ids = tm.register_many(SOAK_FUNC, [(server.url, key)] * N)
        register_s = time.monotonic() - started
        assert len(set(ids)) == N

        def spawn():
            return worker_factory("--concurrency", "20", url=server.url, lease_timeout=LEASE)

        workers += [spawn() for _ in range(WORKERS)]
        drain_started = time.monotonic()
        kills, victim, next_kill = 0, 0, drain_started + KILL_EVERY_S
        peak = 0
        deadline = drain_started + 600
        while _stats(client, namespace).get("completed", 0) - base_stats.get("completed", 0) < N:
            assert time.monotonic() < deadline, f"not drained in 600 s: {tm.get_metrics()['tasks']}"
            for w in workers:
                assert w.returncode is None or w.returncode == -signal.SIGKILL, w.log()
            if time.monotonic() >= next_kill:
                workers[victim].kill()
                assert workers[victim].wait(10) == -signal.SIGKILL
                workers[victim] = spawn()
                kills += 1
                victim = (victim + 1) % WORKERS
                next_kill = time.monotonic() + KILL_EVERY_S
            peak = max(peak, _used_memory(client))
            time.sleep(0.2)
        drain_s = time.monotonic() - drain_started

        stats = _stats(client, namespace)
        delta = {k: stats.get(k, 0) - base_stats.get(k, 0) for k in stats}
        assert delta.get("registered") == N
        assert delta.get("completed") == N, delta  # each terminal transition counted once
        assert delta.get("failed", 0) == 0 and delta.get("cancelled", 0) == 0, delta
        recoveries = delta.get("recoveries", 0)

        # Per task: exactly one terminal transition, COMPLETED.
        time.sleep(0.5)
        done.stop()
        assert set(done.counts) == {(i, "completed") for i in ids}, "lost, or not COMPLETED"
        assert set(done.counts.values()) == {1}, "a task reached a terminal status twice"

        # Executions, per (task, attempt): fields per task = executions.
        execs: dict[str, dict[int, int]] = {}
        for field, count in client.hscan_iter(key, count=10_000):
            task_id, attempt = field.decode().rsplit(":", 1)
            execs.setdefault(task_id, {})[int(attempt)] = int(count)
        assert set(execs) == set(ids), "some task never ran (lost)"
        runs_twice = {i: a for i, a in execs.items() for n in a.values() if n != 1}
        assert not runs_twice, f"a claim ran twice: {list(runs_twice.items())[:5]}"
        executions = sum(len(a) for a in execs.values())
        reexecuted = sum(len(a) > 1 for a in execs.values())
        # A re-run needs a new claim, and (no failures, no hand-backs here)
        # every new claim is a lease recovery.
        assert sum(max(a) - 1 for a in execs.values()) <= recoveries
        assert all(len(a) <= max(a) <= 1 + 3 for a in execs.values())
        assert N <= executions <= N + recoveries, (executions, recoveries)
        # Counted at claim time (the claim-token counter), the identity is exact:
        # every claim beyond the first of each task is a lease recovery. (Counted
        # when the function runs it is a bound: a killed worker may have claimed
        # a task without starting it.)
        claims = int(client.get(claims_key) or 0) - base_claims
        assert claims - recoveries == N, (claims, recoveries)

        # Every record expires; the reaper prunes the done:* indexes.
        wait_until(lambda: not namespace_keys(client, namespace, "task:*"), timeout=120,
                   interval=1.0, what="every task record expired")
        expired_s = time.monotonic() - drain_started - drain_s
        wait_until(lambda: all(client.zcard(f"taskmesh:{{{namespace}}}:done:{s}") == 0
                               for s in ("completed", "failed", "cancelled")),
                   timeout=LEASE * 3, interval=0.2, what="done:* indexes pruned")
        assert tm.get_metrics()["tasks"]["completed"] == 0
        for w in workers:
            assert w.returncode is None, w.log()
            assert w.stop(timeout=20) == 0
        client.delete(key)
        leftover = sorted(k.decode().split(":", 2)[2] for k in namespace_keys(client, namespace))
        assert not any(k.startswith(("task:", "dependents:")) for k in leftover), leftover
        time.sleep(1)
        after = _used_memory(client)
        total_s = time.monotonic() - t0
        _figures(
            "soak", tasks=N, workers=WORKERS, kills=kills, register_s=f"{register_s:.1f}",
            register_per_s=f"{N / register_s:.0f}", drain_s=f"{drain_s:.1f}",
            drain_per_s=f"{N / drain_s:.0f}", executions=executions, recoveries=recoveries,
            executions_minus_recoveries=executions - recoveries, claims=claims,
            claims_minus_recoveries=claims - recoveries, reexecuted_tasks=reexecuted,
            lost=0, completed_twice=0, expiry_wait_s=f"{expired_s:.1f}",
            memory_baseline=baseline, memory_peak=peak, memory_after=after,
            memory_delta=after - baseline, total_s=f"{total_s:.1f}",
            leftover_keys=len(leftover))
        print("leftover keys:", leftover)
        assert after - baseline < MEMORY_SLACK, (baseline, peak, after, leftover)
        assert drain_s < 600
    finally:
        if done is not None and done.is_alive():
            done.stop()
        for w in workers:  # before their Redis goes away
            w.stop(timeout=10)
        tm.close()
        client.close()
        server.cleanup()


def test_recovery_time_with_the_default_lease(tm, rds, redis_server, namespace, worker_factory):
    """kill -9 with the default 30 s lease: the task is re-run after the
    lease plus at most one reaper tick (lease/3), i.e. within 40 s."""
    key = f"chaos:{namespace}:runs"
    a_id, b_id = f"a-{namespace}", f"b-{namespace}"
    a = worker_factory("--name", a_id, lease_timeout=None)  # the default lease (30 s)
    wait_until(lambda: a_id in {w["id"] for w in tm.get_metrics()["workers"]}, timeout=20)
    tid = tm.register_task(ct.sleeper, redis_server.url, key, 120.0, 0.1,
                           executor_type="thread_pool")
    wait_until(lambda: rds.llen(key) == 1, timeout=20, what="task started on A")
    b = worker_factory("--name", b_id, lease_timeout=None)
    wait_until(lambda: b_id in {w["id"] for w in tm.get_metrics()["workers"]}, timeout=20)
    claimed_at = float(rds.lindex(key, 0).split()[3])
    killed_at = time.time()
    a.kill()
    wait_until(lambda: tm.get_task_status(tid) is TaskStatus.COMPLETED, timeout=50,
               interval=0.1, what="recovered and completed on B")
    rerun_at = float(rds.lindex(key, 1).split()[3])
    recovery_s = rerun_at - killed_at
    info = tm.get_task(tid)
    assert info.recoveries == 1 and info.worker == b_id and tm.get_task_result(tid) == b.pid
    assert recovery_s <= 30 + 10 + 1.5, recovery_s
    _figures("default_lease_recovery", lease_timeout_s=30, recovery_s=f"{recovery_s:.1f}",
             since_claim_s=f"{rerun_at - claimed_at:.1f}")
