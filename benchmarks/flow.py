"""Flow-control figures (SPEC §13, issue 12): a taskmesh-only case.

    python -m benchmarks.flow            # about half a minute
    python -m benchmarks.flow --json out.json

Each figure runs on its own private ``redis-server`` with real worker
processes (``python -m taskmesh worker``):

* **Rate-limit precision.** 20 tasks under one limit of 5/s, burst 1, two
  workers: gaps between claims (``TASK_STARTED``, stamped from Redis TIME).
  Ideal: 0.200 s each, 3.8 s in all.
* **No head-of-line blocking.** 1,000 tasks limited to 1/s at the head of a
  queue, then 1,000 plain no-op tasks behind them, one worker: drain time of
  the plain ones, against the same 1,000 alone.
* **Aging's claim cost.** 10,000 no-op tasks of four priorities drained by one
  ``--burst`` worker, with priority aging off and on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from taskmesh import EventType, TaskManager
from taskmesh.server import RedisServer

from .procstat import write_json

FUNC = "benchmarks.tasks:noop"
ROOT = Path(__file__).resolve().parent.parent


def _worker(url: str, namespace: str, *flags: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "taskmesh", "worker", "--url", url,
                             "--namespace", namespace, *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


def rate_precision(url: str) -> dict[str, Any]:
    with TaskManager(url, namespace="rate") as tm:
        tm.set_rate_limit("api", 5, burst=1)
        ids = [tm.register_task(FUNC, rate_key="api") for _ in range(20)]
        workers = [_worker(url, "rate", "--concurrency", "4") for _ in range(2)]
        try:
            for t in ids:
                tm.wait_for_task_sync(t, timeout=60)
        finally:
            _stop(*workers)
        starts = sorted(e.timestamp for e in tm.get_events(count=1000)
                        if e.type is EventType.TASK_STARTED)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        return {"gap_min_s": round(min(gaps), 4), "gap_median_s": round(statistics.median(gaps), 4),
                "gap_max_s": round(max(gaps), 4), "total_s": round(starts[-1] - starts[0], 3),
                "workers_used": len({tm.get_task(t).worker for t in ids})}


def _drain_plain(url: str, namespace: str, limited: int) -> float:
    with TaskManager(url, namespace=namespace) as tm:
        tm.set_rate_limit("slow", 1, burst=1)
        if limited:
            tm.register_many(FUNC, range(limited), rate_key="slow")
        plain = tm.register_many(FUNC, range(1000))
        began = time.perf_counter()
        worker = _worker(url, namespace, "--concurrency", "10")
        try:
            for t in plain:
                tm.wait_for_task_sync(t, timeout=120)
            return time.perf_counter() - began
        finally:
            _stop(worker)


def head_of_line(url: str) -> dict[str, Any]:
    return {"plain_alone_s": round(_drain_plain(url, "hol0", 0), 3),
            "plain_behind_1000_limited_s": round(_drain_plain(url, "hol1", 1000), 3)}


def _drain_mixed(url: str, namespace: str, aging: float | None) -> float:
    with TaskManager(url, namespace=namespace, priority_aging_s=aging) as tm:
        for p in (0, 5, 10, 15):
            tm.register_many(FUNC, range(2500), priority=p)
        began = time.perf_counter()
        worker = _worker(url, namespace, "--burst", "--concurrency", "10")
        worker.wait(300)
        elapsed = time.perf_counter() - began
        assert tm.get_metrics()["tasks"]["completed"] == 10_000
        return elapsed


def aging_cost(url: str) -> dict[str, Any]:
    off = _drain_mixed(url, "age0", None)
    on = _drain_mixed(url, "age1", 0.5)
    return {"drain_per_s_aging_off": round(10_000 / off), "drain_per_s_aging_on": round(10_000 / on)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    for name, case in (("rate_precision", rate_precision), ("head_of_line", head_of_line),
                       ("aging_cost", aging_cost)):
        with RedisServer() as server:
            report[name] = case(server.url)
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in report[name].items()))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
