"""Fault injection with real worker processes and a real Redis (SPEC §3, §7, §10).

Faults: worker kill -9 (and a poison pill that kills every worker running
it), SIGSTOP past the lease, Redis restart and hard crash with AOF on, Redis
unreachable for a few seconds, an async task blocking its worker's loop past
the lease, SIGTERM under load.

Every task appends ``"<task_id> <attempt> <pid> <time>"`` to a Redis list
when it starts (tests/chaos_tasks.py), so a test counts executions per task
and compares them with TASK_COMPLETED events and stored records: no task
lost, none completed twice, re-executions only where a lease was taken over
(recoveries) or a task was handed back.

Tests that restart or stop Redis use a private AOF server of their own
(``aof_server``), never the session one other tests share.

Each test prints a ``FIGURES`` line (run with ``-s`` to see them).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest

from taskmesh import EventType, TaskManager, TaskStatus, subscribe
from tests import chaos_tasks as ct
from tests.conftest import RedisServer
from tests.helpers import wait_until

LEASE = 2.0  # short leases keep recoveries quick
WAIT = 30.0
TERMINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


# ---- helpers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    task_id: str
    attempt: int
    pid: int
    at: float  # epoch seconds when the function started


def runs_key(namespace: str) -> str:
    return f"chaos:{namespace}:runs"


def executions(client, key: str) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for raw in client.lrange(key, 0, -1):
        task_id, attempt, pid, at = raw.decode().split()[:4]
        out.setdefault(task_id, []).append(Run(task_id, int(attempt), int(pid), float(at)))
    return out


def completed_events(tm: TaskManager) -> Counter:
    return Counter(e.task_id for e in tm.get_events(count=100_000)
                   if e.type is EventType.TASK_COMPLETED)


def worker_ids(tm: TaskManager) -> set[str]:
    return {w["id"] for w in tm.get_metrics()["workers"]}


def wait_workers(tm: TaskManager, *names: str, timeout: float = 20.0) -> None:
    wait_until(lambda: set(names) <= worker_ids(tm), timeout=timeout,
               what=f"workers {names} registered")


def wait_status(tm: TaskManager, ids: Iterable[str], statuses: set[TaskStatus],
                timeout: float = WAIT, what: str = "") -> None:
    ids = list(ids)
    wait_until(lambda: all(tm.get_task_status(i) in statuses for i in ids),
               timeout=timeout, interval=0.05,
               what=what or f"{len(ids)} task(s) in {sorted(statuses)}")


def check_exactly_once(tm: TaskManager, client, key: str, ids: list[str], *,
                       extra_runs: dict[str, int] | None = None) -> dict[str, int]:
    """Every task COMPLETED with exactly one TASK_COMPLETED event; each claim
    (task, attempt) ran at most once; a task ran more than once only as far as
    its lease was taken over (recoveries) or it was handed back
    (``extra_runs``). Returns the figures of the run."""
    runs = executions(client, key)
    done = completed_events(tm)
    statuses = {i: tm.get_task_status(i) for i in ids}
    lost = [i for i in ids if statuses[i] is not TaskStatus.COMPLETED]
    assert not lost, {i: statuses[i] for i in lost}
    assert {i: done[i] for i in ids if done[i] != 1} == {}, "completed more or less than once"
    twice = 0
    recoveries = 0
    for i in ids:
        info = tm.get_task(i)
        mine = runs.get(i, [])
        attempts = [r.attempt for r in mine]
        assert len(attempts) == len(set(attempts)), f"task {i}: one claim ran twice: {mine}"
        allowed = 1 + info.recoveries + (extra_runs or {}).get(i, 0)
        assert 1 <= len(mine) <= allowed, (i, mine, info)
        assert info.attempts >= max(attempts), (i, mine, info)  # a claim may die unstarted
        twice += len(mine) > 1
        recoveries += info.recoveries
    return {"registered": len(ids), "completed": len(ids) - len(lost),
            "completed_twice": sum(done[i] > 1 for i in ids), "executed_more_than_once": twice,
            "recoveries": recoveries, "lost": len(lost)}


def running_on_a_b_waiting(tm, rds, redis_server, namespace, worker_factory,
                           first_s: float, then_s: float):
    """Worker A (``a-<ns>``) runs a sleeper task (``first_s`` on its first
    attempt, ``then_s`` on later ones) and worker B (``b-<ns>``) is up and
    idle, ready to take it over: returns (a, b, task id)."""
    key = runs_key(namespace)
    a = worker_factory("--name", f"a-{namespace}", lease_timeout=LEASE)
    wait_workers(tm, f"a-{namespace}")
    tid = tm.register_task(ct.sleeper, redis_server.url, key, first_s, then_s,
                           executor_type="thread_pool")
    wait_until(lambda: tid in executions(rds, key), what="task started on A")
    b = worker_factory("--name", f"b-{namespace}", lease_timeout=LEASE)
    wait_workers(tm, f"b-{namespace}")
    return a, b, tid


def figures(name: str, **values) -> None:
    print(f"\nFIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    """A private Redis with AOF (appendfsync always) this test may restart,
    stop or kill; the session server is shared and never touched."""
    server = RedisServer(appendonly=True, appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def aof_tm(aof_server: RedisServer, namespace: str) -> Iterator[TaskManager]:
    with TaskManager(aof_server.url, namespace=namespace) as manager:
        yield manager


# ---- 1. kill -9 ----------------------------------------------------------------------------

def test_kill9_mid_task_is_recovered_by_the_survivor(tm, rds, redis_server, namespace,
                                                     worker_factory):
    key = runs_key(namespace)
    a_id, b_id = f"a-{namespace}", f"b-{namespace}"
    # Long on the first attempt (it is killed anyway), short once recovered.
    a, b, tid = running_on_a_b_waiting(tm, rds, redis_server, namespace, worker_factory,
                                       60.0, 0.2)
    assert tm.get_task(tid).worker == a_id
    assert tm.get_task_status(tid) is TaskStatus.RUNNING

    killed_at = time.time()
    a.kill()
    assert a.wait(10) == -signal.SIGKILL
    wait_status(tm, [tid], {TaskStatus.COMPLETED}, timeout=LEASE * 2 + 15)
    completed_at = time.time()

    runs = executions(rds, key)[tid]
    assert [(r.attempt, r.pid) for r in runs] == [(1, a.pid), (2, b.pid)]
    info = tm.get_task(tid)
    assert info.recoveries == 1 and info.attempts == 2 and info.worker == b_id
    assert tm.get_task_result(tid) == b.pid
    assert tm.get_metrics()["recoveries"] == 1
    assert completed_events(tm)[tid] == 1
    requeued = [e for e in tm.get_events(count=1000)
                if e.task_id == tid and e.type is EventType.TASK_QUEUED]
    assert len(requeued) == 1
    recovery_s = runs[1].at - killed_at
    # lease (2 s) + at most one reaper tick (lease/3) + claim latency
    assert recovery_s < LEASE * 4 / 3 + 1.5, recovery_s
    figures("kill9", lease_timeout_s=LEASE, recovery_s=f"{recovery_s:.2f}",
            requeued_after_s=f"{requeued[0].timestamp - killed_at:.2f}",
            completed_after_s=f"{completed_at - killed_at:.2f}", registered=1, completed=1,
            executed_twice=1, lost=0, recoveries=info.recoveries)


def test_poison_pill_fails_after_three_recoveries(tm, rds, redis_server, namespace,
                                                  worker_factory):
    """A task that SIGKILLs every worker running it: recovered 3 times, then
    the fourth loss ends it FAILED with WorkerLostError; the worker running
    at that point survives and goes on."""
    key = runs_key(namespace)
    tid = tm.register_task(ct.poison, redis_server.url, key, executor_type="thread_pool")
    worker = worker_factory(lease_timeout=LEASE)
    deaths = []
    started = time.monotonic()
    deadline = started + 60
    while tm.get_task_status(tid) not in TERMINAL:
        assert time.monotonic() < deadline, f"still {tm.get_task_status(tid)} after 60 s"
        if worker.returncode is not None:
            deaths.append(worker.returncode)
            assert len(deaths) <= 4, "a worker ran the task after its fourth loss"
            worker = worker_factory(lease_timeout=LEASE)  # a replacement, as a supervisor would
        time.sleep(0.05)
    elapsed = time.monotonic() - started

    assert deaths == [-signal.SIGKILL] * 4
    info = tm.get_task(tid)
    assert info.status is TaskStatus.FAILED
    assert info.recoveries == 3 and info.attempts == 4
    error = tm.get_task_error(tid)
    assert error is not None and error.type == "WorkerLostError", error
    assert "was alive" not in error.message  # dead workers never renewed late
    runs = executions(rds, key)[tid]
    assert [r.attempt for r in runs] == [1, 2, 3, 4]
    assert len({r.pid for r in runs}) == 4
    assert tm.get_metrics()["recoveries"] == 3
    assert [e.type for e in tm.get_events(count=1000) if e.task_id == tid].count(
        EventType.TASK_FAILED) == 1

    # No worker loops on it: the survivor stays up and runs other work.
    after = tm.register_task(ct.quick, redis_server.url, key, "after")
    wait_status(tm, [after], {TaskStatus.COMPLETED})
    assert tm.get_task_result(after) == "after"
    time.sleep(LEASE)
    assert worker.returncode is None, worker.log()
    assert tm.get_task_status(tid) is TaskStatus.FAILED
    assert len(executions(rds, key)[tid]) == 4
    figures("poison_pill", deaths=len(deaths), recoveries=info.recoveries,
            seconds_to_failed=f"{elapsed:.1f}")


# ---- 2. SIGSTOP past the lease ---------------------------------------------------------------

def test_sigstop_past_lease_late_completion_is_discarded(tm, rds, redis_server, namespace,
                                                         worker_factory):
    key = runs_key(namespace)
    a_id, b_id = f"a-{namespace}", f"b-{namespace}"
    # 8 s on A (frozen meanwhile), 1 s on the worker that takes it over.
    a, b, tid = running_on_a_b_waiting(tm, rds, redis_server, namespace, worker_factory,
                                       8.0, 1.0)
    assert tm.get_task_status(tid) is TaskStatus.RUNNING and tm.get_task(tid).worker == a_id

    a.send_signal(signal.SIGSTOP)
    try:
        wait_status(tm, [tid], {TaskStatus.COMPLETED}, timeout=LEASE * 2 + 15)
        assert tm.get_task(tid).worker == b_id
    finally:
        a.send_signal(signal.SIGCONT)

    # A wakes up, its function returns, and its report is fenced off.
    wait_until(lambda: any("discarded" in line and tid in line for line in a.log().splitlines()),
               timeout=15, what="A's late completion discarded")
    time.sleep(0.5)
    runs = executions(rds, key)[tid]
    assert [(r.attempt, r.pid) for r in runs] == [(1, a.pid), (2, b.pid)]
    assert completed_events(tm)[tid] == 1
    assert tm.get_task_result(tid) == b.pid  # B's result, not A's
    info = tm.get_task(tid)
    assert info.status is TaskStatus.COMPLETED and info.recoveries == 1
    assert int(rds.hget(f"taskmesh:{{{namespace}}}:stats", "completed")) == 1

    # A carries on: with B gone, A runs new work.
    assert b.stop() == 0
    assert a.returncode is None, a.log()
    nxt = tm.register_task(ct.quick, redis_server.url, key, "next")
    wait_status(tm, [nxt], {TaskStatus.COMPLETED})
    assert tm.get_task(nxt).worker == a_id and tm.get_task_result(nxt) == "next"
    assert a_id in worker_ids(tm)
    figures("sigstop", registered=2, completed=2, completed_twice=0, executed_twice=1, lost=0,
            recoveries=info.recoveries)


# ---- 3. Redis restart with AOF ------------------------------------------------------------------

RETRY_DELAY = 6.0


def _stage_every_status(tm: TaskManager, client, url: str, key: str) -> dict[str, list[str]]:
    """Leaves tasks SCHEDULED, RUNNING, QUEUED, PENDING and WAITING, with both
    workers' slots (2 x 2) full so nothing queued moves."""
    flaky = tm.register_task(ct.flaky, url, key, max_retries=1, retry_delay=RETRY_DELAY,
                             executor_type="thread_pool")
    wait_status(tm, [flaky], {TaskStatus.SCHEDULED}, timeout=15)
    running = [tm.register_task(ct.sleeper, url, key, 2.5, executor_type="thread_pool")
               for _ in range(4)]
    wait_status(tm, running, {TaskStatus.RUNNING}, timeout=15)
    queued = [tm.register_task(ct.quick, url, key, n) for n in range(5)]
    deferred = tm.register_task(ct.quick, url, key, "deferred", defer=True)
    waiting = [tm.register_task(ct.quick, url, key, "w1", dependencies=[deferred]),
               tm.register_task(ct.quick, url, key, "w2", dependencies=[queued[0], deferred])]
    staged = {"scheduled": [flaky], "running": running, "queued": queued,
              "pending": [deferred], "waiting": waiting}
    for status, ids in staged.items():
        assert {tm.get_task_status(i) for i in ids} == {TaskStatus(status)}, status
    return staged


