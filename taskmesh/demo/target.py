"""Choosing the demo's Redis and namespace.

``url`` / ``TASKMESH_URL``; else localhost:6379 if a Redis answers there; else
an :class:`~taskmesh.server.RedisServer` the demo starts and stops itself.
"""

from __future__ import annotations

import os
import secrets

from ..connection import DEFAULT_NAMESPACE, is_memory, mask_url
from ..server import INSTALL_HINT, RedisServer, find_redis_server, localhost_answers

LOCALHOST_URL = "redis://localhost:6379/0"


class DemoError(Exception):
    """Something the demo cannot work around; its message is one line."""


def pick_redis(url: str | None, localhost_url: str = LOCALHOST_URL
               ) -> tuple[str, str, RedisServer | None]:
    """-> (url, where it came from, the embedded server to stop or None)."""
    env_url = os.environ.get("TASKMESH_URL")
    for given, origin in ((url, "--url"), (env_url, "TASKMESH_URL")):
        if given:
            if given == env_url:
                origin = "TASKMESH_URL"  # the CLI passes the variable as its --url
            if not is_memory(given) and not localhost_answers(given, timeout=2.0):
                raise DemoError(f"no Redis answers at {mask_url(given)} (from {origin})")
            return given, origin, None
    if localhost_answers(localhost_url):
        return localhost_url, "Redis already running on localhost", None
    if find_redis_server() is None:
        raise DemoError(
            f"no Redis answers on {mask_url(localhost_url)} and no redis-server binary was "
            f"found: {INSTALL_HINT}, or set TASKMESH_URL to a running Redis")
    server = RedisServer(die_with_owner=True)
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        server.cleanup()
        raise DemoError(f"could not start redis-server: {exc}") from exc
    return server.url, "embedded redis-server, stopped at the end", server


def pick_namespace(namespace: str | None) -> str:
    """A fresh ``demo-<random>`` namespace unless one was really asked for.

    The CLI's --namespace option defaults to "default"; a value that came
    from that default (not from the flag or TASKMESH_NAMESPACE) counts as
    not given."""
    if namespace is not None:
        try:
            import click
            from click.core import ParameterSource

            ctx = click.get_current_context(silent=True)
            if (namespace == DEFAULT_NAMESPACE and ctx is not None and ctx.info_name == "demo"
                    and ctx.get_parameter_source("namespace") is ParameterSource.DEFAULT):
                namespace = None
        except Exception:
            pass
    return namespace or f"demo-{secrets.token_hex(3)}"
