"""Flow-control settings of a namespace: rate limits and priority aging.

Both live in Redis (``ratelimits`` hash, ``config`` hash) and are applied
by ``claim.lua`` through ``lua/flow.lua``: the token buckets, the parking
lots of tasks waiting for a token, and the aged claim order are described
there. This module validates the settings before anything is stored and
writes them.
"""

from __future__ import annotations

import math
from typing import Any

from . import scripts
from .keys import Keys, validate_rate_key
from .store import Commands


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_rate_limit(key: str, per_second: Any, burst: Any) -> tuple[float, float] | None:
    """(per_second, bucket capacity), or None when the limit is to be removed.

    ``burst`` defaults to ``per_second``, but never below one token: a
    capacity under 1 would never let a task start.
    """
    validate_rate_key(key)
    if per_second is None:
        return None
    rate = _positive_number("per_second", per_second)
    if burst is None:
        return rate, max(rate, 1.0)
    if isinstance(burst, bool) or not isinstance(burst, int):
        raise TypeError(f"burst must be an int, not {type(burst).__name__}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst}")
    return rate, float(burst)


def check_priority_aging(seconds: Any) -> float | None:
    return None if seconds is None else _positive_number("priority_aging_s", seconds)


def set_rate_limit(client: Any, keys: Keys, commands: Commands, key: str,
                   limit: tuple[float, float] | None) -> None:
    """Stores (or removes) a validated limit. After a change, tasks parked
    under the old limit go back to their queues, one ZSCAN step per script
    call, so their turns are recomputed for the new one."""
    if not scripts.run(client, commands.set_rate_limit(key, limit)):
        return
    for raw in client.smembers(keys.queues):
        queue = raw.decode() if isinstance(raw, bytes) else str(raw)
        cursor = "0"
        while True:
            cursor = scripts.run(client, commands.unpark(key, queue, cursor))
            if cursor == "0":
                break


def set_priority_aging(client: Any, keys: Keys, seconds: float | None) -> None:
    """Last writer wins; claim.lua reads it on every claim, so it applies at
    once to tasks already queued."""
    if seconds is None:
        client.hdel(keys.config, "priority_aging_s")
    else:
        client.hset(keys.config, "priority_aging_s", repr(seconds))