def test_redis_restart_and_crash_with_aof_lose_nothing(aof_server, aof_tm, namespace,
                                                       worker_factory):
    tm, url = aof_tm, aof_server.url
    client = aof_server.client()
    key = runs_key(namespace)
    received: list[tuple[float, object]] = []
    sub = subscribe(None, lambda e: received.append((time.monotonic(), e)), url=url,
                    namespace=namespace)
    names = [f"w1-{namespace}", f"w2-{namespace}"]
    workers = [worker_factory("--name", n, "--concurrency", "2", url=url, lease_timeout=LEASE)
               for n in names]
    pids = [w.pid for w in workers]
    report = {}
    try:
        wait_workers(tm, *names)
        all_ids: list[str] = []
        for hard in (False, True):
            phase = "crash" if hard else "restart"
            staged = _stage_every_status(tm, client, url, key)
            ids = [i for group in staged.values() for i in group]
            all_ids += ids
            began = time.monotonic()
            aof_server.restart(hard=hard)
            back = time.monotonic()
            # Everything is still there, in the status it had (or further on).
            assert tm.get_task_status(staged["pending"][0]) is TaskStatus.PENDING
            assert {tm.get_task_status(i) for i in staged["waiting"]} == {TaskStatus.WAITING}
            assert tm.get_task_status(staged["scheduled"][0]) is TaskStatus.SCHEDULED
            for i in staged["queued"] + staged["running"]:
                assert tm.get_task_status(i) in (TaskStatus.QUEUED, TaskStatus.RUNNING,
                                                 TaskStatus.COMPLETED)
            assert tm.execute_task_sync(staged["pending"][0]) is None
            wait_status(tm, ids, {TaskStatus.COMPLETED}, timeout=RETRY_DELAY + 25,
                        what=f"every task of the {phase} phase completed")
            flaky = staged["scheduled"][0]
            assert [r.attempt for r in executions(client, key)[flaky]] == [1, 2]
            fig = check_exactly_once(tm, client, key, ids,
                                     extra_runs={flaky: 1})  # its failed first attempt
            # The same worker processes finished the work, reconnected by themselves.
            assert [w.returncode for w in workers] == [None, None], [w.log() for w in workers]
            assert [w.pid for w in workers] == pids
            assert {tm.get_task(i).worker for i in ids} <= set(names)
            wait_workers(tm, *names)
            # The subscriber reconnected: it sees events published after the restart.
            probe = tm.register_task(ct.quick, url, key, f"probe-{phase}")
            wait_until(lambda p=probe: any(e.task_id == p and e.type is EventType.TASK_COMPLETED
                                           for _, e in received), timeout=20,
                       what=f"subscriber sees the probe after the {phase}")
            all_ids.append(probe)
            after = {e.task_id for t, e in received
                     if t > back and e.type is EventType.TASK_COMPLETED}
            report[phase] = dict(fig, down_s=f"{back - began:.2f}",
                                 completions_seen_live_after=len(after & set(ids)))
        assert all(tm.get_task_status(i) is TaskStatus.COMPLETED for i in all_ids)
    finally:
        sub.close()
        client.close()
    for phase, fig in report.items():
        figures(f"redis_{phase}", **fig)


