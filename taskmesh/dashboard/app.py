"""The Starlette application and the ``taskmesh dashboard`` server.

Routes (README *Dashboard*): pages ``/``, ``/tasks``, ``/tasks/{id}``, ``/events``;
API ``/api/metrics``, ``/api/tasks``, ``/api/tasks/{id}``,
``/api/tasks/{id}/cancel``, ``/api/tasks/{id}/retry``, ``/api/events`` (SSE);
public static assets under ``/static``. Everything is read from Redis per
request; the process holds only connections and the one events
subscription of :class:`~taskmesh.dashboard.hub.EventHub`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, AsyncIterator

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..connection import CONNECTION_ERRORS, async_client, sync_client
from ..manager import TaskManager
from . import api, pages, views
from .auth import TokenAuth, is_api
from .data import Reader
from .hub import EventHub
from .state import Dashboard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_ENV = "TASKMESH_DASHBOARD_TOKEN"


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    if is_api(request.url.path):
        return api.error(503, f"Redis is unavailable: {type(exc).__name__}: {exc}")
    dash: Dashboard = request.app.state.dashboard
    return HTMLResponse(views.layout("error", "Redis unavailable", views.waiting_body(),
                                     namespace=dash.tm.namespace, banner=views.redis_banner(exc),
                                     attrs={"down": "1"}), status_code=503)


async def _favicon(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


def _hub_client(url: str) -> Any:
    """The hub's pub/sub client, without redis-py's transparent retries on a
    single Redis: a retried read reconnects and resubscribes silently, and
    the hub must *see* every drop to send its clients to the replay stream
    (see hub.py). Cluster and Sentinel clients keep their own failover logic."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return async_client(url, retry=AsyncRetry(NoBackoff(), 0), retry_on_error=[])
    return async_client(url)


def create_app(tm: TaskManager, *, token: str | None = None, read_only: bool = False) -> Starlette:
    """The dashboard for ``tm``'s namespace. ``token`` None means no auth."""
    hub_client = _hub_client(tm.url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub = EventHub(hub_client, tm.keys)
        app.state.dashboard = Dashboard(tm, reader, hub, read_only)
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await hub_client.aclose()

    reader = Reader(tm, sync_client(tm.url))
    routes = [
        Route("/", pages.overview),
        Route("/tasks", pages.tasks),
        Route("/tasks/{task_id:path}", pages.task),
        Route("/events", pages.events),
        Route("/api/metrics", api.metrics),
        Route("/api/tasks", api.tasks),
        Route("/api/tasks/{task_id:path}/cancel", api.cancel, methods=["POST"]),
        Route("/api/tasks/{task_id:path}/retry", api.retry, methods=["POST"]),
        Route("/api/tasks/{task_id:path}", api.task),
        Route("/api/events", api.events),
        Route("/favicon.ico", _favicon),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    handlers: dict[Any, Any] = {cls: _redis_unavailable for cls in CONNECTION_ERRORS}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                     middleware=[Middleware(TokenAuth, token=token)])


def resolve_token(token: str | None) -> str | None:
    """``--token`` wins over $TASKMESH_DASHBOARD_TOKEN; empty means none."""
    return token or os.environ.get(TOKEN_ENV) or None


def serve(url: str | None = None, *, namespace: str | None = None, host: str = "127.0.0.1",
          port: int = 8080, token: str | None = None, read_only: bool = False) -> None:
    """Runs the dashboard in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    tm = TaskManager(url, namespace=namespace)
    app = create_app(tm, token=resolve_token(token), read_only=read_only)
    log.info("taskmesh dashboard for namespace %r on http://%s:%d%s%s", tm.namespace, host, port,
             " (token required)" if resolve_token(token) else "",
             " (read-only)" if read_only else "")
    try:
        # Open SSE streams never end by themselves: give them 2 s at shutdown.
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=2)
    finally:
        tm.close()
