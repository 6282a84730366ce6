"""Does a sharded namespace spread over a Redis Cluster? (issue 10, SPEC §14)

    python -m benchmarks.cluster                   # about 2 minutes on the 2-core VM
    python -m benchmarks.cluster -n 2000 --workers 1,2   # a quick check
    python -m benchmarks.cluster --json out.json

One run starts a private single ``redis-server`` (the baseline) and a
private local Redis Cluster of 3 masters + 3 replicas (``taskmesh.server``,
the launcher the tests use: free ports, never 6379, persistence off; every
process stopped by PID at the end), then for
each set-up - single Redis with ``shards=1``, the same with one replica
(what replication costs a master, apart from cluster mode), the cluster
with ``shards=1``, the cluster with ``shards=3`` - in a fresh namespace:

* **register**: ``register_many`` of ``-n`` async no-op tasks (batches of
  500, what a bulk producer sends);
* **drain**: W ``taskmesh worker --burst`` processes (``--concurrency``
  each) run them all.

Redis CPU is read per node, master and replica, from
``/proc/<pid>/task/*/schedstat`` (nanoseconds; ``INFO cpu`` rounds to the
scheduler tick) before and after each phase and divided by the tasks. It
does not depend on how busy the machine is, unlike the rates. Throughput
is taken from the tasks' own ``finished_at`` stamps (Redis clock): the
middle 80 % of completions over the time they took, so worker start-up and
the last stragglers are left out. On this machine 2 cores carry 6 redis
nodes, the producer and the workers: the throughput rows show what such a
box gives, not what 3 real nodes would; the per-node CPU is what sizes a
real cluster (README *Sizing*).

A last part measures memory on a fresh single Redis: ``INFO memory``
``used_memory`` before and after registering ``--memory-tasks`` tasks
(queued), after a worker ran them (finished, with their events in the
replay stream) and after the event streams are trimmed (finished records
alone).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import redis

from taskmesh import TaskManager

from .procstat import cpu_s, write_json
from taskmesh.server import SYNC_AT_ONCE, LocalCluster, RedisServer, replicas_streaming, wait_for

FUNC = "benchmarks.tasks:anoop"
BATCH = 500
ROOT = Path(__file__).resolve().parent.parent


class Node:
    """One redis-server process as the benchmark sees it."""

    def __init__(self, name: str, port: int, pid: int):
        self.name, self.port, self.pid = name, port, pid

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def role(self) -> str:
        role = self.client().execute_command("ROLE")[0]
        return role.decode() if isinstance(role, bytes) else str(role)


# ---- set-ups -------------------------------------------------------------------------

class ClusterSetup:
    """A local 3-master + 3-replica cluster (taskmesh.server, as the tests use)."""

    def __init__(self) -> None:
        self.cluster = LocalCluster().start()
        self.url = self.cluster.url
        self.nodes = [Node(f":{n.port}", int(n.port or 0), int(n.pid or 0))
                      for n in self.cluster.nodes]

    def master_of_slot(self, slot: int) -> int:
        return int(self.cluster.node_for_slot(slot).port or 0)

    def stop(self) -> None:
        self.cluster.cleanup()


class SingleSetup:
    """One redis-server, with one replica if asked (to tell what
    replication costs a master from what cluster mode costs)."""

    def __init__(self, replica: bool = False) -> None:
        self.servers = [RedisServer(extra_args=SYNC_AT_ONCE).start()]
        primary = self.servers[0]
        if replica:
            self.servers.append(RedisServer(extra_args=[
                "--replicaof", "127.0.0.1", str(primary.port)]).start())
            wait_for(lambda: replicas_streaming(primary.client(), 1), 30, "the replica in sync")
        self.url = primary.url
        self.nodes = [Node(f":{s.port}", int(s.port or 0), int(s.pid or 0)) for s in self.servers]

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.cleanup()


# ---- measurement ------------------------------------------------------------------------

def _snapshot(nodes: Sequence[Node]) -> dict[str, int]:
    return {n.name: round((cpu_s(n.pid) or 0.0) * 1e9) for n in nodes}


def _per_task_us(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) / 1e3 / n for name in before}


def idle_us_per_s(nodes: Sequence[Node], seconds: float = 2.0) -> dict[str, float]:
    """What each node burns doing nothing (cron, cluster-bus gossip, replica
    pings): part of every per-task figure below, proportional to wall time."""
    before = _snapshot(nodes)
    time.sleep(seconds)
    after = _snapshot(nodes)
    return {name: (after[name] - before[name]) / 1e3 / seconds for name in before}


def _workers(url: str, namespace: str, count: int, concurrency: int) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    argv = [sys.executable, "-m", "taskmesh", "worker", "--url", url, "--namespace", namespace,
            "--concurrency", str(concurrency), "--burst"]
    return [subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE) for _ in range(count)]


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()  # by PID: only processes this run started
            proc.wait()


def _rate(tm: TaskManager, ids: Sequence[str]) -> float:
    """Completions per second over the middle 80 % of the finish stamps."""
    stamps = sorted(float(tm.get_task(i).finished_at or 0.0) for i in ids)
    low, high = len(stamps) // 10, len(stamps) * 9 // 10
    span = stamps[high] - stamps[low]
    return (high - low) / span if span > 0 else float("nan")


def run_case(setup: Any, shards: int, n: int, workers: int, concurrency: int) -> dict[str, Any]:
    namespace = f"bc{uuid.uuid4().hex[:10]}"
    with TaskManager(setup.url, namespace=namespace, shards=shards) as tm:
        placement = _placement(setup, tm)
        c0, t0 = _snapshot(setup.nodes), time.perf_counter()
        ids: list[str] = []
        for start in range(0, n, BATCH):
            ids += tm.register_many(FUNC, [()] * min(BATCH, n - start))
        c1, t1 = _snapshot(setup.nodes), time.perf_counter()
        procs = _workers(setup.url, namespace, workers, concurrency)
        try:
            for proc in procs:
                if proc.wait(300) != 0:
                    raise SystemExit(f"worker failed: {proc.stderr.read().decode()[-2000:]}")
        finally:
            _stop(procs)
        c2 = _snapshot(setup.nodes)
        done = tm.get_metrics()["tasks"]["completed"]
        if done != n:
            raise SystemExit(f"{done} of {n} tasks completed")
        rate = _rate(tm, ids)
    return {"shards": shards, "workers": workers, "tasks": n, "placement": placement,
            "register_us": _per_task_us(c0, c1, n), "drain_us": _per_task_us(c1, c2, n),
            "tasks_per_s": round(rate, 1), "register_per_s": round(n / (t1 - t0), 1)}


def _placement(setup: Any, tm: TaskManager) -> dict[str, list[int]]:
    """Which node is master of which of the namespace's shards."""
    if not hasattr(setup, "master_of_slot"):
        return {setup.nodes[0].name: list(range(len(tm._shards().keys)))}
    from redis.crc import key_slot

    out: dict[str, list[int]] = {}
    for i, keys in enumerate(tm._shards().keys):
        port = setup.master_of_slot(key_slot(keys.seq.encode()))
        out.setdefault(f":{port}", []).append(i)
    return out


