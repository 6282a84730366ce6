"""Runs one workload against one system and prints its metrics as JSON.

``python -m benchmarks.driver '<json>'`` is started by the orchestrator
(:mod:`benchmarks.__main__`) with the interpreter that has the system's
library, so peers can live in their own virtualenv. The driver starts the
worker processes it needs and always stops them (SIGTERM, then SIGKILL, by
PID) before it exits. The last stdout line is ``BENCH_RESULT <json>``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .procstat import cpu_s
from .systems import SYSTEMS, System

REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    pass


# ---- worker processes -----------------------------------------------------------
class Workers:
    def __init__(self, system: System, kind: str, count: int, concurrency: int, burst: bool,
                 logdir: str, label: str):
        self.procs: list[subprocess.Popen] = []
        self.logs: list[str] = []
        argv, extra_env = system.worker_command(kind, concurrency, burst)
        env = dict(os.environ)
        env.update(extra_env)
        # --baseline: the workers import the baseline tree's taskmesh, as the
        # driver does (cli.run_driver); `-m` puts the cwd first on the path.
        code = os.environ.get("TASKMESH_BENCH_CODE")
        env["PYTHONPATH"] = os.pathsep.join(
            ([code] if code else []) + [str(REPO_ROOT)]
            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.started = time.perf_counter()
        for i in range(count):
            path = os.path.join(logdir, f"{label}-w{i}.log")
            self.logs.append(path)
            with open(path, "ab") as log:
                self.procs.append(subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=code or str(REPO_ROOT), env=env, start_new_session=True))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def tree(self) -> list[int]:
        """The launched processes and every process below them: some peers'
        commands (dramatiq, taskiq) fork the process that really runs the
        tasks, so the launched pid alone would show a supervisor's CPU and
        memory."""
        return process_tree(self.pids())

    def crashed(self) -> str | None:
        for p, log in zip(self.procs, self.logs):
            rc = p.poll()
            if rc not in (None, 0):
                return f"worker pid {p.pid} exited with {rc}; log: {log}\n{_tail(log)}"
        return None

    def tracebacks(self) -> str | None:
        """The first worker log holding a traceback, with its tail."""
        for log in self.logs:
            try:
                with open(log, "rb") as f:
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            if "Traceback (most recent call last)" in text:
                at = text.index("Traceback (most recent call last)")
                return f"{log}:\n{text[at:at + 1500]}"
        return None

    def all_exited(self) -> bool:
        return all(p.poll() is not None for p in self.procs)

    def wait(self, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.all_exited():
                return True
            time.sleep(0.005)
        return self.all_exited()

    def stop(self, timeout: float = 30.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.perf_counter() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.perf_counter(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - n, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def read_rss_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB from /proc/<pid>/status, None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    if "VmRSS" not in values:
        return None  # a zombie has no memory lines
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants (from each process's ppid in
    /proc/<pid>/stat; this kernel has no /proc/<pid>/task/*/children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        # The command name, in parentheses, may itself hold spaces.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], list(roots)
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(sorted(children.get(pid, ())))
    return tree


def _cpu(pids: list[int]) -> list[float | None]:
    return [cpu_s(pid) for pid in pids]


def watch(system: System, workers: Workers, target: int, *, poll: float, timeout: float,
          first_at: int = 1, window: int | None = None, max_window_s: float | None = None,
          redis_pid: int | None = None) -> dict[str, Any]:
    """Polls the finished-task count until ``target`` (or, with ``window``,
    until ``window`` more tasks after ``first_at``). Returns timings, the
    workers' memory as last seen, and the CPU time the workers and
    redis-server spent per task between the first and the last poll."""
    t_spawn = workers.started
    t_first = d_first = t_end = d_end = None
    cpu_first: list[float | None] = []
    # The workers' process trees, walked once (at the first finished task,
    # when any forked child is up): walking /proc every poll would load the
    # cores the workers share.
    tree = workers.pids()
    rss: dict[int, tuple[int, int]] = {}
    next_rss = 0.0
    deadline = t_spawn + timeout
    while True:
        done = system.done_count()
        now = time.perf_counter()
        if t_first is None and done >= first_at:
            t_first, d_first = now, done
            tree = workers.tree()  # not walked again: the same processes at both ends
            cpu_first = _cpu(tree + [redis_pid])
        finished = done >= target
        if t_first is not None and not finished:
            finished = (window is not None and done - d_first >= window) or (
                max_window_s is not None and now - t_first >= max_window_s)
        if finished or now >= next_rss:
            for pid in tree:
                sample = read_rss_kb(pid)
                if sample:
                    rss[pid] = sample
            next_rss = now + 0.1
        if finished:
            t_end, d_end = now, done
            cpu_end = _cpu(tree + [redis_pid])
            break
        problem = workers.crashed()
        if problem:
            raise BenchError(problem)
        if now > deadline:
            raise BenchError(f"{system.name}: only {done}/{target} tasks done after {timeout:.0f}s "
                             f"(worker logs: {', '.join(workers.logs)})")
        time.sleep(poll)
    span = t_end - t_first
    out = {
        "startup_s": t_first - t_spawn,
        "wall_s": t_end - t_spawn,
        "span_s": span,
        "done_first": d_first,
        "done_end": d_end,
        "per_s": (d_end - d_first) / span if span > 0 else float("nan"),
        "per_s_incl_startup": d_end / (t_end - t_spawn),
    }
    if d_end > d_first:
        deltas = [(b - a) if a is not None and b is not None else None
                  for a, b in zip(cpu_first, cpu_end)]
        if all(d is not None for d in deltas[:-1]):
            out["worker_cpu_ms_per_task"] = sum(deltas[:-1]) * 1000 / (d_end - d_first)
        if deltas[-1] is not None:
            out["redis_cpu_ms_per_task"] = deltas[-1] * 1000 / (d_end - d_first)
    if rss:
        out["rss_mb"] = max(v[0] for v in rss.values()) / 1024
        out["hwm_mb"] = max(v[1] for v in rss.values()) / 1024
    return out


# ---- workloads --------------------------------------------------------------------
def w_enqueue(system: System, p: dict) -> dict:
    kind = p["kind"]
    system.flush()
    single = system.enqueue_loop(kind, p["n_single"])
    system.flush()
    batch = system.enqueue_batch(kind, p["n_batch"])
    system.flush()
    return {"enqueue_single_per_s": p["n_single"] / single,
            "enqueue_batch_per_s": p["n_batch"] / batch}


def w_drain(system: System, p: dict) -> dict:
    """Pre-enqueue n tasks, start the worker(s) with --burst (where the system
    has it), time until all are done."""
    n, kind = p["n"], p["kind"]
    system.flush()
    redis_before = cpu_s(p.get("redis_pid"))
    fill = system.prefill(kind, n, tuple(p.get("args", ())))
    redis_fill = cpu_s(p.get("redis_pid"))
    workers = Workers(system, kind, p["workers"], p["concurrency"], burst=True,
                      logdir=p["logdir"], label=p["label"])
    try:
        res = watch(system, workers, n, poll=p.get("poll", 0.005), timeout=p.get("timeout", 600),
                    max_window_s=p.get("max_s"), redis_pid=p.get("redis_pid"))
        t_done = time.perf_counter()
        res["complete"] = res["done_end"] >= n
        exited = res["complete"] and workers.wait(p.get("exit_timeout", 10))
        res["exit_s"] = (time.perf_counter() - workers.started) if exited else None
        res["exit_after_done_s"] = (time.perf_counter() - t_done) if exited else None
        # Read before stopping: some peers (taskiq) log a traceback when a
        # SIGTERM interrupts their blocking read, which says nothing of the run.
        problem = workers.tracebacks()
    finally:
        workers.stop()
    res["fill_per_s"] = n / fill
    if redis_before is not None and redis_fill is not None and "redis_cpu_ms_per_task" in res:
        # The whole lifecycle (bulk register + claim + complete) on the Redis
        # side: what one Redis core's ceiling in tasks/s is computed from.
        res["redis_cpu_ms_per_lifecycle"] = ((redis_fill - redis_before) * 1000 / n
                                             + res["redis_cpu_ms_per_task"])
    res["failed"] = system.failed_count()
    if res["failed"]:
        raise BenchError(f"{res['failed']} tasks failed; worker logs: {', '.join(workers.logs)}")
    if problem:
        raise BenchError(f"a worker logged a traceback (the rate may count failures): {problem}")
    system.flush()
    return res


def w_latency(system: System, p: dict) -> dict:
    kind = p["kind"]
    system.flush()
    workers = Workers(system, kind, 1, p["concurrency"], burst=False, logdir=p["logdir"],
                      label=p["label"])
    try:
        system.roundtrips(kind, 1, timeout=60)  # waits for the worker to be up
        system.roundtrips(kind, p["warmup"], timeout=30)
        samples = system.roundtrips(kind, p["n"], timeout=30)
    finally:
        workers.stop()
    system.flush()
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": statistics.median(ms), "p90_ms": q[89], "p99_ms": q[98],
            "mean_ms": statistics.fmean(ms), "max_ms": ms[-1], "samples": len(ms)}


def w_backlog(system: System, p: dict) -> dict:
    """Drain rate of a window of tasks taken from the head of a backlog of
    ``size`` queued tasks (one worker)."""
    out: dict[str, Any] = {}
    kind = p["kind"]
    for size in p["sizes"]:
        system.flush()
        fill = system.prefill(kind, size)
        workers = Workers(system, kind, 1, p["concurrency"], burst=False, logdir=p["logdir"],
                          label=f"{p['label']}-{size}")
        try:
            res = watch(system, workers, size, poll=p.get("poll", 0.005),
                        timeout=p.get("timeout", 600), first_at=min(p["warm"], size // 10 or 1),
                        window=min(p["window"], size // 2), max_window_s=p["max_window_s"],
                        redis_pid=p.get("redis_pid"))
        finally:
            workers.stop()
        out[f"{size}_per_s"] = res["per_s"]
        out[f"{size}_fill_per_s"] = size / fill
        out[f"{size}_window"] = res["done_end"] - res["done_first"]
        for key in ("worker_cpu_ms_per_task", "redis_cpu_ms_per_task"):
            if key in res:
                out[f"{size}_{key}"] = res[key]
        system.flush()
    return out


def w_delays(system: System, p: dict) -> dict:
    """``n`` tasks due at times spread evenly over ``span_s`` seconds, in
    groups of 10 sharing a due time (10 ms apart for 10k over 10 s), run by
    one idle worker. Lateness is each task's start (its claim, on the Redis
    clock) minus its due time. They are registered first, while the worker
    idles; the first falls due ``lead_s`` after that starts."""
    n, span, kind = p["n"], p["span_s"], p["kind"]
    system.flush()
    workers = Workers(system, kind, 1, p["concurrency"], burst=False, logdir=p["logdir"],
                      label=p["label"])
    try:
        system.roundtrips(kind, 1, timeout=60)  # the worker is up
        done_before = system.done_count()
        lead = p.get("lead_s", 4.0)
        t0 = time.time() + lead
        step = span / n
        etas = [round(t0 + (i // 10) * 10 * step, 3) for i in range(n)]
        began = time.perf_counter()
        system.register_delayed(kind, etas)
        registered_s = time.perf_counter() - began
        deadline = time.time() + lead + span + 60
        while system.done_count() < done_before + n:
            if time.time() > deadline:
                raise BenchError(f"only {system.done_count() - done_before}/{n} delayed tasks "
                                 "done in time")
            time.sleep(0.05)
    finally:
        workers.stop()
    ms = sorted(x * 1000 for x in system.lateness())
    system.flush()
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": statistics.median(ms), "p90_ms": q[89], "p99_ms": q[98],
            "max_ms": ms[-1], "min_ms": ms[0], "samples": len(ms),
            "registered_s": registered_s, "registered_before_first_due": registered_s < lead}


WORKLOADS = {"enqueue": w_enqueue, "drain": w_drain, "latency": w_latency,
             "backlog": w_backlog, "delays": w_delays}


def main() -> int:
    spec = json.loads(sys.argv[1])

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    system = SYSTEMS[spec["system"]](spec["url"], spec["namespace"])
    try:
        result = WORKLOADS[spec["workload"]](system, spec["params"])
    finally:
        try:
            system.close()
        except Exception:
            pass
    module = sys.modules.get(SYSTEMS[spec["system"]].module)
    if module is not None:  # which checkout ran (--baseline runs another one)
        result["code"] = os.path.dirname(os.path.realpath(getattr(module, "__file__", "") or ""))
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
