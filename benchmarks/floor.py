"""What one synchronous call per task can reach on this machine.

    python -m benchmarks.floor                 # medians of 5, 3,000 calls each
    python -m benchmarks.floor --repeat 7 -n 5000

Issue 9 asks a single ``register_task`` for twice huey's enqueue rate. A
call that returns only once Redis has stored the task waits for one reply
at least, so the floor of any such call is a bare round trip. This measures,
against one private redis-server and interleaved (each repetition runs every
line once, in turn), calls per second of:

* a bare PING over a raw socket (hiredis reads the reply): the round trip
  alone, no client library;
* ``EVALSHA`` of ``return 1`` over the same socket: a script call that does
  nothing;
* a bare PING through redis-py (what huey's LPUSH runs through);
* huey's enqueue, through the benchmark's own adapter in huey's pinned
  virtualenv (:mod:`benchmarks.peer_envs`), as ``python -m benchmarks`` runs it;
* ``register_task``, the same way, with its client CPU and redis-server's
  time per call (``INFO commandstats``).

Each line is printed as calls/s, µs per call and a ratio to huey's rate, so
"2x huey" reads as a time budget per call beside what a round trip costs.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from typing import Any, Callable

import hiredis
import redis

from taskmesh.server import RedisServer

from . import peer_envs
from .cli import run_driver


def _raw_loop(port: int, command: tuple[Any, ...], n: int) -> float:
    """Calls/s of one command sent and its reply read, n times, on a raw socket."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    packed, reader = hiredis.pack_command(command), hiredis.Reader()
    try:
        started = time.perf_counter()
        for _ in range(n):
            sock.sendall(packed)
            reply = reader.gets()
            while reply is False:
                reader.feed(sock.recv(65536))
                reply = reader.gets()
        return n / (time.perf_counter() - started)
    finally:
        sock.close()


def _client_loop(call: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - started)


def _through_driver(python: str, system: str, url: str, n: int) -> float:
    """One system's single-call enqueue rate, as the benchmark measures it."""
    spec = {"system": system, "url": url, "namespace": f"floor-{system}", "workload": "enqueue",
            "params": {"kind": "noop", "n_single": n, "n_batch": 1}}
    result, err = run_driver(python, spec, timeout=300)
    if result is None:
        raise SystemExit(f"{system}'s enqueue failed: {err}")
    return float(result["enqueue_single_per_s"])


def _register_split(url: str, n: int) -> tuple[float, float, float]:
    """register_task calls/s, this process's CPU µs per call and
    redis-server's µs per call (its EVALSHA time)."""
    from taskmesh import TaskManager

    client = redis.Redis.from_url(url)
    manager = TaskManager(url, namespace="floor-split")
    try:
        for _ in range(100):  # scripts loaded, connections made
            manager.register_task("benchmarks.tasks:noop")
        client.config_resetstat()
        cpu0, started = time.process_time(), time.perf_counter()
        for _ in range(n):
            manager.register_task("benchmarks.tasks:noop")
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
        evalsha = client.info("commandstats").get("cmdstat_evalsha", {})
        redis_us = float(evalsha.get("usec", 0)) / max(int(evalsha.get("calls", 0)), 1)
        return n / wall, cpu * 1e6 / n, redis_us
    finally:
        manager.close()
        client.flushdb()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000, help="calls per line and repetition")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions (medians)")
    args = parser.parse_args(argv)
    huey_python = peer_envs.ensure("huey", log=lambda msg: print(msg, file=sys.stderr))
    if huey_python is None:
        raise SystemExit("huey's virtualenv could not be built (see above)")
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        sha = client.script_load("return 1")
        port = int(server.port)  # type: ignore[arg-type]
        lines: dict[str, list[float]] = {}
        splits: list[tuple[float, float, float]] = []
        for _ in range(args.repeat):
            runs: dict[str, Callable[[], float]] = {
                "bare PING, raw socket": lambda: _raw_loop(port, ("PING",), args.n),
                "EVALSHA 'return 1', raw socket": lambda: _raw_loop(port, ("EVALSHA", sha, 0),
                                                                    args.n),
                "bare PING through redis-py": lambda: _client_loop(client.ping, args.n),
                "huey enqueue (benchmark adapter)": lambda: _through_driver(
                    str(huey_python), "huey", server.url, args.n),
                "taskmesh register_task (benchmark adapter)": lambda: _through_driver(
                    sys.executable, "taskmesh", server.url, args.n),
            }
            for label, run in runs.items():
                lines.setdefault(label, []).append(run())
                client.flushdb()
            splits.append(_register_split(server.url, args.n))
        client.close()
    finally:
        server.stop()
    huey = statistics.median(lines["huey enqueue (benchmark adapter)"])
    print(f"{args.n:,} calls per line, medians of {args.repeat} interleaved repetitions "
          "(one private redis-server)")
    print(f"{'':44s} {'calls/s':>9s} {'us/call':>8s} {'x huey':>7s}")
    for label, rates in lines.items():
        rate = statistics.median(rates)
        print(f"{label:44s} {rate:9,.0f} {1e6 / rate:8.1f} {rate / huey:7.2f}")
    print(f"{'2x huey (the issue 9 target)':44s} {2 * huey:9,.0f} {1e6 / (2 * huey):8.1f} "
          f"{2.0:7.2f}")
    rate, client_us, redis_us = (statistics.median(s[i] for s in splits) for i in range(3))
    print(f"register_task, in this process: {rate:,.0f}/s, {client_us:.1f} us of client CPU "
          f"and {redis_us:.1f} us of redis-server time (EVALSHA) per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
