"""Example task module for worker containers (``--import example_tasks``).

Workers resolve import-string tasks by module path, so producers can send
work without pickled code, e.g. with ``taskmesh worker --no-pickle``::

    tm.register_task("example_tasks:resize", "cat.png", kwargs={"width": 256})
    tm.register_task("example_tasks:fetch_json", "https://example.org/api")

It also re-exports the tasks of ``taskmesh demo`` (they live in the package,
``taskmesh.demo_tasks``), so a docker-compose deployment running the demo
producer against these workers (``taskmesh demo --workers 0``, once the CLI
allows it) finds every function it sends.

Keep task functions at module level: workers import them by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.request
from typing import Any

from taskmesh import current_task
from taskmesh.demo_tasks import (  # noqa: F401  (re-exported for the demo producer)
    UpstreamUnavailable,
    combine,
    extract,
    extract_blocking,
    flaky_call,
    long_export,
    notify,
    publish_report,
    slow_query,
    thumbnail,
    validate,
)

__all__ = [
    "add", "resize", "fetch_json", "crunch", "sleep",
    "combine", "extract", "extract_blocking", "flaky_call", "long_export", "notify",
    "publish_report", "slow_query", "thumbnail", "validate", "UpstreamUnavailable",
]


def add(a: int, b: int) -> int:
    """The smallest possible task (msgpack arguments and result)."""
    return a + b


async def sleep(seconds: float = 1.0) -> float:
    """I/O-bound: thousands of these share one worker's event loop."""
    await asyncio.sleep(seconds)
    return seconds


async def resize(image: str, width: int = 128, steps: int = 5) -> dict[str, Any]:
    """Pretends to resize an image, reporting progress as it goes."""
    task = current_task()
    for step in range(1, steps + 1):
        await asyncio.sleep(0.1)
        task.update_progress(step / steps, f"{image}: pass {step}/{steps}")
    return {"image": image, "width": width}


def fetch_json(url: str, timeout: float = 10.0) -> Any:
    """Blocking I/O: give it ``executor_type="thread_pool"`` (or leave it on
    ``async``, which runs plain functions in the thread pool too)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read().decode())


def crunch(data: str, rounds: int = 200_000) -> str:
    """CPU-bound and cooperative: checks ``current_task().cancelled``."""
    task = current_task()
    digest = data.encode()
    began = time.monotonic()
    for i in range(rounds):
        digest = hashlib.sha256(digest).digest()
        if i % 20_000 == 0:
            if task.cancelled:
                break
            task.update_progress(i / rounds, f"{time.monotonic() - began:.1f}s")
    return digest.hex()
