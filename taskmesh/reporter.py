"""Sends workers' outcome reports to Redis in pipelined batches.

Under load many tasks finish within one loop iteration; their report
scripts go out in one pipeline (one round trip), which is most of the
worker's throughput. When Redis is unreachable the batch is retried with
backoff until it goes through: a report is never dropped by the worker.
Re-sending is safe because report.lua is fenced by the claim token: a
report that did run once answers 'stale' the second time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import scripts
from .connection import CONNECTION_ERRORS
from .scripts import Call

log = logging.getLogger(__name__)

MAX_BATCH = 256


class Reporter:
    def __init__(self, client: Any):
        self.client = client
        self._pending: list[tuple[Call, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._busy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="taskmesh-reporter")

    async def submit(self, call: Call) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((call, fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._busy = True
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                results = await self._send([call for call, _ in batch])
                for (_, fut), result in zip(batch, results):
                    if fut.done():
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
            self._busy = False

    async def _send(self, calls: list[Call]) -> list[Any]:
        delay = 0.1
        while True:
            try:
                return await scripts.arun_batch(self.client, calls)
            except CONNECTION_ERRORS as exc:
                log.warning("cannot report %d outcome(s) to Redis (%s); retrying", len(calls), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)  # results flow soon after Redis is back

    @property
    def pending(self) -> int:
        return len(self._pending) + (1 if self._busy else 0)

    async def close(self, timeout: float) -> bool:
        """Flushes what is pending (for at most ``timeout`` s), then stops.
        Returns False if reports had to be abandoned (Redis unreachable)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._pending or self._busy) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        flushed = not (self._pending or self._busy)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return flushed
