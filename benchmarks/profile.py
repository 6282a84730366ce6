"""Where a no-op task's cost goes, per script and per side, and A/B between trees.

    python -m benchmarks.profile                         # this tree
    python -m benchmarks.profile --tree /tmp/before --tree .   # A/B, interleaved
    python -m benchmarks.profile --py-spy /tmp/worker.txt      # + worker stacks

One private redis-server for the whole run (see :mod:`taskmesh.server`).
Each tree is measured in a child interpreter whose ``PYTHONPATH`` is that
tree, so its own ``taskmesh`` runs on both sides; trees take turns
(``--repeat``), and the medians are printed side by side. Because the trees
share the run, their ratios hold even on a loaded machine; the CPU figures
(``/proc/<pid>/stat`` and ``INFO commandstats``) are what to compare, the
rates are indicative only.

Phases, per tree (fresh database each):

* ``register``: ``register_task`` in a loop (one script call per task).
* ``many``: ``register_many`` (pipelined).
* ``claim`` / ``report``: the worker's own Calls (``Commands.claim`` for 10
  at a time, then the reports of those 10 as the reporter sends them: one
  ``report_many`` call, or 10 ``report`` calls in one pipeline in a tree
  without it), sent from this process, so each script's cost is measured
  alone.
* ``drain``: a real ``taskmesh worker --burst`` drains ``-n`` async no-op
  tasks (``--def``: plain ``def`` no-ops, which run on the task threads);
  worker and redis-server CPU per task from the first finished task to the
  last (the benchmark's rows), the worker's context switches per task (its
  threads' schedstat), and the scripts it ran.

* ``latency`` (with ``--latency N``): a real ``taskmesh worker`` (not
  burst, idle between tasks) and ``N`` sequential ``register_task`` +
  ``wait_for_task_sync`` round trips of an async no-op: p50/p99 in ms, and
  per round trip the CPU of this process, the worker and redis-server and
  the commands Redis ran. ``--latency-only`` skips the other phases.

For each phase: redis-server CPU per task, the script calls and usec per
task (``cmdstat_evalsha``), and the top commands run inside them.

``--instructions`` runs redis-server under valgrind (callgrind) and also
gives the instructions redis-server executed per task in each phase
(user space only: the network's system calls are not counted). On a
shared machine CPU time moves with the load; instruction counts repeat to
about 3% whatever else runs, so they tell small changes apart. The server
is ~50 times slower, so use a small ``-n`` (1000).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load_beside(name: str) -> Any:
    """A module of this folder, loaded by path: the child runs this file as a
    script with the tree under test first on sys.path, whose ``benchmarks``
    package may be older than this file."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cpu_s = _load_beside("procstat").cpu_s


