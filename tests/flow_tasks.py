"""Task functions for the flow-control tests (rate limits, selective retries,
jitter, aging). They report to Redis lists passed in, so the test sees what
happened inside the worker process and when."""

from __future__ import annotations

import time

import redis

from taskmesh import current_task


def _push(url: str, key: str, value: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.rpush(key, value)
    finally:
        client.close()


def stamp(url: str, key: str, label: str, seconds: float = 0.0) -> str:
    """Appends 'label start-epoch' when it starts, then sleeps ``seconds``."""
    _push(url, key, f"{label} {time.time()}")
    time.sleep(seconds)
    return label


class TransientError(Exception):
    """A failure worth retrying."""


class FlakyNetworkError(TransientError):
    """A subclass: retry_on=(TransientError,) must retry it too."""


class PermanentError(Exception):
    """A failure never worth retrying."""


ERRORS = {"transient": TransientError, "flaky": FlakyNetworkError,
          "permanent": PermanentError, "value": ValueError}


def raise_error(url: str, key: str, kind: str, until_attempt: int = 1_000_000) -> int:
    """Records the attempt, then raises ERRORS[kind] while attempt < until_attempt."""
    attempt = current_task().attempt
    _push(url, key, f"{attempt} {time.time()}")
    if attempt < until_attempt:
        raise ERRORS[kind](f"attempt {attempt}")
    return attempt


def sleep_then_ok(url: str, key: str, seconds: float) -> int:
    """Sleeps (a timeout candidate) on the first attempt, returns at once later."""
    attempt = current_task().attempt
    _push(url, key, f"{attempt} {time.time()}")
    if attempt == 1:
        time.sleep(seconds)
    return attempt
