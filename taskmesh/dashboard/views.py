"""HTML of the dashboard's pages, rendered on the server from the dicts of
:mod:`taskmesh.dashboard.data`.

Pages are whole documents on first load; the page script asks for the same
address again with ``X-Taskmesh-Fragment: 1`` to refresh, and gets only the
``<main>`` content, so each page has one renderer. Every interpolated value
goes through :func:`esc`. Charts are inline SVG made here; no asset comes from
outside the package.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from ..models import TaskStatus

STATUSES = [s.value for s in TaskStatus]
ACTIVE = {"pending", "waiting", "queued", "scheduled", "running"}
RETRYABLE = {"failed", "cancelled"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def task_href(task_id: str) -> str:
    return "/tasks/" + quote(task_id, safe="")


def task_link(task_id: str) -> str:
    return f'<a class="mono" href="{esc(task_href(task_id))}">{esc(task_id)}</a>'


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def badge(status: str) -> str:
    return f'<span class="status s-{esc(status)}">{esc(status)}</span>'


def layout(page: str, title: str, body: str, *, namespace: str, banner: str | None = None,
           attrs: dict[str, str] | None = None) -> str:
    data = "".join(f' data-{k}="{esc(v)}"' for k, v in (attrs or {}).items())
    hidden = "" if banner else " hidden"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taskmesh · {esc(title)}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/dashboard.css">
</head><body data-page="{esc(page)}"{data}>
<header class="top"><a class="brand" href="/">taskmesh</a>
<nav><a href="/">Overview</a><a href="/tasks">Tasks</a><a href="/events">Events</a></nav>
<span class="ns">namespace <b>{esc(namespace)}</b></span></header>
<div id="banner" class="banner" role="alert"{hidden}>{esc(banner or "")}</div>
<main id="content">{body}</main>
<script src="/static/dashboard.js" defer></script>
</body></html>"""


def redis_banner(error: BaseException) -> str:
    return (f"Redis is unavailable ({type(error).__name__}: {error}). Showing what was last "
            "loaded; the page recovers by itself when Redis is back.")


def waiting_body() -> str:
    return '<p class="muted">Waiting for Redis…</p>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, empty: str,
          attrs: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr class="empty"><td colspan="99">{esc(empty)}</td></tr>'
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


# ---- overview -----------------------------------------------------------------------
def chart_svg(series: list[dict[str, int]], key: str, label: str, css: str) -> str:
    """A bar per second, scaled to the window's peak."""
    width, height, top = 600, 110, 14
    values = [point[key] for point in series]
    peak = max(values + [1])
    bar = width / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        if value:
            h = (height - top) * value / peak
            bars.append(f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                        f'height="{h:.1f}"><title>{value}</title></rect>')
    total_60 = sum(values[-60:])
    return f"""<figure class="chart {css}">
<figcaption>{esc(label)} <span class="muted">{total_60} in the last 60 s, peak {peak}/s</span>
</figcaption>
<svg viewBox="0 0 {width} {height + 16}" role="img" aria-label="{esc(label)}">
<line class="axis" x1="0" y1="{height}" x2="{width}" y2="{height}"/>
<text x="2" y="10">{peak}/s</text>{''.join(bars)}
<text x="2" y="{height + 13}">−{len(values)} s</text>
<text x="{width - 2}" y="{height + 13}" text-anchor="end">now</text></svg></figure>"""


def overview_body(data: dict[str, Any]) -> str:
    m, series = data["metrics"], data["series"]
    counts = "".join(
        f'<a class="count s-{s}" href="/tasks?status={s}"><span class="n">{m["tasks"].get(s, 0)}'
        f'</span><span class="label">{s}</span></a>' for s in STATUSES)
    queue_rows = []
    for name, q in m["queues"].items():
        ages = m["oldest_queued_age_s"].get(name, {})
        if not q["by_priority"]:
            queue_rows.append([esc(name), "—", "0", "—", str(q.get("scheduled", 0))])
        for prio, depth in q["by_priority"].items():
            age = ages.get(prio, ages.get(str(prio)))
            queue_rows.append([esc(name), esc(prio), esc(depth), fmt_age(age),
                               str(q.get("scheduled", 0))])
    now = float(m["timestamp"])
    worker_rows = [[
        f'<span class="mono">{esc(w["id"])}</span>', esc(w["host"]), esc(w["pid"]),
        esc(",".join(w["queues"])), fmt_age(max(now - w["last_heartbeat"], 0.0)),
        f'{esc(w["running"])} / {esc(w["concurrency"])}', esc(w["processed"]), esc(w["failed"]),
    ] for w in m["workers"]]
    rt = m["runtime_ms"]
    totals = " · ".join(f"{k} {v}" for k, v in m["totals"].items())
    cap = m["max_concurrent_tasks"]
    return f"""<h1>Overview</h1>
<section class="counts">{counts}</section>
<p class="summary">throughput <b>{m["throughput_per_s"]}/s</b> ·
failure rate <b>{m["failure_rate"] * 100:.1f}%</b> · runtime p50 {esc(_ms(rt["p50"]))},
p95 {esc(_ms(rt["p95"]))} · cap {esc(cap if cap is not None else "none")} ·
recoveries {m["recoveries"]}<br><span class="muted">totals: {esc(totals)}</span></p>
<section class="charts">
{chart_svg(series, "completed", "Throughput (completed per second)", "ok")}
{chart_svg(series, "failed", "Failures per second", "bad")}
</section>
<section><h2>Queues</h2>
{table(["queue", "priority", "depth", "oldest", "scheduled"], queue_rows, empty="No queues yet.")}
</section>
<section><h2>Workers</h2>
{table(["worker", "host", "pid", "queues", "heartbeat", "running", "processed", "failed"],
       worker_rows, empty="No live workers.")}
</section>"""


