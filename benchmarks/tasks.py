"""Task functions the benchmark workers import by name.

Kept free of any task-queue import so every system (and every interpreter,
see ``--peer-python``) can import this module.
"""

from __future__ import annotations

import asyncio
import time


def noop(*args, **kwargs):
    """A plain function that does nothing (runs in a worker's thread pool
    under taskmesh's default ``async`` executor)."""
    return


async def anoop(*args, **kwargs):
    """A coroutine function that does nothing (runs on the worker's loop)."""
    return


async def asleep(seconds: float = 0.01, *args, **kwargs):
    """I/O-bound stand-in: awaits ``asyncio.sleep``."""
    await asyncio.sleep(seconds)


def sleep(seconds: float = 0.01, *args, **kwargs):
    """Blocking stand-in for systems without an async runtime."""
    time.sleep(seconds)


def echo(value=None, *args, **kwargs):
    return value


async def aecho(value=None, *args, **kwargs):
    return value
