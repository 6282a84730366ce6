"""The printed table: one row per metric, one column per system, and the
ratio taskmesh/peer next to each peer."""

from __future__ import annotations

import math
from typing import Any

from .cases import Row
from .systems import SYSTEMS


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:g}"


def _ratio(tm: float | None, peer: float | None) -> float | None:
    if tm is None or peer is None or not peer or math.isnan(tm) or math.isnan(peer):
        return None
    return tm / peer


def _ratio_text(ratio: float | None, better: str) -> str:
    if ratio is None:
        return "-"
    good = ratio >= 1 if better == "higher" else ratio <= 1
    colour = "green" if good else "red"
    return f"[{colour}]{ratio:.2f}x[/{colour}]"


def render(console: Any, rows: list[Row], names: list[str], medians: dict, errors: dict,
           meta: dict, only: set[str] | None = None) -> list[dict]:
    from rich.table import Table

    peers = [n for n in names if n != "taskmesh"]
    title = "taskmesh benchmarks" + (f" (median of {meta['repeat']})" if meta["repeat"] > 1
                                     else "")
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("workload", no_wrap=False)
    table.add_column("taskmesh", justify="right")
    for peer in peers:
        table.add_column(peer, justify="right")
        table.add_column(f"tm/{peer}", justify="right")
    out: list[dict] = []
    for row in rows:
        values: dict[str, float | None] = {}
        cells = []
        shown = False
        for name in names:
            cid = row.case_for(SYSTEMS[name])
            v = medians.get(cid, {}).get(name, {}).get(row.metric)
            values[name] = v
            if v is not None:
                shown = True
                cells.append(fmt(v, row.unit))
            elif name in errors.get(cid, {}):
                cells.append("[red]error[/red]")
            else:
                cells.append("n/a")
        if not shown:
            continue
        line = [row.label + (" ↑" if row.better == "higher" else " ↓"), cells[0]]
        ratios = {}
        for i, peer in enumerate(peers, start=1):
            r = _ratio(values.get("taskmesh"), values.get(peer))
            ratios[peer] = r
            line += [cells[i], _ratio_text(r, row.better)]
        table.add_row(*line)
        out.append({"row": row.label, "unit": row.unit, "better": row.better, "case": row.case,
                    "metric": row.metric, "values": values, "ratio_taskmesh_over": ratios})
    console.print(table)
    notes = [
        "↑ higher is better, ↓ lower is better; tm/peer is taskmesh's figure divided by the "
        "peer's (green: taskmesh ahead).",
        "drain/s is the steady rate from the first to the last finished task (worker start-up "
        f"is its own row); timing stops after {meta['sizes']['drain_max_s']:g} s for slow "
        "systems. Backlog rows time a window of "
        f"{meta['sizes']['backlog_window']:,} tasks (<= {meta['sizes']['backlog_window_s']:g} s) "
        "from the head of the queue.",
        f"per-worker concurrency {meta['sizes']['concurrency']} (I/O row: "
        f"{meta['sizes']['io_concurrency']}); taskmesh and arq run the 'native' kind "
        "(async def) in the start-up, RSS, latency and backlog rows, rq runs def.",
    ]
    notes.append("bulk API: " + "; ".join(f"{n}: {api}" for n, api in
                                          meta.get("bulk_apis", {}).items()))
    notes += meta.get("peer_notes", [])
    notes += meta.get("skipped", [])
    for cid, per in errors.items():
        for name, text in per.items():
            first = text.strip().splitlines()[-1] if text.strip() else "?"
            notes.append(f"{name} {cid} failed: {first}")
    sysinfo = "; ".join(
        f"{n} {i['version']} (python {i['python_version']}, redis-py {i['redis_py']}"
        f"{', hiredis ' + i['hiredis'] if i.get('hiredis') else ', no hiredis'})"
        for n, i in meta["systems"].items())
    load = meta.get("loadavg", {})
    notes.append(f"{sysinfo}; redis-server {meta['redis_server']}; "
                 f"{meta['machine']['cpus']} CPUs ({meta['machine']['cpu']}), 1-min load "
                 f"average {load.get('before', '?')} before / {load.get('after', '?')} after; "
                 f"run took {meta['elapsed_s']:.0f} s: {meta['command']}")
    for note in notes:
        console.print(f"[dim]- {note}[/dim]")
    return out