# ---- tasks list -------------------------------------------------------------------
def tasks_body(page: dict[str, Any] | None, filters: dict[str, Any], queues: list[str],
               error: str | None = None) -> str:
    checked = set(filters["status"])
    boxes = "".join(
        f'<label><input type="checkbox" name="status" value="{s}"'
        f'{" checked" if s in checked else ""}> {s}</label>' for s in STATUSES)
    options = '<option value="">any queue</option>' + "".join(
        f'<option{" selected" if q == filters["queue"] else ""}>{esc(q)}</option>' for q in queues)
    limits = "".join(f'<option{" selected" if n == filters["limit"] else ""}>{n}</option>'
                     for n in sorted({25, 50, 100, 250, filters["limit"]}))
    form = f"""<form class="search" method="get" action="/tasks">
<input name="id" placeholder="task id" aria-label="Task id" required>
<button type="submit">Find</button></form>
<form class="filters" method="get" action="/tasks">
<fieldset><legend>status</legend>{boxes}</fieldset>
<label>queue <select name="queue">{options}</select></label>
<label>tag <input name="tag" value="{esc(filters["tag"] or "")}" size="12"></label>
<label>per page <select name="limit">{limits}</select></label>
<button type="submit">Filter</button></form>"""
    if error:
        return f'<h1>Tasks</h1>{form}<p class="error" role="alert">{esc(error)}</p>'
    assert page is not None
    rows = [[
        task_link(t["id"]), esc(t["name"]), badge(t["status"]), esc(t["queue"]),
        esc(t["priority"]), esc(t["attempts"]),
        f'<progress max="1" value="{t["progress"]}"></progress>',
        fmt_time(t["created_at"]), fmt_time(t["finished_at"]), esc(", ".join(t["tags"])),
    ] for t in page["tasks"]]
    base = {k: v for k, v in (("queue", filters["queue"]), ("tag", filters["tag"]),
                              ("limit", filters["limit"])) if v}
    query = [("status", s) for s in filters["status"]] + list(base.items())
    pager = []
    if filters["cursor"]:
        pager.append(f'<a href="/tasks?{esc(urlencode(query))}">First page</a>')
    if page["cursor"]:
        nxt = urlencode(query + [("cursor", page["cursor"])])
        pager.append(f'<a rel="next" href="/tasks?{esc(nxt)}">Next page</a>')
    listing = table(["id", "name", "status", "queue", "priority", "attempts", "progress",
                     "created", "finished", "tags"], rows, empty="No task matches.",
                    attrs=' id="tasks-table"')
    return f'<h1>Tasks</h1>{form}{listing}<nav class="pager">{" ".join(pager)}</nav>'


# ---- one task -----------------------------------------------------------------------
def _links(ids: list[str]) -> str:
    return ", ".join(task_link(i) for i in ids) if ids else '<span class="muted">none</span>'


def _pre(text: str | None, empty: str = "—") -> str:
    return f"<pre>{esc(text)}</pre>" if text is not None else f'<span class="muted">{empty}</span>'


def event_detail(event: dict[str, Any]) -> str:
    d = event.get("data") or {}
    parts = []
    if event["type"] == "TASK_PROGRESS" and "progress" in d:
        parts.append(f'{float(d["progress"]) * 100:.0f}%')
        if d.get("message"):
            parts.append(str(d["message"]))
    for key in ("worker", "attempt", "status", "delay", "retry_in"):
        if d.get(key) not in (None, "") and not (key == "status" and event["type"] != "TASK_CREATED"):
            parts.append(f"{key} {d[key]}")
    err = d.get("error")
    if isinstance(err, dict):
        parts.append(f'{err.get("type")}: {err.get("message")}')
    return esc(" · ".join(parts))


