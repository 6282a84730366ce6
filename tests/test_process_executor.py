"""executor_type="process" (SPEC §13, §17) in real ``taskmesh worker
--processes N`` processes: outcomes come back through the codec exactly as
in the other executors, the timeout and cancel are hard (the child is
killed), a dead child is ProcessCrashedError and is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskmesh import (
    ProcessCrashedError,
    TaskCancelledError,
    TaskFailedError,
    TaskManager,
    TaskmeshError,
    TaskStatus,
    WorkerOptions,
)
from tests import process_tasks as pt
from tests.helpers import wait_until

WAIT = 30.0
P = "process"


def _failure(tm: TaskManager, task_id: str) -> TaskFailedError:
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(task_id, timeout=WAIT)
    return info.value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path: Path) -> int:
    wait_until(path.exists, timeout=WAIT, what=f"{path.name} written by the child")
    return int(path.read_text())


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# ---- outcomes ---------------------------------------------------------------------

def test_results_round_trip_sync_and_async(tm, worker_factory):
    worker = worker_factory("--processes", "2")
    sync_id = tm.register_task(pt.whoami, ("a", 1), executor_type=P)
    async_id = tm.register_task(pt.async_whoami, {"k": [1, 2]}, executor_type=P)
    named_id = tm.register_task("tests.process_tasks:add", 2, 3, executor_type=P)
    lambda_id = tm.register_task(lambda x: x * 2, 21, executor_type=P)  # cloudpickled by value
    big = bytes(range(256)) * 4096  # 1 MiB: written to the child off the event loop
    big_id = tm.register_task(pt.echo, big, executor_type=P)

    sync_res = tm.wait_for_task_sync(sync_id, timeout=WAIT)
    assert sync_res["value"] == ("a", 1)  # a tuple stays a tuple, as in every executor
    assert sync_res["pid"] != worker.pid  # it ran in a child, not in the worker
    assert sync_res["pid"] in _descendants(worker.pid)
    async_res = tm.wait_for_task_sync(async_id, timeout=WAIT)
    assert async_res["value"] == {"k": [1, 2]} and async_res["loop"] is True
    assert async_res["pid"] != worker.pid
    assert tm.wait_for_task_sync(named_id, timeout=WAIT) == 5
    assert tm.wait_for_task_sync(lambda_id, timeout=WAIT) == 42
    assert tm.wait_for_task_sync(big_id, timeout=WAIT) == big
    info = tm.get_task(sync_id)
    assert info.status is TaskStatus.COMPLETED and info.executor_type == P and info.attempts == 1


def test_task_exception_type_message_and_traceback(tm, worker_factory):
    worker_factory("--processes", "2")
    err = _failure(tm, tm.register_task(pt.raise_boom, "it broke", executor_type=P)).error
    assert err.type == "Boom"
    assert err.message == "it broke"
    assert err.attempt == 1
    # the traceback is the task's own, from inside the child
    assert "in raise_boom" in err.traceback and "in _inner" in err.traceback
    assert "raise Boom(message)" in err.traceback
    assert "process_child" not in err.traceback  # taskmesh's frames are trimmed
    # the original exception, pickled in the child, is rebuilt here (SPEC §11)
    rebuilt = err.exception()
    assert type(rebuilt) is pt.Boom and str(rebuilt) == "it broke"


def test_cpu_bound_tasks_run_in_parallel_children(tm, worker_factory):
    worker_factory("--processes", "2", "--concurrency", "2")
    ids = [tm.register_task(pt.cpu_interval, 3_000_000, executor_type=P) for _ in range(2)]
    a, b = (tm.wait_for_task_sync(i, timeout=60) for i in ids)
    assert a["primes"] == b["primes"] == 216816  # pi(3e6)
    assert a["pid"] != b["pid"]
    # Two children really ran at the same time (a thread pool would hold them
    # to one GIL); overlap is checked rather than speed-up, which a shared
    # 2-core machine cannot promise.
    assert a["start"] < b["end"] and b["start"] < a["end"]


# ---- hard timeout -------------------------------------------------------------------

@pytest.mark.parametrize("stuck", ["spin", "sleep"])
def test_hard_timeout_kills_the_child_and_frees_the_slot_at_once(tm, worker_factory, tmp_path,
                                                                   stuck):
    # One worker slot: the next task can only start once the stuck one's
    # slot is free, so its start time measures how fast that happens.
    worker = worker_factory("--processes", "2", "--concurrency", "1")
    pidfile = tmp_path / "stuck.pid"
    if stuck == "spin":  # a pure-Python loop that never looks at cancellation
        stuck_id = tm.register_task(pt.spin_forever, str(pidfile), executor_type=P, timeout=1.0)
    else:  # blocked inside a C call
        stuck_id = tm.register_task(pt.sleep_in_c, 600, str(pidfile), executor_type=P,
                                    timeout=1.0)
    next_id = tm.register_task(pt.whoami, "next", executor_type=P)
    stuck_pid = _read_pid(pidfile)

    err = _failure(tm, stuck_id).error
    assert err.type == "TaskTimeoutError" and "1 s" in err.message
    nxt = tm.wait_for_task_sync(next_id, timeout=WAIT)
    stuck_info, next_info = tm.get_task(stuck_id), tm.get_task(next_id)
    ran_for = stuck_info.finished_at - stuck_info.started_at
    gap = next_info.started_at - stuck_info.finished_at
    print(f"stuck task failed after {ran_for:.3f} s; next started {gap * 1000:.1f} ms later")
    assert 1.0 <= ran_for < 2.0
    assert gap < 0.5, f"the next task started {gap:.3f} s after the timeout"
    assert nxt["pid"] != stuck_pid
    wait_until(lambda: not _pid_alive(stuck_pid), timeout=5, what="the stuck child to be killed")
    assert worker.returncode is None


def test_fresh_child_replaces_a_timed_out_one(tm, worker_factory, tmp_path):
    """With a single child the next task needs the replacement: it is there
    in well under a second."""
    worker_factory("--processes", "1", "--concurrency", "1")
    pidfile = tmp_path / "stuck.pid"
    stuck_id = tm.register_task(pt.spin_forever, str(pidfile), executor_type=P, timeout=0.5)
    next_id = tm.register_task(pt.whoami, executor_type=P)
    stuck_pid = _read_pid(pidfile)
    _failure(tm, stuck_id)
    nxt = tm.wait_for_task_sync(next_id, timeout=WAIT)
    assert nxt["pid"] != stuck_pid
    done_gap = tm.get_task(next_id).finished_at - tm.get_task(stuck_id).finished_at
    print(f"next task done {done_gap * 1000:.1f} ms after the timeout (fresh child)")
    assert done_gap < 1.5


def test_timeout_is_retried_while_retries_are_left(tm, worker_factory):
    worker_factory("--processes", "2")
    # attempt 1 spins until killed; attempt 2 returns its attempt number
    task_id = tm.register_task(pt.fail_first_attempt_then_sleep, 0.01, executor_type=P,
                               timeout=1.0, max_retries=1, retry_delay=0)
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 2
    assert tm.get_task(task_id).attempts == 2
    # and without retries left the timeout is final
    final_id = tm.register_task(pt.spin_forever, executor_type=P, timeout=0.5)
    assert _failure(tm, final_id).error.type == "TaskTimeoutError"
    assert tm.get_task(final_id).attempts == 1


# ---- hard cancel --------------------------------------------------------------------

def test_cancel_of_a_running_task_kills_its_child(tm, worker_factory, tmp_path):
    worker = worker_factory("--processes", "1")
    pidfile = tmp_path / "cancel.pid"
    task_id = tm.register_task(pt.sleep_in_c, 600, str(pidfile), executor_type=P)
    child_pid = _read_pid(pidfile)
    assert tm.get_task_status(task_id) is TaskStatus.RUNNING
    asked = time.monotonic()
    assert tm.cancel_task_sync(task_id) is True
    with pytest.raises(TaskCancelledError):
        tm.wait_for_task_sync(task_id, timeout=WAIT)
    assert time.monotonic() - asked < 5  # not the 600 s the function wanted
    assert tm.get_task_status(task_id) is TaskStatus.CANCELLED
    wait_until(lambda: not _pid_alive(child_pid), timeout=5, what="the child to be killed")
    # a fresh child takes the next task
    nxt = tm.wait_for_task_sync(tm.register_task(pt.whoami, executor_type=P), timeout=WAIT)
    assert nxt["pid"] != child_pid
    assert worker.returncode is None


def test_cancel_of_a_task_waiting_for_a_child_ends_it_at_once(tm, worker_factory, tmp_path):
    worker_factory("--processes", "1")
    pidfile = tmp_path / "busy.pid"
    busy = tm.register_task(pt.sleep_in_c, 600, str(pidfile), executor_type=P)
    child_pid = _read_pid(pidfile)
    waiting = tm.register_task(pt.sleep_in_c, 600, executor_type=P)
    wait_until(lambda: tm.get_task_status(waiting) is TaskStatus.RUNNING, timeout=WAIT,
               what="the second task to be claimed (it waits for the only child)")
    assert tm.cancel_task_sync(waiting) is True
    with pytest.raises(TaskCancelledError):
        tm.wait_for_task_sync(waiting, timeout=10)  # not when the busy child frees up
    assert _pid_alive(child_pid)  # the running task's child was left alone
    assert tm.get_task_status(busy) is TaskStatus.RUNNING
    tm.cancel_task_sync(busy)
    with pytest.raises(TaskCancelledError):
        tm.wait_for_task_sync(busy, timeout=WAIT)


def test_sigterm_hands_a_running_process_task_back_and_kills_its_child(tm, worker_factory,
                                                                       tmp_path):
    worker = worker_factory("--processes", "1", grace_period=0.5)
    pidfile = tmp_path / "long.pid"
    task_id = tm.register_task(pt.sleep_in_c, 600, str(pidfile), executor_type=P)
    child_pid = _read_pid(pidfile)
    worker.terminate()
    assert worker.wait(WAIT) == 0
    assert tm.get_task_status(task_id) is TaskStatus.QUEUED  # handed back, not failed
    wait_until(lambda: not _pid_alive(child_pid), timeout=5, what="the child to be killed")


# ---- crashes ------------------------------------------------------------------------

@pytest.mark.parametrize("crash, detail", [
    (pt.hard_exit, "exited with code 7"),
    (pt.segfault, "killed by SIGSEGV"),
])
def test_a_dead_child_is_process_crashed_error_and_the_worker_goes_on(tm, worker_factory,
                                                                      crash, detail):
    worker = worker_factory("--processes", "2")
    args = (7,) if crash is pt.hard_exit else ()
    crashed = tm.register_task(crash, *args, executor_type=P)
    err = _failure(tm, crashed).error
    assert err.type == "ProcessCrashedError"
    assert detail in err.message
    assert isinstance(err.exception(), ProcessCrashedError)
    assert isinstance(ProcessCrashedError("x"), TaskmeshError)
    # the worker is still there, and its pool is whole again
    results = [tm.wait_for_task_sync(tm.register_task(pt.whoami, executor_type=P), timeout=WAIT)
               for _ in range(4)]
    assert all(r["pid"] != worker.pid for r in results)
    assert worker.returncode is None


def test_a_crash_is_retried_while_retries_are_left(tm, worker_factory, tmp_path):
    worker_factory("--processes", "1")
    task_id = tm.register_task(pt.hard_exit, 1, executor_type=P, max_retries=2, retry_delay=0)
    err = _failure(tm, task_id).error
    assert err.type == "ProcessCrashedError" and err.attempt == 3
    assert tm.get_task(task_id).attempts == 3


def test_a_burst_worker_exits_after_a_child_called_os_exit(tm, worker_factory):
    """``--burst --processes 1``: tasks end their child with ``os._exit`` (one
    on its first attempt only, retried on a replacement child; the last ones
    on every attempt, so a replacement is still starting when the burst
    ends). The worker exits by itself: a child that outlives its pool is
    stopped, not left to multiprocessing's exit handler, which would SIGTERM
    it (children ignore SIGTERM) and join it forever."""
    once = tm.register_task(pt.exit_on_first_attempt, executor_type=P, max_retries=1,
                            retry_delay=0)
    after = tm.register_task(pt.add, 1, 1, executor_type=P)
    always = [tm.register_task(pt.hard_exit, 3, executor_type=P) for _ in range(5)]
    worker = worker_factory("--burst", "--processes", "1")
    assert worker.wait(WAIT) == 0, worker.log()
    assert tm.get_task_result(once) == 2
    assert tm.get_task_result(after) == 2
    assert all(tm.get_task_status(t) is TaskStatus.FAILED for t in always)


def test_retry_on_filters_process_failures(tm, worker_factory):
    """SPEC §17: timeouts and crashes are filtered by retry_on like any
    failure, and the task's own exception is matched by class although it
    was raised in the child."""
    worker_factory("--processes", "2")
    crash_kept = tm.register_task(pt.hard_exit, 1, executor_type=P, max_retries=2,
                                  retry_delay=0, retry_on=(ProcessCrashedError,))
    crash_not_listed = tm.register_task(pt.hard_exit, 1, executor_type=P, max_retries=2,
                                        retry_delay=0, retry_on=(ValueError,))
    own = tm.register_task(pt.raise_boom, "again", executor_type=P, max_retries=1,
                           retry_delay=0, retry_on=("tests.process_tasks.Boom",))
    timeout_not_listed = tm.register_task(pt.spin_forever, executor_type=P, timeout=0.5,
                                          max_retries=2, retry_delay=0, retry_on=(ValueError,))
    for task_id, attempts, err_type in [(crash_kept, 3, "ProcessCrashedError"),
                                        (crash_not_listed, 1, "ProcessCrashedError"),
                                        (own, 2, "Boom"),
                                        (timeout_not_listed, 1, "TaskTimeoutError")]:
        assert _failure(tm, task_id).error.type == err_type
        assert tm.get_task(task_id).attempts == attempts, err_type


def test_a_child_killed_from_outside_fails_its_task(tm, worker_factory, tmp_path):
    worker = worker_factory("--processes", "1")
    pidfile = tmp_path / "victim.pid"
    task_id = tm.register_task(pt.sleep_in_c, 600, str(pidfile), executor_type=P)
    os.kill(_read_pid(pidfile), signal.SIGKILL)
    err = _failure(tm, task_id).error
    assert err.type == "ProcessCrashedError" and "SIGKILL" in err.message
    assert tm.wait_for_task_sync(tm.register_task(pt.add, 1, 1, executor_type=P),
                                 timeout=WAIT) == 2
    assert worker.returncode is None


def test_worker_kill_9_leaves_no_child_running(tm, worker_factory, tmp_path):
    worker = worker_factory("--processes", "1")
    pidfile = tmp_path / "orphan.pid"
    tm.register_task(pt.sleep_in_c, 600, str(pidfile), executor_type=P)
    child_pid = _read_pid(pidfile)
    worker.kill()
    worker.wait(WAIT)
    # otherwise the task would run on here while another worker recovers it
    wait_until(lambda: not _pid_alive(child_pid), timeout=10, what="the orphaned child to exit")


# ---- progress and current_task() ------------------------------------------------------

def test_progress_and_current_task_inside_the_child(tm, worker_factory):
    worker_factory("--processes", "2")
    live = tm.register_task(pt.progress_then_wait, 600, executor_type=P)
    # a mid-task update reaches Redis while the function still runs
    wait_until(lambda: tm.get_task_progress(live) == (0.5, "half way"), timeout=WAIT,
               what="progress from inside the child")
    tm.cancel_task_sync(live)

    task_id = tm.register_task(pt.report_progress, 5, executor_type=P, name="progressing",
                               metadata={"owner": "me", "n": 3})
    ctx = tm.wait_for_task_sync(task_id, timeout=WAIT)
    assert ctx["task_id"] == task_id
    assert ctx["attempt"] == 1
    assert ctx["name"] == "progressing"
    assert ctx["metadata"] == {"owner": "me", "n": 3}
    assert ctx["cancelled"] is False
    assert tm.get_task_progress(task_id) == (1.0, "step 5/5")
    events = [e for e in tm.get_events(count=1000)
              if e.task_id == task_id and e.type == "TASK_PROGRESS"]
    assert events and events[-1].data["progress"] == 1.0


# ---- codec: signing, pickles, unserializable results -----------------------------------

def test_signed_payloads_and_results(redis_server, namespace, worker_factory):
    worker_factory("--processes", "1", "--secret", "s3cret")
    signed = TaskManager(redis_server.url, namespace=namespace, secret="s3cret")
    unsigned = TaskManager(redis_server.url, namespace=namespace)
    try:
        ok = signed.register_task(pt.add, 40, 2, executor_type=P)
        assert signed.wait_for_task_sync(ok, timeout=WAIT) == 42  # the result is verified too
        # the child checks the signature before it unpacks anything
        forged = unsigned.register_task(pt.add, 1, 2, executor_type=P)
        with pytest.raises(TaskFailedError) as info:
            unsigned.wait_for_task_sync(forged, timeout=WAIT)
        assert info.value.error.type == "SignatureError"
        assert unsigned.get_task(forged).attempts == 1  # a bad payload is never retried
    finally:
        signed.close()
        unsigned.close()


def test_no_pickle_refuses_a_pickled_payload_in_the_child(tm, worker_factory):
    worker_factory("--processes", "1", "--no-pickle")
    assert _failure(tm, tm.register_task(lambda: 1, executor_type=P)).error.type == \
        "UnsafePayloadError"
    by_name = tm.register_task("tests.process_tasks:add", 1, 2, executor_type=P)
    assert tm.wait_for_task_sync(by_name, timeout=WAIT) == 3


def test_bad_results_and_errors_fail_the_task_not_the_pool(tm, worker_factory):
    worker = worker_factory("--processes", "1")
    lock = _failure(tm, tm.register_task(pt.unpicklable_result, executor_type=P)).error
    assert lock.type == "SerializationError" and "result" in lock.message
    # __reduce__ raising SystemExit, __str__/__repr__ raising KeyboardInterrupt/SystemExit
    exiting = _failure(tm, tm.register_task(pt.bad_result, executor_type=P)).error
    assert exiting.type == "SerializationError" and "SystemExit" in exiting.message
    unprintable = _failure(tm, tm.register_task(pt.raise_bad_str, executor_type=P)).error
    assert unprintable.type == "BadStr"
    pids = {tm.wait_for_task_sync(tm.register_task(pt.whoami, executor_type=P),
                                  timeout=WAIT)["pid"] for _ in range(3)}
    assert len(pids) == 1  # the same child went on: nothing above killed it
    assert worker.returncode is None


# ---- pool life cycle and options --------------------------------------------------------

def test_children_start_only_for_the_first_process_task(tm, worker_factory):
    worker = worker_factory("--processes", "2")
    tm.wait_for_task_sync(tm.register_task(pt.async_whoami, executor_type="async"), timeout=WAIT)
    tm.wait_for_task_sync(tm.register_task(pt.whoami, executor_type="thread_pool"),
                          timeout=WAIT)
    assert _descendants(worker.pid) == set()  # a worker that runs no process task pays nothing
    res = tm.wait_for_task_sync(tm.register_task(pt.whoami, executor_type=P), timeout=WAIT)
    assert res["pid"] in _descendants(worker.pid)


def test_a_worker_claims_at_most_two_process_tasks_per_child(tm, worker_factory):
    """Tasks beyond its children stay QUEUED for other workers instead of
    waiting inside a busy one (one running + one waiting per child)."""
    ids = [tm.register_task(pt.sleep_in_c, 1.0, executor_type=P) for _ in range(8)]
    first = worker_factory("--processes", "1", "--concurrency", "10")
    wait_until(lambda: sum(tm.get_task_status(i) is TaskStatus.RUNNING for i in ids) == 2,
               timeout=WAIT, what="the first worker to claim")
    # other executors still fill the remaining slots
    other = tm.register_task(pt.whoami, executor_type="thread_pool")
    assert tm.wait_for_task_sync(other, timeout=WAIT)["pid"] == first.pid
    statuses = [tm.get_task_status(i) for i in ids]
    assert statuses.count(TaskStatus.RUNNING) <= 2 and statuses.count(TaskStatus.QUEUED) >= 5
    worker_factory("--processes", "2", "--concurrency", "10")
    for i in ids:
        assert tm.wait_for_task_sync(i, timeout=WAIT) == "woke"
    workers = {tm.get_task(i).worker for i in ids}
    assert len(workers) == 2  # the second worker took its share


def test_sigterm_stops_the_worker_and_its_children(tm, worker_factory):
    worker = worker_factory("--processes", "2")
    tm.wait_for_task_sync(tm.register_task(pt.whoami, executor_type=P), timeout=WAIT)
    family = _descendants(worker.pid)
    assert family
    worker.terminate()
    assert worker.wait(WAIT) == 0
    wait_until(lambda: not any(_pid_alive(p) for p in family), timeout=10,
               what="the worker's children to exit")


def test_embedded_worker_runs_process_tasks(tm):
    handle = tm.start_worker(processes=1, concurrency=2)
    try:
        res = tm.wait_for_task_sync(tm.register_task(pt.whoami, 9, executor_type=P), timeout=WAIT)
        assert res["value"] == 9 and res["pid"] != os.getpid()
    finally:
        assert handle.stop(timeout=WAIT)


def test_processes_option_validation(redis_server):
    assert WorkerOptions(url=redis_server.url).processes == (os.cpu_count() or 1)
    assert WorkerOptions(url=redis_server.url, processes=3).processes == 3
    with pytest.raises(ValueError, match="processes"):
        WorkerOptions(url=redis_server.url, processes=0)
    with pytest.raises(TypeError):
        WorkerOptions(url=redis_server.url, processes=1.5)  # type: ignore[arg-type]
    cli = subprocess.run([sys.executable, "-m", "taskmesh", "worker", "--url", redis_server.url,
                          "--processes", "0"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "--processes" in cli.stderr


# ---- a thread task holding the GIL past its lease (issue 8 #5) ------------------------

def test_gil_holding_thread_task_is_told_apart_and_process_is_the_cure(tm, worker_factory):
    # Three workers, so at least one reaps while another is frozen in the C
    # call (with two, both could be frozen at once, one in a stale attempt,
    # and the frozen holder's late renewal then won the race under load).
    workers = [worker_factory("--processes", "1", lease_timeout=1.0) for _ in range(3)]
    thread_id = tm.register_task(pt.hold_gil, 2.5, executor_type="thread_pool")
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(thread_id, timeout=90)
    err = info.value.error
    assert err.type == "WorkerLostError"
    assert "was alive" in err.message and 'executor_type="process"' in err.message
    assert tm.get_task(thread_id).attempts == 4  # recovered three times, although alive
    # A worker whose stale attempt still holds its GIL would take the next
    # task all the same (Redis runs the claim queued behind its idle BLPOP)
    # and could not renew it: first every worker heartbeats again, which a
    # frozen one cannot (the workers zset's score moves with each heartbeat).
    def heartbeats() -> dict[bytes, float]:
        return dict(tm._sync_client.zrange(tm.keys.workers, 0, -1, withscores=True))

    def all_heartbeat_since(before: dict[bytes, float]) -> bool:
        now = heartbeats()
        return len(now) == len(workers) and all(s > before.get(w, 0) for w, s in now.items())

    at_failure = heartbeats()
    wait_until(lambda: all_heartbeat_since(at_failure), timeout=30,
               what="every worker heartbeating again")
    # In a child the C call holds only the child's GIL: the worker renews its
    # lease meanwhile and the task completes on its first attempt.
    proc_id = tm.register_task(pt.hold_gil, 2.5, executor_type=P)
    assert tm.wait_for_task_sync(proc_id, timeout=60) not in {w.pid for w in workers}
    assert tm.get_task(proc_id).attempts == 1
    assert all(w.returncode is None for w in workers)


def test_memory_url_with_serialize_runs_process_tasks(namespace):
    """memory:// with ?serialize=1 (references do not cross processes): the
    child needs no Redis, progress comes back through the embedded worker."""
    tm = TaskManager("memory://?serialize=1", namespace=namespace)
    try:
        task_id = tm.register_task(pt.report_progress, 2, executor_type=P)
        res = tm.wait_for_task_sync(task_id, timeout=WAIT)
        assert res["task_id"] == task_id and res["pid"] != os.getpid()
        assert tm.get_task_progress(task_id) == (1.0, "step 2/2")
    finally:
        tm.close()
