"""The four pages: overview ``/``, tasks ``/tasks``, one task ``/tasks/{id}``,
live feed ``/events`` (README *Dashboard*).

Each handler reads through :class:`~taskmesh.dashboard.data.Reader` in a
thread and renders with :mod:`taskmesh.dashboard.views`. A request carrying
``X-Taskmesh-Fragment: 1`` (the page script refreshing itself) gets only the
``<main>`` content. When Redis is unreachable the page is a 503 with a banner
and no stack trace; the script keeps asking and swaps the content back in
once Redis answers.
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..connection import CONNECTION_ERRORS
from ..exceptions import TaskNotFoundError
from . import views
from .api import parse_filters
from .state import Dashboard

FRAGMENT_HEADER = "x-taskmesh-fragment"


def _dash(request: Request) -> Dashboard:
    return request.app.state.dashboard  # type: ignore[no-any-return]


async def render(request: Request, page: str, title: str, build: Callable[[], str], *,
                 status_code: int = 200, attrs: dict[str, str] | None = None) -> Response:
    dash = _dash(request)
    banner = None
    try:
        body = await run_in_threadpool(build)
    except CONNECTION_ERRORS as exc:
        banner, body, status_code = views.redis_banner(exc), views.waiting_body(), 503
    except TaskNotFoundError as exc:
        body, status_code = views.not_found_body(exc.task_id), 404
    headers = {"Cache-Control": "no-store"}
    if request.headers.get(FRAGMENT_HEADER):
        if banner:
            headers["X-Taskmesh-Banner"] = banner.encode("ascii", "replace").decode()
        return HTMLResponse(body, status_code=status_code, headers=headers)
    attrs = dict(attrs or {})
    attrs["read-only"] = "1" if dash.read_only else "0"
    if banner:
        attrs["down"] = "1"
    return HTMLResponse(views.layout(page, title, body, namespace=dash.tm.namespace,
                                     banner=banner, attrs=attrs),
                        status_code=status_code, headers=headers)


async def overview(request: Request) -> Response:
    reader = _dash(request).reader
    return await render(request, "overview", "overview",
                        lambda: views.overview_body(reader.overview()))


async def tasks(request: Request) -> Response:
    reader = _dash(request).reader
    wanted = (request.query_params.get("id") or "").strip()
    if wanted:
        found = await run_in_threadpool(_exists, reader, wanted)
        if found:
            return RedirectResponse(views.task_href(wanted), status_code=303)
        return await render(request, "tasks", "tasks", lambda: views.not_found_body(wanted),
                            status_code=404)
    try:
        filters: dict[str, Any] = parse_filters(request)
        bad = None
    except ValueError as exc:
        filters = {"status": [], "queue": None, "tag": None, "limit": 100, "cursor": None}
        bad = str(exc)

    def build() -> str:
        queues = sorted(reader.tm.get_metrics()["queues"])
        shown = dict(filters, status=[str(s) for s in filters["status"]])
        if bad:
            return views.tasks_body(None, shown, queues, bad)
        try:
            page = reader.list_tasks(**filters)
        except ValueError as exc:
            return views.tasks_body(None, shown, queues, str(exc))
        return views.tasks_body(page, shown, queues)

    return await render(request, "tasks", "tasks", build, status_code=400 if bad else 200)


def _exists(reader: Any, task_id: str) -> bool:
    try:
        return bool(reader.exists(task_id))
    except CONNECTION_ERRORS:
        return True  # let the task page show the banner


async def task(request: Request) -> Response:
    dash = _dash(request)
    task_id = request.path_params["task_id"]

    def build() -> str:
        detail = dash.reader.task(task_id)
        return views.task_body(detail, dash.reader.timeline(detail), dash.read_only)

    return await render(request, "task", task_id, build, attrs={"task-id": task_id})


async def events(request: Request) -> Response:
    reader = _dash(request).reader
    return await render(request, "events", "events",
                        lambda: views.events_body(reader.recent_events()))
