"""Dashboard page-load times with many tasks in the namespace (SPEC §15).

    python -m benchmarks.dashboard                      # 100k tasks
    python -m benchmarks.dashboard --tasks 20000 --repeat 10

On a private ``redis-server``: ``register_many`` of N import-string no-ops,
three quarters left QUEUED in ``default``, one quarter in ``done`` drained
by burst worker processes (so finished tasks are listed too), then a real
``taskmesh dashboard`` process is started and each address is fetched
``--repeat`` times (after one warm-up) over loopback with httpx: median and
p95 wall ms per request. No page scans the namespace, so the figures should
not grow with N.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from taskmesh import TaskManager
from taskmesh.server import RedisServer, free_port

FUNC = "benchmarks.tasks:noop"


def _fill(url: str, namespace: str, n: int) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with TaskManager(url, namespace=namespace) as tm:
        queued = n - n // 4
        t0 = time.perf_counter()
        first = tm.register_many(FUNC, range(queued), tags=["bench"])[0]
        tm.register_many(FUNC, range(n // 4), queue="done")
        print(f"registered {n} tasks in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        workers = [subprocess.Popen([sys.executable, "-m", "taskmesh", "worker", "--url", url,
                                     "--namespace", namespace, "--queues", "done", "--burst",
                                     "--concurrency", "50"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(2)]
        for w in workers:
            w.wait(600)
        print(f"drained {n // 4} in {time.perf_counter() - t0:.1f} s", flush=True)
        finished = tm.list_tasks(status="completed", limit=1).tasks[0].id
        return first, finished


def _time(client: httpx.Client, path: str, repeat: int) -> tuple[float, float, int]:
    client.get(path)  # warm-up
    samples = []
    status = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        status = resp.status_code
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return statistics.median(samples), p95, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    namespace = "dashbench"
    with RedisServer() as server:
        url = server.url
        queued_id, finished_id = _fill(url, namespace, args.tasks)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "taskmesh", "dashboard", "--url", url,
                                 "--namespace", namespace, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(base + "/static/dashboard.css", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            paths = ["/", "/api/metrics", "/tasks", "/api/tasks?limit=100",
                     "/api/tasks?status=completed&limit=100", "/api/tasks?tag=bench&limit=1000",
                     f"/tasks/{queued_id}", f"/api/tasks/{finished_id}", f"/tasks/{finished_id}",
                     "/events"]
            rows: list[tuple[str, Any, Any, Any]] = []
            with httpx.Client(base_url=base, timeout=30) as client:
                for path in paths:
                    rows.append((path, *_time(client, path, args.repeat)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    print(f"\n{args.tasks} tasks in the namespace, {args.repeat} requests each (loopback):")
    print(f"{'address':60} {'median ms':>10} {'p95 ms':>8}  status")
    for path, median, p95, status in rows:
        print(f"{path:60} {median:10.1f} {p95:8.1f}  {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