def memory(n: int, concurrency: int) -> dict[str, float]:
    server = RedisServer().start()
    try:
        r = redis.Redis.from_url(server.url)
        namespace = f"mem{uuid.uuid4().hex[:8]}"
        with TaskManager(server.url, namespace=namespace) as tm:
            tm.register_task(FUNC)  # scripts loaded, settings written: not per-task memory
            procs = _workers(server.url, namespace, 1, concurrency)
            for proc in procs:
                proc.wait(120)
            base = int(r.info("memory")["used_memory"])
            ids: list[str] = []
            for start in range(0, n, BATCH):
                ids += tm.register_many(FUNC, [()] * min(BATCH, n - start))
            queued = int(r.info("memory")["used_memory"])
            procs = _workers(server.url, namespace, 1, concurrency)
            try:
                for proc in procs:
                    proc.wait(300)
            finally:
                _stop(procs)
            finished = int(r.info("memory")["used_memory"])
            for keys in tm._shards().keys:
                r.xtrim(keys.events, maxlen=0)
            trimmed = int(r.info("memory")["used_memory"])
        return {"queued_bytes": round((queued - base) / n),
                "finished_with_events_bytes": round((finished - base) / n),
                "finished_bytes": round((trimmed - base) / n)}
    finally:
        server.cleanup()


# ---- report ------------------------------------------------------------------------------

def _roles(setup: Any) -> dict[str, str]:
    return {n.name: n.role() for n in setup.nodes}


def print_cpu_table(label: str, case: dict[str, Any], roles: dict[str, str],
                    idle: dict[str, float]) -> None:
    print(f"\n{label}: redis-server CPU us per task, per node "
          f"({case['tasks']} tasks, {case['workers']} workers; register "
          f"{case['register_per_s']:.0f} tasks/s)")
    print(f"  {'node':8s} {'role':7s} {'shards':8s} {'register':>9s} {'drain':>9s} {'total':>9s}"
          f" {'idle us/s':>10s}")
    owned = {node: ",".join(map(str, shards)) for node, shards in case["placement"].items()}
    totals = [0.0, 0.0]
    for name in case["register_us"]:
        reg, drain = case["register_us"][name], case["drain_us"][name]
        totals[0] += reg
        totals[1] += drain
        print(f"  {name:8s} {roles.get(name, '?')[:7]:7s} {owned.get(name, '-'):8s} "
              f"{reg:9.1f} {drain:9.1f} {reg + drain:9.1f} {idle.get(name, 0.0):10.0f}")
    print(f"  {'all':8s} {'':7s} {'':8s} {totals[0]:9.1f} {totals[1]:9.1f} {sum(totals):9.1f}")