@pytest.mark.parametrize("hard", [False, True], ids=["restart", "crash"])
def test_producer_api_right_after_redis_restart(aof_server, aof_tm, namespace, worker_factory,
                                                hard):
    """A long-lived TaskManager keeps working once Redis is back: its first
    calls after a restart (sync, and the async machinery behind the _sync
    twins) must not fail on the connections the restart closed."""
    tm, url = aof_tm, aof_server.url
    key = runs_key(namespace)
    worker_factory(url=url, lease_timeout=LEASE)
    first = tm.register_task(ct.quick, url, key, "first", defer=True)
    assert tm.execute_task_sync(first, wait=True, timeout=WAIT) == "first"
    deferred = tm.register_task(ct.quick, url, key, "deferred", defer=True)
    doomed = tm.register_task(ct.quick, url, key, "doomed", defer=True)

    aof_server.restart(hard=hard)

    assert tm.get_task_status(deferred) is TaskStatus.PENDING
    assert tm.execute_task_sync(deferred, wait=True, timeout=WAIT) == "deferred"
    assert tm.cancel_task_sync(doomed) is True
    assert tm.get_task_status(doomed) is TaskStatus.CANCELLED
    again = tm.register_task(ct.quick, url, key, "again")
    assert tm.wait_for_task_sync(again, timeout=WAIT) == "again"


