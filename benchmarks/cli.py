"""``python -m benchmarks``: runs the cases against taskmesh and the peers
found, on one private redis-server, and prints one table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import cases as C
from . import peer_envs
from taskmesh.server import RedisServer, RedisServerError
from .systems import PEERS, SYSTEMS, System

REPO_ROOT = Path(__file__).resolve().parent.parent

_PROBE = r"""
import importlib.util, json, sys
from importlib.metadata import version
def v(name):
    try:
        return version(name)
    except Exception:
        return None
mods = sys.argv[1].split(",")
print(json.dumps({"python": sys.version.split()[0],
                  "found": {m: importlib.util.find_spec(m) is not None for m in mods},
                  "versions": {m: v(m) for m in mods + ["redis", "hiredis"]}}))
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="taskmesh benchmarks (SPEC §6), optionally side by side with RQ, arq, ...",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, < 1 min (smoke test)")
    p.add_argument("--full", action="store_true", help="add the 1M-task backlog (slow)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated groups to run: {', '.join(C.GROUPS)}")
    p.add_argument("--json", dest="json_path", default=None, help="write all results here")
    p.add_argument("--repeat", type=int, default=1, help="run everything K times, report medians")
    p.add_argument("--peers", default="all",
                   help="'all' (default: every peer found), 'none', or a comma list of "
                        f"{', '.join(PEERS)}")
    p.add_argument("--peer-python", action="append", default=[],
                   help="another interpreter to look for peer libraries in (repeatable; also "
                        "$TASKMESH_BENCH_PEER_PYTHON, os.pathsep-separated)")
    p.add_argument("--no-peer-venvs", action="store_true",
                   help="do not build the peers' pinned virtualenvs (benchmarks/peer_envs.py); "
                        "look only in this interpreter and --peer-python")
    p.add_argument("--concurrency", type=int, default=None,
                   help="per-worker concurrency for drain/latency/backlog (default 10)")
    p.add_argument("--redis-server", default="redis-server", help="redis-server executable")
    p.add_argument("--baseline", metavar="TREE", default=None,
                   help="another taskmesh checkout, run as the column 'taskmesh-before' "
                        "(before/after in one run; its tm/ column is after/before)")
    p.add_argument("--keep-logs", action="store_true", help="keep worker logs (path printed)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.baseline and not (Path(args.baseline) / "taskmesh" / "__init__.py").is_file():
        p.error(f"--baseline {args.baseline}: no taskmesh/ package in that directory")
    if args.only:
        only = {g.strip() for g in args.only.split(",") if g.strip()}
        bad = only - set(C.GROUPS)
        if bad:
            p.error(f"unknown --only group(s): {', '.join(sorted(bad))}; choose from "
                    f"{', '.join(C.GROUPS)}")
        args.only = only
    return args


# ---- finding the systems ----------------------------------------------------------
def probe(python: str, modules: list[str]) -> dict | None:
    try:
        out = subprocess.run([python, "-c", _PROBE, ",".join(modules)], capture_output=True,
                             text=True, timeout=60, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def find_systems(args: argparse.Namespace) -> tuple[dict[str, dict], list[str]]:
    """Returns {name: {"python", "version", "redis", "hiredis"}} and skip notes."""
    pythons = [sys.executable] + list(args.peer_python)
    env_py = os.environ.get("TASKMESH_BENCH_PEER_PYTHON")
    if env_py:
        pythons += [x for x in env_py.split(os.pathsep) if x]
    if args.peers == "none":
        wanted: list[str] = []
    elif args.peers == "all":
        wanted = list(PEERS)
    else:
        wanted = [x.strip() for x in args.peers.split(",") if x.strip()]
    venvs: dict[str, str] = {}
    if not args.no_peer_venvs:
        for name in wanted:
            if name in peer_envs.PINS:
                python = peer_envs.ensure(name, log=lambda msg: print(msg, file=sys.stderr))
                if python is not None:
                    venvs[name] = str(python)
    modules = ["taskmesh"] + [SYSTEMS[w].module for w in wanted if w in SYSTEMS]
    probes = {py: probe(py, modules) for py in dict.fromkeys([*venvs.values(), *pythons])}
    found: dict[str, dict] = {}
    notes: list[str] = []
    for name in ["taskmesh"] + wanted:
        if name not in SYSTEMS:
            notes.append(f"{name}: no adapter (have: {', '.join(SYSTEMS)})")
            continue
        cls = SYSTEMS[name]
        candidates = [sys.executable] if name == "taskmesh" else list(
            dict.fromkeys(([venvs[name]] if name in venvs else []) + pythons))
        for py in candidates:
            info = probes.get(py)
            if info and info["found"].get(cls.module):
                found[name] = {"python": py, "python_version": info["python"],
                               "version": info["versions"].get(cls.module),
                               "redis_py": info["versions"].get("redis"),
                               "hiredis": info["versions"].get("hiredis")}
                break
        else:
            notes.append(f"{name}: skipped, `import {cls.module}` fails in "
                         f"{', '.join(candidates)} (its virtualenv could not be built; pip "
                         f"install {cls.module} there, or pass --peer-python)")
    if args.baseline:
        found["taskmesh-before"] = {**found.get("taskmesh", {}), "python": sys.executable,
                                    "version": _tree_version(Path(args.baseline)),
                                    "path": str(_baseline_path(Path(args.baseline)))}
    return found, notes


def _baseline_path(tree: Path) -> Path:
    """A directory holding only ``taskmesh`` (a link to the tree's), so the
    baseline's driver takes ``taskmesh`` from the tree and ``benchmarks``
    from this checkout (the adapters and the measuring code stay the same)."""
    shim = Path(tempfile.gettempdir()) / f"taskmesh-baseline-{os.getpid()}"
    shim.mkdir(exist_ok=True)
    link = shim / "taskmesh"
    if not link.exists():
        link.symlink_to((tree / "taskmesh").resolve(), target_is_directory=True)
    return shim


def _tree_version(tree: Path) -> str:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return (out.stdout.strip() or "?") + " (baseline)"


# ---- running one case -----------------------------------------------------------------
class Interrupted(Exception):
    pass


def run_driver(python: str, spec: dict, timeout: float,
               first_on_path: str | None = None) -> tuple[dict | None, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        ([first_on_path] if first_on_path else []) + [str(REPO_ROOT)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if first_on_path:  # `python -m` puts its cwd first: it must be that directory too
        env["TASKMESH_BENCH_CODE"] = first_on_path
    proc = subprocess.Popen([python, "-m", "benchmarks.driver", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=first_on_path or str(REPO_ROOT), env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
        return None, f"timed out after {timeout:.0f}s\n{err[-2000:]}"
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)  # the driver stops its workers
        try:
            proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise Interrupted from None
    for line in reversed(out.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):]), err
    return None, (err or out)[-3000:]


def summary(case: C.Case, res: dict) -> str:
    if case.workload == "enqueue":
        return (f"single {res['enqueue_single_per_s']:,.0f}/s, "
                f"batch {res['enqueue_batch_per_s']:,.0f}/s")
    if case.workload == "drain":
        extra = "" if res.get("complete", True) else f" (timed {res['done_end']:,} tasks)"
        return (f"{res['per_s']:,.0f}/s over {res['span_s']:.2f}s, startup "
                f"{res['startup_s']:.2f}s, rss {res.get('rss_mb', 0):.0f} MB{extra}")
    if case.workload == "latency":
        return f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms"
    if case.workload == "delays":
        return (f"lateness p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                f"max {res['max_ms']:.1f} ms")
    if case.workload == "backlog":
        return ", ".join(f"{k[:-6]}: {v:,.0f}/s" for k, v in res.items() if k.endswith("_per_s")
                         and "fill" not in k)
    return json.dumps(res)


def median_metrics(runs: list[dict]) -> dict:
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))
            and not isinstance(v, bool)}
    out = {}
    for k in sorted(keys):
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so the redis-server and the workers are stopped

    signal.signal(signal.SIGTERM, on_term)

    from .report import render

    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=150)
    started = time.monotonic()
    load_before = _loadavg()

    sizes = C.QUICK if args.quick else C.DEFAULT
    if args.full:
        sizes = replace(sizes, backlog=C.FULL_BACKLOG)
    if args.concurrency:
        sizes = replace(sizes, concurrency=args.concurrency)
    cases, rows = C.build(sizes)

    systems, notes = find_systems(args)
    if "taskmesh" not in systems:
        err.print("[red]taskmesh is not importable in this interpreter[/red]")
        return 2
    names = list(systems)
    err.print("systems: " + ", ".join(
        f"{n} {systems[n]['version']} ({systems[n]['python']})" for n in names))
    for note in notes:
        err.print(f"[yellow]{note}[/yellow]")

    plan = [(case, name) for case in cases for name in names
            if case.selected(args.only, SYSTEMS[name]) and case.kind_for(SYSTEMS[name])]
    logdir = tempfile.mkdtemp(prefix="taskmesh-bench-logs-")
    results: dict[str, dict[str, list[dict]]] = {}
    errors: dict[str, dict[str, str]] = {}
    try:
        server = RedisServer(binary=args.redis_server).start()
    except RedisServerError as exc:
        err.print(f"[red]{exc}[/red]")
        return 2
    redis_version = server.version()
    err.print(f"redis-server {redis_version} on 127.0.0.1:{server.port} (pid {server.pid}); "
              f"{len(plan)} runs x {args.repeat}")
    if load_before is not None and load_before > 0.5 * (os.cpu_count() or 1):
        err.print(f"[yellow]1-min load average is {load_before} on {os.cpu_count()} CPUs before "
                  "starting: other processes compete for the CPU, expect noisy figures "
                  "(the CPU-per-task rows are the least sensitive; try --repeat)[/yellow]")
    interrupted = False
    try:
        step, total = 0, len(plan) * args.repeat
        for rep in range(args.repeat):
            for case, name in plan:
                step += 1
                cls: type[System] = SYSTEMS[name]
                spec = {
                    "system": name, "url": server.db_url(names.index(name)),
                    "namespace": f"bench-{case.id}", "workload": case.workload,
                    "params": {**case.params, "kind": case.kind_for(cls), "logdir": logdir,
                               "redis_pid": server.pid, "label": f"{name}-{case.id}-r{rep}"},
                }
                t0 = time.monotonic()
                res, stderr = run_driver(systems[name]["python"], spec, timeout=1800,
                                         first_on_path=systems[name].get("path"))
                took = time.monotonic() - t0
                if res is None:
                    errors.setdefault(case.id, {})[name] = stderr.strip()
                    err.print(f"[{step}/{total}] {name:9} {case.id:16} [red]FAILED[/red] "
                              f"({took:.1f}s)\n{stderr.strip()}")
                    continue
                results.setdefault(case.id, {}).setdefault(name, []).append(res)
                err.print(f"[{step}/{total}] {name:9} {case.id:16} {summary(case, res)} "
                          f"[dim]({took:.1f}s)[/dim]")
    except Interrupted:
        interrupted = True
        err.print("[yellow]interrupted: reporting what was measured[/yellow]")
    finally:
        server.cleanup()

    medians = {cid: {n: median_metrics(runs) for n, runs in per.items()}
               for cid, per in results.items()}
    elapsed = time.monotonic() - started
    meta = {
        "command": "python -m benchmarks " + " ".join(shlex.quote(a) for a in (
            argv if argv is not None else sys.argv[1:])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "elapsed_s": round(elapsed, 1),
        "repeat": args.repeat,
        "sizes": {k: v for k, v in sizes.__dict__.items()},
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform()},
        "redis_server": redis_version,
        "systems": systems,
        "skipped": notes,
        "peer_notes": [n for name in names for n in SYSTEMS[name].notes],
        "bulk_apis": {name: SYSTEMS[name].batch_api for name in names},
        "interrupted": interrupted,
        "loadavg": {"before": load_before, "after": _loadavg()},
    }
    table = render(out, rows, names, medians, errors, meta, only=args.only)
    if args.json_path:
        doc = {"meta": meta, "table": table, "medians": medians, "runs": results,
               "errors": errors}
        Path(args.json_path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        err.print(f"results written to {args.json_path}")
    if args.keep_logs:
        err.print(f"worker logs: {logdir}")
    else:
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)
    err.print(f"done in {elapsed:.0f}s")
    return 130 if interrupted else (1 if errors else 0)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
