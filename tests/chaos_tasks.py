"""Task functions for the chaos and soak tests (tests/test_chaos.py,
tests/test_soak.py).

Module level, so workers resolve them by import string or unpickle them by
reference. Every execution appends ``"<task_id> <attempt> <pid> <time>"``
to a Redis list (the test counts executions per task from it). The clients used
for that bookkeeping retry through Redis restarts and outages, so a fault
injected by a test never fails the bookkeeping itself: only taskmesh's own
behaviour is under test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import redis
import redis.asyncio

from taskmesh import current_task

_clients: dict[str, redis.Redis] = {}
_aclients: dict[tuple[int, str], redis.asyncio.Redis] = {}

BOOKKEEPING_DEADLINE_S = 30.0


def _client(url: str) -> redis.Redis:
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=5)
    return client


def _retrying(op, *args: Any) -> Any:
    deadline = time.monotonic() + BOOKKEEPING_DEADLINE_S
    while True:
        try:
            return op(*args)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def mark(url: str, key: str, tag: str = "") -> str:
    """Records one execution of the current task: ``task_id attempt pid time[ tag]``."""
    ctx = current_task()
    entry = f"{ctx.task_id} {ctx.attempt} {os.getpid()} {time.time():.3f}" + (f" {tag}" if tag else "")
    _retrying(_client(url).rpush, key, entry)
    return entry


# ---- chaos tasks --------------------------------------------------------------------

def sleeper(url: str, key: str, seconds: float, later_seconds: float | None = None) -> int:
    """Records its start, sleeps in a thread (``later_seconds`` on attempts
    after the first, if given), returns the worker's pid."""
    mark(url, key)
    if later_seconds is not None and current_task().attempt > 1:
        seconds = later_seconds
    time.sleep(seconds)
    return os.getpid()


async def async_sleeper(url: str, key: str, seconds: float) -> int:
    """Records its start (off the loop), sleeps on the loop, returns the pid."""
    await asyncio.to_thread(mark, url, key)
    await asyncio.sleep(seconds)
    return os.getpid()


async def loop_blocker(url: str, key: str, seconds: float) -> int:
    """An async task that blocks the worker's event loop with time.sleep."""
    mark(url, key)
    time.sleep(seconds)  # noqa: ASYNC251 - deliberately blocks the whole loop
    return os.getpid()


def poison(url: str, key: str) -> None:
    """Kills its own worker process (SIGKILL) on every attempt."""
    mark(url, key)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def flaky(url: str, key: str) -> str:
    """Fails its first attempt (so it gets SCHEDULED for a retry), then succeeds."""
    entry = mark(url, key)
    if current_task().attempt == 1:
        raise ValueError("first attempt fails on purpose")
    return entry


def quick(url: str, key: str, value: Any = None) -> Any:
    mark(url, key)
    return value


# ---- soak ---------------------------------------------------------------------------

async def soak_noop(url: str, key: str) -> None:
    """Counts the execution per (task, attempt) with one HINCRBY: a field
    above 1 means one claim ran twice; fields per task = executions."""
    loop = asyncio.get_running_loop()
    client = _aclients.get((id(loop), url))
    if client is None:
        client = _aclients[(id(loop), url)] = redis.asyncio.Redis.from_url(url)
    ctx = current_task()
    await client.hincrby(key, f"{ctx.task_id}:{ctx.attempt}", 1)