def switches(pid: int) -> int:
    """Times any thread of ``pid`` was switched in so far (the third field of
    ``/proc/<pid>/task/*/schedstat``): each one a wake-up or a preemption."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(task.read_text().split()[2])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def instructions(pid: int, out_dir: str | None) -> int:
    """Instructions redis-server ran since the last call (callgrind zeroes
    its counters at each dump), or 0 when it does not run under callgrind."""
    if not out_dir:
        return 0
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True)
    dumps = sorted(Path(out_dir).glob("callgrind.out.*"), key=lambda f: f.stat().st_mtime)
    total = 0
    for line in dumps[-1].read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            total = int(line.split()[1])
    keep = os.environ.get("TASKMESH_CALLGRIND_KEEP")  # a directory: keep each dump there
    for f in dumps:
        if keep:
            shutil.move(str(f), os.path.join(keep, f"{time.time_ns()}.{f.name}"))
        else:
            f.unlink()
    return total


# ---- child: runs inside one tree ---------------------------------------------------
def child(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    from taskmesh import TaskManager, scripts
    from taskmesh.store import Commands

    r = redis.Redis.from_url(args.url)
    r.flushdb()
    ns = "prof"
    tm = TaskManager(args.url, namespace=ns)
    keys = tm.keys
    func = "benchmarks.tasks:anoop"
    drain_func = "benchmarks.tasks:noop" if args.def_ else func
    out: dict[str, Any] = {}

    def stats() -> dict[str, tuple[int, int]]:
        raw = r.info("commandstats")
        return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in raw.items()}

    def measure(label: str, n: int, fn: Any) -> Any:
        before, c0, t0, p0 = stats(), cpu_s(args.redis_pid), time.perf_counter(), time.process_time()
        instructions(args.redis_pid, args.callgrind_dir)
        value = fn()
        wall, proc = time.perf_counter() - t0, time.process_time() - p0
        ins = instructions(args.redis_pid, args.callgrind_dir)
        c1, after = cpu_s(args.redis_pid), stats()
        out[label] = summarize(before, after, n, c1 - c0, wall, proc)
        out[label]["redis_kinstr"] = ins / n / 1000 if ins else None
        return value

    n = args.n
    if args.latency:
        out["latency"] = latency_phase(args, r, tm, stats, func)
    if args.latency_only:
        tm.close()
        r.flushdb()
        return out
    measure("register", args.n_single, lambda: [tm.register_task(func) for _ in range(args.n_single)])
    r.flushdb()
    measure("many", n, lambda: tm.register_many(func, [()] * n))

    commands = Commands(keys)
    # Free sequential (and, in trees that have them, process) slots.
    slots = [2] * sum(1 for name in inspect.signature(commands.claim).parameters
                      if name.endswith("_slots"))
    claimed: list[Any] = []

    def claim_all() -> None:
        while True:
            res = scripts.run(r, commands.claim("prof-w", ["default"], 10, 30000, *slots))
            if not res.tasks:
                return
            claimed.extend(res.tasks)

    measure("claim", n, claim_all)

    result = tm.codec.encode_result(None)

    def report_all() -> None:
        for i in range(0, len(claimed), 10):
            calls = [commands.report(c.id, c.token, "completed", result)
                     for c in claimed[i:i + 10]]
            if hasattr(commands, "report_many"):  # as the worker's reporter sends them
                calls = [commands.report_many(calls)]
            scripts.run_batch(r, calls)

    measure("report", n, report_all)
    r.flushdb()

    # The real worker, as the benchmark runs it.
    tm.register_many(drain_func, [()] * n)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.tree, str(HERE.parent)]))
    argv = [sys.executable, "-m", "taskmesh", "worker", "--url", args.url, "--namespace", ns,
            "--concurrency", str(args.concurrency), "--burst"]
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              cwd=args.tree)
    spy = None
    try:
        done = 0
        while done < 1:
            done = int(r.hget(keys.stats, "completed") or 0)
            if worker.poll() is not None:
                raise SystemExit(f"worker exited early: {worker.stderr.read().decode()[-2000:]}")
            time.sleep(0.002)
        if args.py_spy:
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(worker.pid), "--rate", "250",
                                    "--format", "raw", "-o", args.py_spy, "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        d0, w0, c0, s0, t0 = done, cpu_s(worker.pid), cpu_s(args.redis_pid), stats(), time.perf_counter()
        x0 = switches(worker.pid)
        instructions(args.redis_pid, args.callgrind_dir)
        poll_s = 0.2 if args.callgrind_dir else 0.005  # polls are counted instructions too
        while done < n:
            time.sleep(poll_s)
            done = int(r.hget(keys.stats, "completed") or 0)
        ins = instructions(args.redis_pid, args.callgrind_dir)
        w1, c1, s1, t1 = cpu_s(worker.pid), cpu_s(args.redis_pid), stats(), time.perf_counter()
        x1 = switches(worker.pid)
        tasks = done - d0
        out["drain"] = summarize(s0, s1, tasks, c1 - c0, t1 - t0, None)
        out["drain"]["worker_us"] = (w1 - w0) * 1e6 / tasks
        out["drain"]["worker_switches"] = (x1 - x0) / tasks
        out["drain"]["redis_kinstr"] = ins / tasks / 1000 if ins else None
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if spy is not None:
            spy.wait(30)
    tm.close()
    r.flushdb()
    return out


def latency_phase(args: argparse.Namespace, r: Any, tm: Any, stats: Any,
                  func: str) -> dict[str, Any]:
    """Sequential round trips through an idle worker: the benchmark's
    latency row, with each side's CPU and the commands per round trip."""
    r.flushdb()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.tree, str(HERE.parent)]))
    argv = [sys.executable, "-m", "taskmesh", "worker", "--url", args.url, "--namespace",
            tm.namespace, "--concurrency", str(args.concurrency)]
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              cwd=args.tree)
    try:
        for _ in range(20):  # warm-up; the first waits for the worker to start
            tm.wait_for_task_sync(tm.register_task(func), timeout=60)
        samples = []
        s0, w0, c0, p0 = stats(), cpu_s(worker.pid), cpu_s(args.redis_pid), time.process_time()
        for _ in range(args.latency):
            t0 = time.perf_counter()
            tm.wait_for_task_sync(tm.register_task(func), timeout=30)
            samples.append((time.perf_counter() - t0) * 1000)
        p1, c1, w1, s1 = time.process_time(), cpu_s(args.redis_pid), cpu_s(worker.pid), stats()
    finally:
        worker.terminate()
        worker.wait(30)
    n = len(samples)
    calls = {k: c - s0.get(k, (0, 0))[0] for k, (c, _) in s1.items()
             if k not in ("info", "flushdb")}
    q = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    r.flushdb()
    return {"p50_ms": statistics.median(samples), "p99_ms": q[98],
            "client_us": (p1 - p0) * 1e6 / n, "worker_us": (w1 - w0) * 1e6 / n,
            "redis_cpu_us": (c1 - c0) * 1e6 / n, "commands": sum(calls.values()) / n,
            "by_command": {k: v / n for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}}


