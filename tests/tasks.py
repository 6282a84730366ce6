"""Task functions for the test suite.

Module level so workers resolve them by import string (``"tests.tasks:add"``)
and cloudpickle pickles them by reference. Most return data the test asserts
on (timestamps, thread names, pids) or append to a Redis list passed in.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import redis

from taskmesh import current_task


def add(a, b):
    return a + b


async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


def echo(*args, **kwargs):
    """Returns exactly what it was given: (args tuple, kwargs dict)."""
    return args, kwargs


async def async_echo(*args, **kwargs):
    return args, kwargs


def types_of(*args, **kwargs):
    """Type names of what arrived, for checking tuples stay tuples."""
    return [type(a).__name__ for a in args], {k: type(v).__name__ for k, v in kwargs.items()}


def return_none():
    return None


def fail(message="boom"):
    raise ValueError(message)


async def async_fail(message="boom"):
    raise ValueError(message)


def my_function(arg1, arg2, param1=0):
    """The seed example's function: reports progress and returns a sum."""
    current_task().update_progress(0.5, "Halfway done")
    return arg1 + arg2 + param1


def record(url: str, key: str, label: Any) -> Any:
    """Appends ``label`` to the Redis list ``key`` (execution order)."""
    client = redis.Redis.from_url(url)
    try:
        client.rpush(key, str(label))
    finally:
        client.close()
    return label


def interval(seconds: float) -> tuple[float, float, str, int]:
    """Sleeps in a thread: (start, end, thread name, pid)."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time(), threading.current_thread().name, os.getpid()


async def async_interval(seconds: float) -> tuple[float, float, str, int]:
    """Sleeps on the event loop: (start, end, thread name, pid)."""
    start = time.time()
    await asyncio.sleep(seconds)
    return start, time.time(), threading.current_thread().name, os.getpid()


def thread_info() -> dict[str, Any]:
    current = threading.current_thread()
    return {
        "thread": current.name,
        "main_thread": threading.main_thread().name,
        "is_main": current is threading.main_thread(),
        "pid": os.getpid(),
    }


async def async_thread_info() -> dict[str, Any]:
    info = thread_info()
    info["loop_running"] = asyncio.get_running_loop().is_running()
    return info


def context_info() -> dict[str, Any]:
    ctx = current_task()
    recorded = ctx.update_progress(0.25, "from a thread")
    return {"task_id": ctx.task_id, "attempt": ctx.attempt, "name": ctx.name,
            "metadata": ctx.metadata, "cancelled": ctx.cancelled, "recorded": recorded,
            "thread": threading.current_thread().name}


async def async_context_info() -> dict[str, Any]:
    ctx = current_task()
    await asyncio.sleep(0)
    recorded = ctx.update_progress(0.75, "from a coroutine")
    return {"task_id": ctx.task_id, "attempt": ctx.attempt, "name": ctx.name,
            "metadata": ctx.metadata, "cancelled": ctx.cancelled, "recorded": recorded,
            "thread": threading.current_thread().name}


def worker_pid() -> int:
    return os.getpid()
