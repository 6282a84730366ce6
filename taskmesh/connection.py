"""Turns a taskmesh URL into Redis clients.

``redis://``, ``rediss://`` (TLS) and ``unix://`` go to redis-py (AUTH/ACL
user and password ride in the URL). ``memory://`` is an in-process
fakeredis server with Lua, one per process, shared by every manager,
worker and subscription in it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_NAMESPACE = "default"

_memory_lock = threading.Lock()
_memory_server: Any = None


def resolve_url(url: str | None) -> str:
    url = url or os.environ.get("TASKMESH_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise TypeError("url must be a string")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix", "memory"):
        raise ValueError(
            f"unsupported URL {url!r}: use redis://, rediss://, unix:// or memory://"
        )
    return url


def resolve_namespace(namespace: str | None) -> str:
    return namespace or os.environ.get("TASKMESH_NAMESPACE") or DEFAULT_NAMESPACE


def is_memory(url: str) -> bool:
    return url.lower().startswith("memory://")


def memory_server() -> Any:
    global _memory_server
    with _memory_lock:
        if _memory_server is None:
            import fakeredis

            _memory_server = fakeredis.FakeServer()
        return _memory_server


# A pooled connection that died with a Redis restart fails on first use; a
# few quick retries on a fresh connection make that invisible to callers.
# Safe for taskmesh's commands: scripts are idempotent or fenced by claim
# tokens, so one that ran before its reply was lost is harmless to resend.
_RETRIES = 3


def _retry_options(retry_class: type) -> dict[str, Any]:
    return {
        "retry": retry_class(ExponentialBackoff(cap=1.0, base=0.05), _RETRIES),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        "socket_keepalive": True,
        "health_check_interval": 30,
    }


def sync_client(url: str, **options: Any) -> redis.Redis:
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeRedis(server=memory_server())
    return redis.Redis.from_url(url, **{**_retry_options(Retry), **options})


def async_client(url: str, *, max_connections: int | None = None,
                 **options: Any) -> redis.asyncio.Redis:
    """With ``max_connections``, a *blocking* pool of that size: a caller
    beyond it waits for a free connection instead of failing with
    MaxConnectionsError (thousands of waiters in one loop share a few)."""
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=memory_server())
    options = {**_retry_options(AsyncRetry), **options}
    if max_connections is None:
        return redis.asyncio.Redis.from_url(url, **options)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, **options)
    return redis.asyncio.Redis.from_pool(pool)


# Errors that mean "Redis is unreachable for now": callers back off and retry.
CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    OSError,
)
