"""Task functions for tests/test_reliability.py (module level, so workers
resolve them by import string)."""

from __future__ import annotations

import asyncio
import time
from typing import Iterator

from taskmesh import current_task


def _progress_updates(seconds: float) -> Iterator[int]:
    """Reports progress (each update must return True) until ``seconds``
    have passed, yielding the count after each; the caller sleeps between
    them its own way (time.sleep in a thread, await in a coroutine)."""
    ctx = current_task()
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    updates = 0
    while time.monotonic() < deadline:
        assert ctx.update_progress(min((time.monotonic() - start) / seconds, 0.99), "working")
        updates += 1
        yield updates


def progress_for(seconds: float, step_s: float = 0.02) -> int:
    """Reports progress every ``step_s`` for ``seconds``; returns how many
    updates it made (all of them returned True)."""
    updates = 0
    for updates in _progress_updates(seconds):
        time.sleep(step_s)
    return updates


async def async_progress_for(seconds: float, step_s: float = 0.02) -> int:
    updates = 0
    for updates in _progress_updates(seconds):
        await asyncio.sleep(step_s)
    return updates


def sleep_then(seconds: float, value: object = "done") -> object:
    time.sleep(seconds)
    return value


async def block_loop_for(seconds: float) -> str:
    """Blocks the worker's event loop (a sync sleep inside async def)."""
    time.sleep(seconds)
    return "blocked"


def return_touch_on_unpickle(path: str) -> object:
    """A result whose mere unpickling creates ``path`` (see bad_tasks)."""
    from tests.bad_tasks import TouchOnUnpickle

    return {"marker": TouchOnUnpickle(path), "plain": [1, 2]}


async def async_sleep_then(seconds: float, value: object = "done") -> object:
    await asyncio.sleep(seconds)
    return value
