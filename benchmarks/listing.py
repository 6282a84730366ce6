"""What finding tasks costs (SPEC §11, issue 11): a taskmesh-only case.

    python -m benchmarks.listing                      # N = 1k and 1M (the 1M fill takes a while)
    python -m benchmarks.listing --sizes 1000,20000   # a quick check
    python -m benchmarks.listing --json out.json

Two figures, each on its own private ``redis-server`` (see taskmesh/server.py):

* **Registration cost of the indexes.** ``register_many`` of the same
  import-string no-op, without tags and with two tags, and deferred (the
  PENDING home is a seq-scored zset now, no longer a set): Redis CPU per
  registration from ``INFO commandstats`` (usec of EVALSHA), and wall time.
* **Page cost.** N tasks are stored (three quarters QUEUED over two queues,
  one quarter finished — half tagged ``bench``), then a page of 10 is read
  20 times per listing shape: record reads per page (HGETALL calls counted
  by ``INFO commandstats``), Redis usec per page, and wall ms. A page should
  cost the same at 1M as at 1k.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from taskmesh import TaskManager, TaskStatus, scripts
from taskmesh.server import RedisServer

from .procstat import write_json

FUNC = "benchmarks.tasks:noop"
BATCH = 5000
PAGE_REPEAT = 20


def _stats(client: Any) -> dict[str, dict[str, float]]:
    return {name.removeprefix("cmdstat_"): value
            for name, value in client.info("commandstats").items()}


def _delta(before: dict, after: dict, command: str, field: str) -> float:
    return float(after.get(command, {}).get(field, 0)) - float(before.get(command, {}).get(field, 0))


def registration_cost(url: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shapes: dict[str, dict[str, Any]] = {
        "no tags": {}, "2 tags": {"tags": ["billing", "eu"]}, "deferred": {"defer": True},
    }
    for label, options in shapes.items():
        with TaskManager(url, namespace=f"reg{len(out)}") as tm:
            before = _stats(tm._client)
            began = time.perf_counter()
            tm.register_many(FUNC, range(n), **options)
            wall = time.perf_counter() - began
            after = _stats(tm._client)
            out[label] = {
                "redis_us_per_task": round(_delta(before, after, "evalsha", "usec") / n, 2),
                "wall_us_per_task": round(wall / n * 1e6, 2),
            }
    return out


def _fill(tm: TaskManager, n: int) -> None:
    """3/4 QUEUED (queues a and b), 1/4 finished: deferred then cancelled in
    one script each (no worker needed). Every other task is tagged."""
    finished = n // 4
    queued = n - finished
    for start in range(0, queued, BATCH):
        size = min(BATCH, queued - start)
        half = size // 2
        tm.register_many(FUNC, range(half), queue="a", tags=["bench"])
        tm.register_many(FUNC, range(size - half), queue="b")
    for start in range(0, finished, BATCH):
        ids = tm.register_many(FUNC, range(min(BATCH, finished - start)), defer=True,
                               tags=["bench"])
        scripts.run_batch(tm._client, [tm.commands.cancel(task_id) for task_id in ids])


SHAPES: dict[str, dict[str, Any]] = {
    "all (no filter)": {},
    "status=queued": {"status": TaskStatus.QUEUED},
    "status=cancelled": {"status": TaskStatus.CANCELLED},
    "queue=b": {"queue": "b"},
    "tag=bench": {"tag": "bench"},
    "tag=bench, status=cancelled": {"tag": "bench", "status": TaskStatus.CANCELLED},
    "2nd page, status=queued": {"status": TaskStatus.QUEUED, "_second": True},
}


def page_cost(url: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with TaskManager(url, namespace=f"page{n}") as tm:
        began = time.perf_counter()
        _fill(tm, n)
        out["fill_s"] = round(time.perf_counter() - began, 1)
        # Load list.lua once so the first timed page does not pay for it.
        tm.list_tasks(limit=1)
        for label, shape in SHAPES.items():
            options = {k: v for k, v in shape.items() if not k.startswith("_")}
            cursor = tm.list_tasks(limit=10, **options).cursor if shape.get("_second") else None
            walls, reads, usecs = [], [], []
            for _ in range(PAGE_REPEAT):
                before = _stats(tm._client)
                t0 = time.perf_counter()
                page = tm.list_tasks(limit=10, cursor=cursor, **options)
                walls.append((time.perf_counter() - t0) * 1000)
                after = _stats(tm._client)
                reads.append(_delta(before, after, "hgetall", "calls"))
                usecs.append(sum(_delta(before, after, c, "usec") for c in after if c != "info"))
            assert len(page.tasks) == 10, (label, len(page.tasks))
            out[label] = {"record_reads": statistics.median(reads),
                          "redis_us": round(statistics.median(usecs), 1),
                          "wall_ms": round(statistics.median(walls), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.listing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,1000000",
                        help="task counts N to list from (default 1000,1000000)")
    parser.add_argument("--registrations", type=int, default=20_000,
                        help="tasks per registration-cost measurement")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    report: dict[str, Any] = {"sizes": sizes}
    with RedisServer() as server:
        report["registration"] = registration_cost(server.url, args.registrations)
        print(f"registration cost ({args.registrations} tasks each, register_many):")
        for label, row in report["registration"].items():
            print(f"  {label:10s} redis {row['redis_us_per_task']:7.2f} us/task"
                  f"   wall {row['wall_us_per_task']:7.2f} us/task")
    report["pages"] = {}
    for n in sizes:
        with RedisServer() as server:  # a fresh server per N: nothing else in it
            report["pages"][n] = page_cost(server.url, n)
    print("\npage of 10 (median of %d):" % PAGE_REPEAT)
    header = "  " + "shape".ljust(30) + "".join(f"{'N=' + str(n):>34s}" for n in sizes)
    print(header)
    print("  " + " " * 30 + "".join(f"{'reads  redis us   wall ms':>34s}" for _ in sizes))
    for label in SHAPES:
        cells = []
        for n in sizes:
            row = report["pages"][n][label]
            cells.append(f"{row['record_reads']:>10.0f}{row['redis_us']:>11.1f}"
                         f"{row['wall_ms']:>10.3f}   ")
        print("  " + label.ljust(30) + "".join(f"{c:>34s}" for c in cells))
    print("  fill time: " + ", ".join(f"N={n}: {report['pages'][n]['fill_s']} s" for n in sizes))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
