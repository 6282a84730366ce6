"""Small waiting helpers for tests: poll stored state with a deadline (the
thing observed lives in another process, so there is no event to await)."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.02, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def ids_in(shard: int, count: int, prefix: str, n: int = 1) -> list[str]:
    """Caller-chosen task ids that land in ``shard`` of ``count`` (random ids
    would leave a shard empty now and then)."""
    from taskmesh.sharding import shard_of

    out, i = [], 0
    while len(out) < n:
        candidate = f"{prefix}-{i}"
        if shard_of(candidate, count) == shard:
            out.append(candidate)
        i += 1
    return out