# ---- 4. Redis unreachable for a few seconds --------------------------------------------------------

OUTAGE_S = 3.0


@pytest.mark.parametrize("mode,lease", [("stop", 15.0), ("pause", 15.0), ("stop", LEASE)],
                         ids=["stop-lease15", "client-pause-lease15", "stop-lease2"])
def test_redis_outage_while_busy(aof_server, aof_tm, namespace, worker_factory, mode, lease):
    """Redis gone (stopped and started on the same port) or frozen (CLIENT
    PAUSE) for 3 s while both workers are busy. With a lease longer than the
    outage every task runs exactly once; with a 2 s lease, leases lapse
    during the outage and tasks may be taken over (re-run), but each still
    completes exactly once and none is lost."""
    tm, url = aof_tm, aof_server.url
    client = aof_server.client()
    key = runs_key(namespace)
    names = [f"w1-{namespace}", f"w2-{namespace}"]
    workers = [worker_factory("--name", n, "--concurrency", "4", url=url, lease_timeout=lease)
               for n in names]
    try:
        wait_workers(tm, *names)
        ids = []
        for n in range(40):
            if n % 2:
                ids.append(tm.register_task(ct.async_sleeper, url, key, 0.4 + (n % 5) / 10))
            else:
                ids.append(tm.register_task(ct.sleeper, url, key, 0.4 + (n % 5) / 10,
                                            executor_type="thread_pool"))
        wait_until(lambda: len(executions(client, key)) >= 12, timeout=15, what="work under way")
        running_before = tm.get_metrics()["tasks"]["running"]
        began = time.monotonic()
        if mode == "stop":
            aof_server.stop()
            time.sleep(OUTAGE_S)
            aof_server.start()
        else:
            client.execute_command("CLIENT", "PAUSE", int(OUTAGE_S * 1000), "ALL")
            time.sleep(OUTAGE_S)
        wait_status(tm, ids, {TaskStatus.COMPLETED}, timeout=40,
                    what="every task completed after the outage")
        drained_after = time.monotonic() - began
        fig = check_exactly_once(tm, client, key, ids)
        if lease > OUTAGE_S * 2:
            assert fig["recoveries"] == 0 and fig["executed_more_than_once"] == 0, fig
        assert [w.returncode for w in workers] == [None, None]
        assert tm.get_metrics()["recoveries"] == fig["recoveries"]
    finally:
        client.close()
    figures(f"outage_{mode}_lease{lease:g}", running_at_outage=running_before,
            drained_after_s=f"{drained_after:.1f}", **fig)


