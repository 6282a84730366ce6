"""How an idle worker waits for work, on time for scheduled tasks.

An idle worker blocks on its queues' wake lists (BLPOP): every enqueue pushes
a token there, and so does every script that makes a task the earliest
SCHEDULED one of its queue (``schedule()`` in lua/prelude.lua), so a worker
sleeping towards an older due time claims again and learns the new one.

Waiting for a due time cannot be left to BLPOP's own timeout: Redis checks
blocked clients' timeouts only when its event loop wakes, which on an idle
server is every ``1/hz`` s (100 ms by default), so delayed tasks and retries
would start up to 100 ms late. When something is due soon the worker arms a
local timer instead; when it fires, the worker pushes a token onto its own
``alarm:<worker id>`` list, which the same BLPOP watches. The BLPOP then
returns at once and the claim that follows promotes the due task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

from .connection import CONNECTION_ERRORS
from .keys import Keys

log = logging.getLogger(__name__)

IDLE_MAX_S = 1.0  # longest block without a claim (it also drains leftover resolutions)
ALARM_TTL_MS = 10_000  # a token left by a worker that died does not linger


class IdleWaiter:
    def __init__(self, client: Any, keys: Keys, worker_id: str, queues: Sequence[str]):
        self.client = client
        self.alarm_key = keys.alarm(worker_id)
        self.watched = [*(keys.wake(q) for q in queues), self.alarm_key]

    async def wait(self, next_due_ms: int, max_s: float = IDLE_MAX_S) -> None:
        """Returns when a wake token arrives, when ``next_due_ms`` (ms until
        the earliest SCHEDULED task, -1 if none) has passed, or after about
        ``max_s`` seconds."""
        due_s = next_due_ms / 1000 if 0 <= next_due_ms < max_s * 1000 else None
        blpop = asyncio.ensure_future(self.client.blpop(self.watched, timeout=max_s))
        try:
            if due_s is not None:
                done, _ = await asyncio.wait({blpop}, timeout=due_s)
                if not done:
                    await self._ring()
            await blpop
        finally:
            if not blpop.done():
                blpop.cancel()

    async def _ring(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.alarm_key, "1")
        pipe.pexpire(self.alarm_key, ALARM_TTL_MS)
        try:
            await pipe.execute()
        except CONNECTION_ERRORS as exc:  # the BLPOP times out by itself instead
            log.debug("could not ring the idle alarm: %s", exc)
