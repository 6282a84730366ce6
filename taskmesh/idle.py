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

That claim is sent with the BLPOP (``then``), behind it on the same
connection: Redis runs it the moment the BLPOP returns, so a woken worker
does not first take a round trip back to learn that it should claim. A
BLPOP that timed out runs it too (the periodic claim an idle worker makes
anyway). A wait with a claim behind it is not cancelled (its tasks would be
claimed with nobody to read the reply): :meth:`IdleWaiter.ring` ends it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence, TypeVar

from .connection import CONNECTION_ERRORS
from .keys import Keys
from .scripts import Call

T = TypeVar("T")

log = logging.getLogger(__name__)

IDLE_MAX_S = 1.0  # longest block without a claim (it also drains leftover resolutions)
ALARM_TTL_MS = 10_000  # a token left by a worker that died does not linger


class IdleWaiter:
    def __init__(self, client: Any, keys: Keys, worker_id: str, queues: Sequence[str]):
        self.client = client
        self.alarm_key = keys.alarm(worker_id)
        self.watched = [*(keys.wake(q) for q in queues), self.alarm_key]

    async def wait(self, next_due_ms: int, max_s: float = IDLE_MAX_S,
                   then: Call[T] | None = None) -> T | None:
        """Returns when a wake token arrives, when ``next_due_ms`` (ms until
        the earliest SCHEDULED task, -1 if none) has passed, or after about
        ``max_s`` seconds. With ``then`` (a claim), its parsed reply, or None
        if it gave none (an error reply, NOSCRIPT: the caller claims itself,
        under the same claim id, which replays a claim that did run)."""
        due_s = next_due_ms / 1000 if 0 <= next_due_ms < max_s * 1000 else None
        blpop = asyncio.ensure_future(self._blpop(max_s, then))
        try:
            if due_s is not None:
                done, _ = await asyncio.wait({blpop}, timeout=due_s)
                if not done:
                    await self.ring()
            result: T | None = await blpop
            return result
        finally:
            if not blpop.done():
                blpop.cancel()

    async def _blpop(self, max_s: float, then: Call[Any] | None) -> Any:
        if then is None:
            await self.client.blpop(self.watched, timeout=max_s)
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.blpop(self.watched, timeout=max_s)
        pipe.execute_command("EVALSHA", *then.evalsha_args)
        _, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            return None
        return then.parse(reply)

    async def ring(self) -> None:
        """Ends a wait at once (its claim, if any, runs and is read)."""
        await self._ring()

    async def _ring(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.alarm_key, "1")
        pipe.pexpire(self.alarm_key, ALARM_TTL_MS)
        try:
            await pipe.execute()
        except CONNECTION_ERRORS as exc:  # the BLPOP times out by itself instead
            log.debug("could not ring the idle alarm: %s", exc)
