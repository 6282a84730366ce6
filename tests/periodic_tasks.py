"""Task functions for the periodic tests (resolved by import string)."""

from __future__ import annotations

import redis

from taskmesh import current_task


def record(url: str, key: str) -> str:
    """Appends the running task's id to a Redis list: which ticks ran."""
    task_id = current_task().task_id
    redis.Redis.from_url(url).rpush(key, task_id)
    return task_id