def task_body(t: dict[str, Any], timeline: list[dict[str, Any]], read_only: bool) -> str:
    status = t["status"]
    actions = []
    if not read_only and status in ACTIVE:
        actions.append('<button type="button" class="action" data-action="cancel">Cancel</button>')
    if not read_only and status in RETRYABLE:
        actions.append('<button type="button" class="action" data-action="retry">Retry</button>')
    pct = f'{t["progress"] * 100:.0f}%'
    progress = (f'<div class="progress-row"><progress id="task-progress" max="1" '
                f'value="{t["progress"]}" aria-valuenow="{t["progress"]}" '
                f'aria-valuetext="{pct}" aria-label="progress"></progress> '
                f'<span id="progress-text" class="progress-pct">{pct}</span> '
                f'<span id="progress-message">{esc(t["progress_message"] or "")}</span></div>')
    meta = dict(t["metadata"] or {})
    retry_of = meta.get("retry_of")
    fields = [
        ("id", f'<span class="mono">{esc(t["id"])}</span>'), ("name", esc(t["name"])),
        ("description", esc(t["description"]) or '<span class="muted">—</span>'),
        ("status", badge(status)), ("priority", esc(t["priority"])), ("queue", esc(t["queue"])),
        ("executor_type", esc(t["executor_type"])),
        ("attempts", f'{esc(t["attempts"])} (max_retries {esc(t["max_retries"])}, '
                     f'recoveries {esc(t.get("recoveries", 0))})'),
        ("worker", esc(t["worker"] or "—")),
        ("created_at", fmt_time(t["created_at"])), ("started_at", fmt_time(t["started_at"])),
        ("finished_at", fmt_time(t["finished_at"])),
        ("progress", f'<span class="progress-pct">{pct}</span>'),
        ("tags", esc(", ".join(t["tags"])) or '<span class="muted">none</span>'),
        ("metadata", _pre(json.dumps(meta, indent=1, default=str, sort_keys=True)) +
         (f' retry of {task_link(str(retry_of))}' if retry_of else "")),
        ("dependencies", _links(t["dependencies"])),
        ("dependents", _links(t.get("dependents", []))),
        ("function", _pre(t.get("func"), "not stored")),
        ("args", _pre(t.get("args"), "not stored (a completed task drops its payload)")),
        ("kwargs", _pre(t.get("kwargs"), "not stored")),
        ("result", _pre(t.get("result"), "none")),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in fields)
    err = t.get("error")
    error = ""
    if err:
        error = (f'<section class="error-box"><h2>Error</h2><p><b>{esc(err["type"])}</b>: '
                 f'{esc(err["message"])} <span class="muted">(attempt {esc(err["attempt"])})</span>'
                 f'</p>{_pre(err.get("traceback"), "no traceback")}</section>')
    events = "".join(
        f'<li><span class="when">{fmt_time(e["timestamp"])}</span> '
        f'<span class="etype">{esc(e["type"])}</span> {event_detail(e)}</li>' for e in timeline)
    return f"""<h1>{esc(t["name"])} {badge(status)}</h1>
<div class="actions">{"".join(actions)}<span id="action-message" role="status"></span></div>
{progress}{error}
<section><h2>Task</h2><table class="fields">{rows}</table></section>
<section><h2>Timeline</h2><ol class="timeline" id="timeline">{events or
        '<li class="muted">no events in the replay stream</li>'}</ol></section>"""


def not_found_body(task_id: str) -> str:
    return (f'<h1>Not found</h1><p>No task with id <code>{esc(task_id)}</code> '
            '(it may have expired after its result_ttl).</p>')


# ---- live feed --------------------------------------------------------------------------
def event_row(e: dict[str, Any]) -> list[str]:
    d = e.get("data") or {}
    return [fmt_time(e["timestamp"]), f'<span class="etype">{esc(e["type"])}</span>',
            task_link(e["task_id"]), esc(d.get("name", "")), esc(d.get("queue", "")),
            event_detail(e)]


def events_body(events: list[dict[str, Any]]) -> str:
    newest = events[-1]["id"] if events else ""
    rows = [event_row(e) for e in reversed(events)]
    feed = table(["time", "event", "task", "name", "queue", "detail"], rows,
                 empty="No events yet.", attrs=f' id="events-feed" data-last-id="{esc(newest)}"')
    return (f'<h1>Live events</h1><p class="muted" id="feed-state">Connecting…</p>{feed}')