# ---- 5. an async task blocking its worker's loop -------------------------------------------------

BLOCK_S = LEASE * 4  # leaves B (started meanwhile) several reaper passes


def test_loop_blocking_task_keeps_its_leases(tm, rds, redis_server, namespace, worker_factory):
    """``time.sleep(lease * 4)`` inside ``async def``: the lease thread keeps
    renewing, so the other worker's reaper recovers nothing, and the blocked
    worker's other running tasks complete once too."""
    key = runs_key(namespace)
    url = redis_server.url
    a_id, b_id = f"a-{namespace}", f"b-{namespace}"
    companions = [tm.register_task(ct.async_sleeper, url, key, 0.5),
                  tm.register_task(ct.sleeper, url, key, 0.5, executor_type="thread_pool")]
    blocker = tm.register_task(ct.loop_blocker, url, key, BLOCK_S)
    ids = companions + [blocker]
    a = worker_factory("--name", a_id, "--concurrency", "3", lease_timeout=LEASE)
    wait_until(lambda: len(executions(rds, key)) == 3, timeout=20, what="all three started on A")
    blocked_at = executions(rds, key)[blocker][0].at
    assert {tm.get_task(i).worker for i in ids} == {a_id}
    b = worker_factory("--name", b_id, lease_timeout=LEASE)
    wait_workers(tm, b_id)
    b_up = time.time()
    # B's reaper runs (every lease/3) while A's loop is still blocked, long
    # enough that a lapsed lease would certainly be taken over.
    assert tm.get_task_status(blocker) is TaskStatus.RUNNING
    assert blocked_at + BLOCK_S - b_up > LEASE * 4 / 3, "B came up too late to watch"
    wait_status(tm, ids, {TaskStatus.COMPLETED}, timeout=BLOCK_S + 20)

    fig = check_exactly_once(tm, rds, key, ids)
    assert fig["recoveries"] == 0 and fig["executed_more_than_once"] == 0, fig
    assert {tm.get_task(i).worker for i in ids} == {a_id}
    assert all(r.pid == a.pid for runs in executions(rds, key).values() for r in runs)
    assert tm.get_metrics()["recoveries"] == 0
    assert "lease lost" not in a.log()
    assert a.returncode is None and b.returncode is None
    figures("loop_blocker", blocked_s=BLOCK_S,
            reaper_watching_s=f"{blocked_at + BLOCK_S - b_up:.1f}", **fig)


