"""The JSON API and the event stream (README *Dashboard*).

Status codes: 400 ``{"error"}`` for a bad limit, status or cursor (and a
malformed ``Last-Event-ID``); 404 for an unknown task id; 403 for an action
under ``--read-only``; 409 for retrying a task that is not FAILED or
CANCELLED; 503 when Redis is unreachable (see app.py). Cancel on a terminal
task is 200 ``{"cancelled": false}``: the call is idempotent and says what
happened, as ``cancel_task`` itself does.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

import redis.exceptions
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..exceptions import TaskNotFoundError
from ..models import TaskStatus
from .hub import open_stream
from .state import Dashboard


class JSON(JSONResponse):
    """JSON that tolerates values json cannot carry natively (shown as str)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, separators=(",", ":")).encode()


def error(status_code: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status_code)


def parse_filters(request: Request) -> dict[str, Any]:
    """status (repeatable, comma lists accepted), queue, tag, limit, cursor.
    ValueError with the reason for a 400."""
    q = request.query_params
    statuses: list[TaskStatus] = []
    for raw in q.getlist("status"):
        for value in filter(None, (v.strip() for v in raw.split(","))):
            try:
                statuses.append(TaskStatus(value))
            except ValueError:
                raise ValueError(
                    f"unknown status {value!r}; use one of {', '.join(s.value for s in TaskStatus)}"
                ) from None
    limit_raw = q.get("limit") or "100"
    try:
        limit = int(limit_raw)
    except ValueError:
        raise ValueError(f"limit must be an integer 1..1000, got {limit_raw!r}") from None
    return {"status": statuses, "queue": q.get("queue") or None, "tag": q.get("tag") or None,
            "limit": limit, "cursor": q.get("cursor") or None}


async def metrics(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    return JSON(await run_in_threadpool(dash.tm.get_metrics))


async def tasks(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    try:
        filters = parse_filters(request)
        page = await run_in_threadpool(dash.reader.list_tasks, **filters)
    except ValueError as exc:
        return error(400, str(exc))
    return JSON(page)


async def task(request: Request) -> Response:
    dash: Dashboard = request.app.state.dashboard
    task_id = request.path_params["task_id"]
    try:
        return JSON(await run_in_threadpool(dash.reader.task, task_id))
    except TaskNotFoundError:
        return error(404, f"no task {task_id!r}")


def refused_action(request: Request, dash: Dashboard) -> JSON | None:
    """403 under --read-only, and for a browser request sent from another
    site (a page elsewhere cannot make a visitor's browser cancel tasks on a
    dashboard it can reach: the cookie is SameSite=Strict, and without a
    token there is no cookie to rely on, so the Origin is checked too)."""
    if dash.read_only:
        return error(403, "the dashboard is read-only")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if (origin and origin != own) or request.headers.get("sec-fetch-site") == "cross-site":
        return error(403, "cross-site request refused")
    return None


async def task_action(request: Request,
                      act: Callable[[Dashboard, str], Awaitable[Response]]) -> Response:
    """What cancel and retry share: refused (403) before anything is done,
    404 for an unknown task id; ``act`` does the rest."""
    dash: Dashboard = request.app.state.dashboard
    task_id = request.path_params["task_id"]
    refused = refused_action(request, dash)
    if refused is not None:
        return refused
    try:
        return await act(dash, task_id)
    except TaskNotFoundError:
        return error(404, f"no task {task_id!r}")


async def cancel(request: Request) -> Response:
    async def act(dash: Dashboard, task_id: str) -> Response:
        return JSON({"cancelled": await dash.tm.cancel_task(task_id)})

    return await task_action(request, act)


async def retry(request: Request) -> Response:
    async def act(dash: Dashboard, task_id: str) -> Response:
        try:
            new_id = await run_in_threadpool(dash.tm.retry_task, task_id)
        except ValueError as exc:  # not FAILED or CANCELLED
            return error(409, str(exc))
        return JSON({"task_id": new_id})

    return await task_action(request, act)


async def events(request: Request) -> Response:
    """Server-sent events: live from connection time, or resumed after
    ``Last-Event-ID`` (header, or ``?last_event_id=`` for a page that opens
    its stream after rendering recent history)."""
    dash: Dashboard = request.app.state.dashboard
    last_id = (request.headers.get("last-event-id")
               or request.query_params.get("last_event_id") or None)

    async def replay(since: str) -> Any:
        return await run_in_threadpool(dash.reader.replay, since)

    try:
        stream = await open_stream(dash.hub, replay, last_id)
    except (redis.exceptions.ResponseError, ValueError) as exc:
        return error(400, f"bad Last-Event-ID {last_id!r}: {exc}")
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
