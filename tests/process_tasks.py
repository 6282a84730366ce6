"""Task functions for tests/test_process_executor.py, imported by name in the
worker's child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from taskmesh import current_task


def whoami(value: Any = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "value": value, "started": time.time()}


async def async_whoami(value: Any = None) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"pid": os.getpid(), "value": value, "loop": asyncio.get_running_loop().is_running()}


def add(a: int, b: int) -> int:
    return a + b


def echo(value: Any) -> Any:
    return value


class Boom(Exception):
    pass


def raise_boom(message: str) -> None:
    _inner(message)


def _inner(message: str) -> None:
    raise Boom(message)


def count_primes(limit: int) -> int:
    """CPU-bound pure Python (holds the GIL the whole time)."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(sieve[i * i::i]))
    return sum(sieve)


def cpu_interval(limit: int) -> dict[str, Any]:
    start = time.time()
    primes = count_primes(limit)
    return {"start": start, "end": time.time(), "pid": os.getpid(), "primes": primes}


def _write_pid(pidfile: str | None) -> None:
    if pidfile:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)


def spin_forever(pidfile: str | None = None) -> None:
    _write_pid(pidfile)
    while True:
        pass


def sleep_in_c(seconds: float, pidfile: str | None = None) -> str:
    _write_pid(pidfile)
    time.sleep(seconds)
    return "woke"


def started_then_sleep(seconds: float) -> dict[str, Any]:
    started = time.time()
    time.sleep(seconds)
    return {"started": started, "pid": os.getpid()}


def hard_exit(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def report_progress(steps: int) -> dict[str, Any]:
    ctx = current_task()
    for i in range(1, steps + 1):
        ctx.update_progress(i / steps, f"step {i}/{steps}")
        time.sleep(0.05)
    return {"task_id": ctx.task_id, "attempt": ctx.attempt, "name": ctx.name,
            "metadata": ctx.metadata, "cancelled": ctx.cancelled, "pid": os.getpid()}


def progress_then_wait(seconds: float) -> None:
    current_task().update_progress(0.5, "half way")
    time.sleep(seconds)


def fail_first_attempt_then_sleep(seconds: float) -> int:
    attempt = current_task().attempt
    if attempt == 1:
        while True:
            pass
    time.sleep(seconds)
    return attempt


class BadReduce:
    def __reduce__(self) -> Any:
        raise SystemExit(3)


def bad_result() -> BadReduce:
    return BadReduce()


class BadStr(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt

    def __repr__(self) -> str:
        raise SystemExit(4)


def raise_bad_str() -> None:
    raise BadStr()


def unpicklable_result() -> Any:
    import threading

    return threading.Lock()


def noop() -> None:
    return None


def hold_gil(seconds: float) -> int:
    """Holds the GIL in one C call for ``seconds``: libc ``usleep`` called
    through ``ctypes.PyDLL``, which (unlike CDLL) keeps the GIL. No other
    thread of the process runs meanwhile, the lease keeper included."""
    import ctypes

    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))
    return os.getpid()


def exit_on_first_attempt(code: int = 1) -> int:
    """Ends its child process with ``os._exit`` on the first attempt only;
    a retry returns its attempt number."""
    attempt = current_task().attempt
    if attempt == 1:
        os._exit(code)
    return attempt