def summarize(before: dict, after: dict, n: int, redis_cpu: float, wall: float,
              proc: float | None) -> dict[str, Any]:
    delta = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls - c0 > 0 and name not in ("info", "hget", "flushdb"):
            delta[name] = (calls - c0, usec - u0)
    evalsha = delta.pop("evalsha", (0, 0))
    inner = sorted(delta.items(), key=lambda kv: -kv[1][1])
    return {
        "n": n,
        "redis_cpu_us": redis_cpu * 1e6 / n,
        "script_calls": evalsha[0] / n,
        "script_us": evalsha[1] / n,
        "inner_us": sum(u for _, (_, u) in inner) / n,
        "inner": {name: [c / n, u / n] for name, (c, u) in inner},
        "per_s": n / wall,
        "client_us": None if proc is None else proc * 1e6 / n,
    }


# ---- parent: one redis, trees in turn --------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", help="a checkout to measure (repeatable; default .)")
    p.add_argument("-n", type=int, default=5000, help="tasks per phase (default 5000)")
    p.add_argument("--n-single", type=int, default=2000, help="register_task calls (default 2000)")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--py-spy", help="write the worker's raw py-spy stacks here (last tree)")
    p.add_argument("--json", help="write every run here")
    p.add_argument("--latency", type=int, default=0, metavar="N",
                   help="also measure N sequential round trips (register -> result)")
    p.add_argument("--latency-only", action="store_true", help="only the latency phase")
    p.add_argument("--def", dest="def_", action="store_true",
                   help="the drain phase drains plain def no-ops (task threads), not async ones")
    p.add_argument("--instructions", action="store_true",
                   help="run redis-server under callgrind and count its instructions per task")
    p.add_argument("--callgrind-dir", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.tree = args.tree[0]
        print(json.dumps(child(args)))
        return

    sys.path.insert(0, str(HERE.parent))
    from taskmesh.server import RedisServer

    trees = [str(Path(t).resolve()) for t in (args.tree or ["."])]
    runs: dict[str, list[dict]] = {t: [] for t in trees}

    class CallgrindServer(RedisServer):
        """The same server, run by valgrind's callgrind (same PID, ~50x slower)."""

        def _command(self) -> list[str]:
            return ["valgrind", "--tool=callgrind", "--dump-instr=no", "--collect-jumps=no",
                    f"--callgrind-out-file={callgrind_dir}/callgrind.out.%p", *super()._command()]

    callgrind_dir = tempfile.mkdtemp(prefix="taskmesh-callgrind-") if args.instructions else None
    server = CallgrindServer() if callgrind_dir else RedisServer()
    if callgrind_dir:
        server.start(timeout=60)  # valgrind takes a few seconds to start it
    else:
        server.start()
    try:
        for rep in range(args.repeat):
            for tree in trees:
                argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", tree,
                        "--url", server.db_url(1), "--redis-pid", str(server.pid), "-n", str(args.n),
                        "--n-single", str(args.n_single), "--concurrency", str(args.concurrency),
                        "--latency", str(args.latency or (500 if args.latency_only else 0))]
                if args.latency_only:
                    argv.append("--latency-only")
                if args.def_:
                    argv.append("--def")
                if callgrind_dir:
                    argv += ["--callgrind-dir", callgrind_dir]
                if args.py_spy and rep == args.repeat - 1 and tree == trees[-1]:
                    argv += ["--py-spy", args.py_spy]
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, str(HERE.parent)]))
                res = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tree)
                if res.returncode:
                    sys.exit(f"{tree}: {res.stderr[-3000:]}")
                runs[tree].append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(f"[{rep + 1}/{args.repeat}] {tree} done", file=sys.stderr)
    finally:
        server.cleanup()
    if callgrind_dir:
        shutil.rmtree(callgrind_dir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    report(trees, runs)
    if args.py_spy:
        print()
        print_stacks(args.py_spy)


def _med(runs: list[dict], phase: str, key: str) -> float | None:
    vals = [r[phase][key] for r in runs if r.get(phase, {}).get(key) is not None]
    return statistics.median(vals) if vals else None


def report(trees: list[str], runs: dict[str, list[dict]]) -> None:
    names = [Path(t).name or t for t in trees]
    rows = [
        ("register_task: redis k-instructions/task", "register", "redis_kinstr"),
        ("register_many: redis k-instructions/task", "many", "redis_kinstr"),
        ("claim (10 at a time): redis k-instructions/task", "claim", "redis_kinstr"),
        ("report (10 per call): redis k-instructions/task", "report", "redis_kinstr"),
        ("drain: redis k-instructions/task", "drain", "redis_kinstr"),
        ("register_task: redis CPU us/task", "register", "redis_cpu_us"),
        ("register_task: script us/task", "register", "script_us"),
        ("register_task: client CPU us/call", "register", "client_us"),
        ("register_task: calls/s", "register", "per_s"),
        ("register_many: redis CPU us/task", "many", "redis_cpu_us"),
        ("register_many: script us/task", "many", "script_us"),
        ("register_many: client CPU us/task", "many", "client_us"),
        ("register_many: tasks/s", "many", "per_s"),
        ("claim (10 at a time): redis CPU us/task", "claim", "redis_cpu_us"),
        ("claim: script us/task", "claim", "script_us"),
        ("report (10 per pipeline): redis CPU us/task", "report", "redis_cpu_us"),
        ("report: script us/task", "report", "script_us"),
        ("drain: worker CPU us/task", "drain", "worker_us"),
        ("drain: worker context switches/task", "drain", "worker_switches"),
        ("drain: redis CPU us/task", "drain", "redis_cpu_us"),
        ("drain: script calls/task", "drain", "script_calls"),
        ("drain: script us/task", "drain", "script_us"),
        ("drain: tasks/s", "drain", "per_s"),
        ("round trip: p50 ms", "latency", "p50_ms"),
        ("round trip: p99 ms", "latency", "p99_ms"),
        ("round trip: client CPU us", "latency", "client_us"),
        ("round trip: worker CPU us", "latency", "worker_us"),
        ("round trip: redis CPU us", "latency", "redis_cpu_us"),
        ("round trip: Redis commands", "latency", "commands"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'(medians of %d)' % len(next(iter(runs.values()))):<{width}}  "
          + "  ".join(f"{n:>12}" for n in names)
          + ("   ratio" if len(trees) == 2 else ""))
    for label, phase, key in rows:
        vals = [_med(runs[t], phase, key) for t in trees]
        if all(v is None for v in vals):
            continue  # (instructions: only with --instructions)
        cells = "  ".join(f"{'-':>12}" if v is None else f"{v:>12.3f}" if v < 10 else f"{v:>12.1f}"
                          for v in vals)
        ratio = ""
        if len(vals) == 2 and vals[0] and vals[1] is not None:
            ratio = f"   {vals[1] / vals[0]:.2f}"
        print(f"{label:<{width}}  {cells}{ratio}")
    for tree, name in zip(trees, names):
        last = runs[tree][-1]
        print(f"\n{name}: commands inside the scripts, per task (calls, usec)")
        for phase in ("register", "claim", "report", "drain"):
            if phase not in last:
                continue
            inner = last[phase]["inner"]
            top = ", ".join(f"{k} {c:.2f}/{u:.1f}" for k, (c, u) in list(inner.items())[:9])
            print(f"  {phase:<8} script {last[phase]['script_us']:.1f} us, inner "
                  f"{last[phase]['inner_us']:.1f} us: {top}")


def print_stacks(path: str, top: int = 25) -> None:
    """Inclusive and self sample shares per function, from py-spy's raw
    (collapsed) output. Idle samples (the loop waiting in select) included."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    print(f"worker stacks: {total} samples")
    print("inclusive:")
    for f, c in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * c / total:5.1f}%  {f}")
    print("self:")
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