def _busiest(case: dict[str, Any]) -> float:
    return max(case["register_us"][k] + case["drain_us"][k] for k in case["register_us"])


def _masters_total(case: dict[str, Any], roles: dict[str, str]) -> float:
    return sum(case["register_us"][k] + case["drain_us"][k]
               for k in case["register_us"] if roles.get(k) == "master")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--tasks", type=int, default=6000, help="tasks per case")
    parser.add_argument("--workers", default="1,2,4",
                        help="worker process counts for the throughput rows (default 1,2,4)")
    parser.add_argument("--cpu-workers", type=int, default=2,
                        help="worker processes in the per-node CPU runs (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="per worker (default 32)")
    parser.add_argument("--memory-tasks", type=int, default=10_000)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x]
    report: dict[str, Any] = {"machine_cores": os.cpu_count(), "load_before": os.getloadavg()}
    single = SingleSetup()
    replicated = SingleSetup(replica=True)
    cluster = ClusterSetup()
    try:
        setups = (single, replicated, cluster)
        roles = {k: v for setup in setups for k, v in _roles(setup).items()}
        report["roles"] = roles
        idle = {k: v for setup in setups for k, v in idle_us_per_s(setup.nodes).items()}
        report["idle_us_per_s"] = idle
        cpu: dict[str, Any] = {
            "single, shards=1": run_case(single, 1, args.tasks, args.cpu_workers, args.concurrency),
            "single + replica, shards=1": run_case(replicated, 1, args.tasks, args.cpu_workers,
                                                   args.concurrency),
            "cluster, shards=1": run_case(cluster, 1, args.tasks, args.cpu_workers,
                                          args.concurrency),
            "cluster, shards=3": run_case(cluster, 3, args.tasks, args.cpu_workers,
                                          args.concurrency),
        }
        report["cpu"] = cpu
        throughput: list[dict[str, Any]] = []
        for w in counts:  # taking turns, so a load change hits both alike
            for label, setup, shards in (("single, shards=1", single, 1),
                                         ("cluster, shards=3", cluster, 3)):
                case = run_case(setup, shards, args.tasks, w, args.concurrency)
                throughput.append({"setup": label, "workers": w,
                                   "tasks_per_s": case["tasks_per_s"]})
        report["throughput"] = throughput
    finally:
        cluster.stop()
        replicated.stop()
        single.stop()
    report["memory"] = memory(args.memory_tasks, args.concurrency)
    report["load_after"] = os.getloadavg()

    for label, case in cpu.items():
        print_cpu_table(label, case, roles, idle)
    base = sum(cpu["single, shards=1"]["register_us"].values()) + sum(
        cpu["single, shards=1"]["drain_us"].values())
    print("\nsummary (us of redis CPU per task; a task = register + claim + report):")
    print(f"  single Redis:              {base:7.1f}  -> {1e6 / base:7.0f} tasks/s per Redis core")
    for label in ("single + replica, shards=1", "cluster, shards=1", "cluster, shards=3"):
        case = cpu[label]
        masters, busiest = _masters_total(case, roles), _busiest(case)
        print(f"  {label}: masters {masters:7.1f} (x{masters / base:.2f} of single), "
              f"busiest node {busiest:7.1f} (x{busiest / base:.2f}) -> ceiling "
              f"~{1e6 / busiest:7.0f} tasks/s")
    print(f"\nthroughput (tasks/s, middle 80 % of completions; {os.cpu_count()} cores shared by "
          f"every redis node, the producer and the workers; --concurrency {args.concurrency}):")
    for row in throughput:
        print(f"  {row['setup']:18s} workers={row['workers']}: {row['tasks_per_s']:8.1f}")
    mem = report["memory"]
    print(f"\nmemory per task ({args.memory_tasks} tasks, INFO memory used_memory delta):"
          f" queued {mem['queued_bytes']} B, finished {mem['finished_bytes']} B,"
          f" finished with its events in the stream {mem['finished_with_events_bytes']} B")
    print(f"load average before {report['load_before'][0]:.2f}, after "
          f"{report['load_after'][0]:.2f}")
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
