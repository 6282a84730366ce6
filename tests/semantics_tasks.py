"""Task functions for the semantics tests (dependencies, retries, timeouts,
cancellation, cap, progress). They talk to Redis through URLs passed as
arguments, so the test can observe what happened inside the worker."""

from __future__ import annotations

import asyncio
import time

import redis

from taskmesh import current_task


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def stamp(url: str, key: str, label: str) -> str:
    """Appends 'label start end' to a list: execution order and timing."""
    start = time.time()
    time.sleep(0.02)
    _client(url).rpush(key, f"{label} {start} {time.time()}")
    return label


def noop(*_args):
    return None


def fail(message: str = "boom"):
    raise ValueError(message)


def succeed_on_attempt(url: str, key: str, attempt_ok: int) -> int:
    ctx = current_task()
    _client(url).rpush(key, f"{ctx.attempt} {time.time()}")
    if ctx.attempt < attempt_ok:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


async def async_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


def cooperative(url: str, key: str, limit_s: float = 30.0) -> str:
    """Runs in a thread until current_task().cancelled, then says so."""
    client = _client(url)
    client.rpush(key, "started")
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if current_task().cancelled:
            client.rpush(key, "saw-cancelled")
            return "stopped"
        time.sleep(0.02)
    return "ran-out"


def cooperative_then_hold(url: str, key: str, release_key: str) -> str:
    """Like :func:`cooperative`, then stays in its thread until ``release_key``
    gets an item, and records when it really returned."""
    client = _client(url)
    deadline = time.time() + 30
    while not current_task().cancelled and time.time() < deadline:
        time.sleep(0.02)
    client.rpush(key, "saw-cancelled")
    client.blpop([release_key], timeout=30)
    client.rpush(key, f"returned {time.time()}")
    return "late"


async def async_mark_then_sleep(url: str, key: str, seconds: float) -> str:
    _client(url).rpush(key, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _client(url).rpush(key, "cancelled")
        raise
    return "finished"


def capped(url: str, counter: str, marks: str, hold_s: float) -> int:
    client = _client(url)
    now = client.incr(counter)
    client.rpush(marks, now)
    time.sleep(hold_s)
    client.decr(counter)
    return int(now)


def progress_then_wait(url: str, gate: str) -> str:
    current_task().update_progress(0.25, "quarter")
    _client(url).blpop([gate], timeout=30)
    return "done"


def progress_steps(steps: int) -> int:
    """Reports progress `steps` times as fast as it can (never 1.0)."""
    for i in range(1, steps + 1):
        current_task().update_progress(0.9 * i / steps)
    return steps
