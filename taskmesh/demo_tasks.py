"""Tasks run by ``taskmesh demo`` (and usable from ``workers/example_tasks.py``).

Module-level functions, so workers import them by name: the demo sends the
ETL tasks as callables (cloudpickle pickles module functions by reference)
and ``publish_report`` as the import string
``"taskmesh.demo_tasks:publish_report"`` (no pickled code at all).

Every task reports progress through ``current_task().update_progress``,
which is what the demo's progress bars show.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from .context import current_task


# ---- the ETL DAG ----------------------------------------------------------------
async def extract(source: str, rows: int, steps: int = 8,
                  step_delay: float = 0.2) -> dict[str, Any]:
    """Async extraction in steps (runs on the worker's event loop)."""
    task = current_task()
    for step in range(1, steps + 1):
        await asyncio.sleep(step_delay)
        task.update_progress(step / steps, f"{source}: {rows * step // steps} rows")
    return {"source": source, "rows": rows}


def extract_blocking(source: str, rows: int, steps: int = 8,
                     step_delay: float = 0.2) -> dict[str, Any]:
    """The same extraction as blocking code (thread_pool / sequential executors)."""
    task = current_task()
    for step in range(1, steps + 1):
        if task.cancelled:  # cooperative cancellation in threads
            break
        time.sleep(step_delay)
        task.update_progress(step / steps, f"{source}: {rows * step // steps} rows")
    return {"source": source, "rows": rows}


def combine(upstream: list[str], url: str, namespace: str) -> dict[str, Any]:
    """Joins the results of the upstream tasks, read back from the store."""
    from .manager import TaskManager

    task = current_task()
    rows: dict[str, int] = {}
    with TaskManager(url, namespace=namespace) as tm:
        for i, task_id in enumerate(upstream, 1):
            part = tm.get_task_result(task_id) or {}
            rows[str(part.get("source", task_id))] = int(part.get("rows", 0))
            time.sleep(0.15)
            task.update_progress(i / len(upstream), f"joined {', '.join(rows)}")
    return {"tables": len(rows), "rows": sum(rows.values())}


def publish_report(title: str, pages: int = 4) -> str:
    """Sent as an import string: arguments and result are plain msgpack data."""
    task = current_task()
    digest = hashlib.sha256(title.encode())
    for page in range(1, pages + 1):
        time.sleep(0.15)
        digest.update(str(page).encode())
        task.update_progress(page / pages, f"page {page}/{pages}")
    return f"{title}.html sha256:{digest.hexdigest()[:8]}"


# ---- failure modes ----------------------------------------------------------------
class UpstreamUnavailable(ConnectionError):
    pass


async def flaky_call(endpoint: str, fail_attempts: int = 2) -> str:
    """Fails on its first ``fail_attempts`` attempts, succeeds after (retries)."""
    task = current_task()
    task.update_progress(0.2, f"GET {endpoint} (attempt {task.attempt})")
    await asyncio.sleep(0.3)
    if task.attempt <= fail_attempts:
        raise UpstreamUnavailable(f"{endpoint} answered 503 on attempt {task.attempt}")
    task.update_progress(1.0, f"200 OK on attempt {task.attempt}")
    return f"200 OK after {task.attempt} attempts"


async def slow_query(seconds: float = 30.0) -> str:
    """Runs far longer than its timeout: the worker cancels it at the deadline."""
    task = current_task()
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        await asyncio.sleep(0.1)
        elapsed = time.monotonic() - began
        task.update_progress(min(elapsed / seconds, 1.0), f"scanning… {elapsed:.1f}s")
    return "done"


async def long_export(steps: int = 100, step_delay: float = 0.1) -> str:
    """A long job the demo cancels while it runs (asyncio cancellation)."""
    task = current_task()
    for step in range(1, steps + 1):
        await asyncio.sleep(step_delay)
        task.update_progress(step / steps, f"exported {step * 1000} rows")
    return f"exported {steps * 1000} rows"


def validate(table: str) -> str:
    """Fails for good: no retries, so its dependents are cancelled."""
    task = current_task()
    task.update_progress(0.5, f"checking {table}")
    time.sleep(0.3)
    raise ValueError(f"{table}: column 'price' has 3 negative values")


def notify(channel: str, text: str) -> str:
    current_task().update_progress(1.0, f"sent to {channel}")
    return f"{channel}: {text}"


async def thumbnail(image: str, steps: int = 4, step_delay: float = 0.15) -> str:
    task = current_task()
    for step in range(1, steps + 1):
        await asyncio.sleep(step_delay)
        task.update_progress(step / steps, f"{image}: {step}/{steps}")
    return f"{image} 128x128"