# ---- 6. SIGTERM under load ----------------------------------------------------------------------

def test_sigterm_under_load_hands_back_and_nothing_is_lost(tm, rds, redis_server, namespace,
                                                           worker_factory):
    key = runs_key(namespace)
    url = redis_server.url
    grace = 1.0
    ids = []
    for n in range(40):
        seconds = (0.5, 3.0, 1.0, 2.5)[n % 4]  # some outlive the grace
        if n % 2:
            ids.append(tm.register_task(ct.async_sleeper, url, key, seconds))
        else:
            ids.append(tm.register_task(ct.sleeper, url, key, seconds,
                                        executor_type="thread_pool"))
    w = worker_factory("--concurrency", "6", lease_timeout=LEASE, grace_period=grace)
    wait_until(lambda: tm.get_metrics()["tasks"]["completed"] >= 3
               and tm.get_metrics()["tasks"]["running"] >= 4, timeout=20,
               what="some tasks done and several running")
    running_at_signal = tm.get_metrics()["tasks"]["running"]
    signalled = time.monotonic()
    w.terminate()
    rc = w.wait(grace + 10)
    exit_s = time.monotonic() - signalled
    assert rc == 0, w.log()
    assert exit_s < grace + 3, exit_s

    statuses = Counter(tm.get_task_status(i) for i in ids)
    assert set(statuses) <= {TaskStatus.COMPLETED, TaskStatus.QUEUED}, statuses
    assert tm.get_metrics()["tasks"]["running"] == 0
    completed_first = statuses[TaskStatus.COMPLETED]
    runs_before = executions(rds, key)
    # Handed back: started (re-run later) or not; none is RUNNING or lost.
    handed_back = [i for i in ids if tm.get_task_status(i) is TaskStatus.QUEUED
                   and i in runs_before]

    burst = worker_factory("--burst", "--concurrency", "10", lease_timeout=LEASE)
    assert burst.wait(60) == 0, burst.log()
    fig = check_exactly_once(tm, rds, key, ids, extra_runs={i: 1 for i in handed_back})
    assert fig["recoveries"] == 0
    assert handed_back, "no started task outlived the grace period: the test lost its point"
    for i in handed_back:
        assert len(executions(rds, key)[i]) == 2
    figures("sigterm", running_at_signal=running_at_signal, exit_s=f"{exit_s:.2f}",
            completed_before_exit=completed_first, handed_back_started=len(handed_back),
            queued_after_exit=statuses[TaskStatus.QUEUED], **fig)
