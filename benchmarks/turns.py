"""How a drain shares the cores: each process's CPU over the middle of it.

    python -m benchmarks.turns                       # async no-ops, 20,000, medians of 3
    python -m benchmarks.turns --kind noop --repeat 5 --concurrency 20

Issue 9 asks two worker processes for 1.3x one worker's drain on this
2-core machine. Whether a second worker can add that depends on what one
worker leaves idle. This drains ``-n`` prefilled no-ops with one and then
two real ``taskmesh worker --burst`` processes (interleaved, ``--repeat``
times) against one private redis-server, and between 20% and 90% done
(start-up and the tail left out) reports the rate and, per process, the
share of a core it used (CPU seconds / wall seconds) and its CPU µs per task.

``--pin`` puts redis-server on core 0 and the workers on core 1, to tell the
design's turn-taking from the scheduler's placement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from taskmesh.server import RedisServer

from .driver import Workers
from .procstat import cpu_s
from .systems import Taskmesh

FROM, TO = 0.2, 0.9  # of the drain: the window measured


def _sample(pids: list[int]) -> list[float]:
    return [cpu_s(pid) or 0.0 for pid in pids]


def drain(system: Taskmesh, kind: str, n: int, workers: int, concurrency: int,
          redis_pid: int, pin: bool) -> dict[str, Any]:
    system.flush()
    system.prefill(kind, n)
    with tempfile.TemporaryDirectory() as logdir:
        procs = Workers(system, kind, workers, concurrency, burst=True, logdir=logdir,
                        label="turns")
        try:
            if pin:
                for pid in procs.pids():
                    os.sched_setaffinity(pid, {1})
            pids = procs.pids() + [redis_pid]
            start = end = None
            while end is None:
                done, now = system.done_count(), time.perf_counter()
                if start is None and done >= n * FROM:
                    start = (now, done, _sample(pids))
                elif start is not None and done >= n * TO:
                    end = (now, done, _sample(pids))
                problem = procs.crashed()
                if problem:
                    raise SystemExit(problem)
                time.sleep(0.005)
            procs.wait(30)
        finally:
            procs.stop()
    assert start is not None
    (t0, d0, cpu0), (t1, d1, cpu1) = start, end
    spent = [b - a for a, b in zip(cpu0, cpu1)]
    return {"rate": (d1 - d0) / (t1 - t0),
            "share": [s / (t1 - t0) for s in spent],
            "us_per_task": [s * 1e6 / (d1 - d0) for s in spent]}


def _medians(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [statistics.median(run[key][i] for run in runs) for i in range(len(runs[0][key]))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turns", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="anoop", choices=("anoop", "noop"),
                        help="anoop: async def no-ops (default); noop: def no-ops")
    parser.add_argument("-n", type=int, default=20_000, help="tasks per drain")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10, help="per worker (default 10)")
    parser.add_argument("--pin", action="store_true",
                        help="redis-server on core 0, the workers on core 1")
    args = parser.parse_args(argv)
    server = RedisServer().start()
    try:
        redis_pid = server.pid
        assert redis_pid is not None
        if args.pin:
            os.sched_setaffinity(redis_pid, {0})
        system = Taskmesh(server.url, "turns")
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for workers in (1, 2):
                runs[workers].append(drain(system, args.kind, args.n, workers,
                                           args.concurrency, redis_pid, args.pin))
        system.close()
    finally:
        server.stop()
    print(f"{args.kind} x {args.n:,}, concurrency {args.concurrency}, {FROM:.0%}-{TO:.0%} of "
          f"each drain, medians of {args.repeat}{', pinned' if args.pin else ''}")
    for workers, label in ((1, "1 worker "), (2, "2 workers")):
        rate = statistics.median(run["rate"] for run in runs[workers])
        names = [f"worker {i + 1}" for i in range(workers)] + ["redis-server"]
        shares = ", ".join(f"{name} {share:.2f}" for name, share
                           in zip(names, _medians(runs[workers], "share")))
        costs = ", ".join(f"{cost:.1f}" for cost in _medians(runs[workers], "us_per_task"))
        total = sum(_medians(runs[workers], "share"))
        print(f"{label}: {rate:9,.0f} tasks/s; cores used: {shares} (sum {total:.2f} of 2); "
              f"CPU us per task: {costs}")
    one = statistics.median(run["rate"] for run in runs[1])
    two = statistics.median(run["rate"] for run in runs[2])
    print(f"2 workers / 1 worker: {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
