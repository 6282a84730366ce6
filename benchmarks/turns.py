"""How a drain shares the cores: each process's CPU over the middle of it.

    python -m benchmarks.turns                       # async no-ops, 20,000, medians of 3
    python -m benchmarks.turns --kind noop --repeat 5 --concurrency 20

Issue 9 asks two worker processes for 1.3x one worker's drain on this
2-core machine. Whether a second worker can add that depends on what one
worker leaves idle. This drains ``-n`` prefilled no-ops with one and then
two real ``taskmesh worker --burst`` processes (interleaved, ``--repeat``
times) against one private redis-server, and between 20% and 90% done
(start-up and the tail left out) reports the rate and, for the workers
together and for redis-server, the share of a core used (CPU seconds / wall
seconds) and the CPU µs per task.

``--pin`` puts redis-server on core 0 and the workers on core 1, to tell the
design's turn-taking from the scheduler's placement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import Any

from taskmesh.server import RedisServer

from .driver import Workers, watch
from .systems import Taskmesh

FROM, TO = 0.2, 0.9  # of the drain: the window measured


def drain(system: Taskmesh, kind: str, n: int, workers: int, concurrency: int,
          redis_pid: int, pin: bool) -> dict[str, Any]:
    """One drain, timed over FROM-TO of it by the benchmark's own poller
    (driver.watch: rate, and the workers' and redis-server's CPU per task)."""
    system.flush()
    system.prefill(kind, n)
    with tempfile.TemporaryDirectory() as logdir:
        procs = Workers(system, kind, workers, concurrency, burst=True, logdir=logdir,
                        label="turns")
        try:
            if pin:
                for pid in procs.pids():
                    os.sched_setaffinity(pid, {1})
            res = watch(system, procs, n, poll=0.005, timeout=600, first_at=int(n * FROM),
                        window=int(n * (TO - FROM)), redis_pid=redis_pid)
            procs.wait(30)
        finally:
            procs.stop()
    rate = res["per_s"]
    us_per_task = [res["worker_cpu_ms_per_task"] * 1000, res["redis_cpu_ms_per_task"] * 1000]
    return {"rate": rate, "us_per_task": us_per_task,
            "share": [us * rate / 1e6 for us in us_per_task]}


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
        shares = ", ".join(f"{name} {share:.2f}" for name, share
                           in zip(("workers", "redis-server"), _medians(runs[workers], "share")))
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
