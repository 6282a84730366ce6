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
from .held import HeldConnection
from .keys import Keys
from .scripts import Call

T = TypeVar("T")

log = logging.getLogger(__name__)

IDLE_MAX_S = 1.0  # longest block without a claim (it also drains leftover resolutions)
ALARM_TTL_MS = 10_000  # a token left by a worker that died does not linger


class IdleWaiter:
    def __init__(self, client: Any, keys: Keys, worker_id: str, queues: Sequence[str],
                 held: HeldConnection | None = None):
        self.client = client
        self.alarm_key = keys.alarm(worker_id)
        self.watched = [*(keys.wake(q) for q in queues), self.alarm_key]
        # The claim loop's own connection (held.py): a wait with a claim behind
        # it goes there, one write and two replies read directly, instead of
        # a pipeline of the client (pool checkout, pipeline object, per-write
        # Task): ~80 us of the ~440 us an idle worker spent per lone task.
        self.held = held if held is not None and held.usable else None
        self._ringing: asyncio.Task[None] | None = None  # the due-time ring, kept referenced

    async def wait(self, next_due_ms: int, max_s: float = IDLE_MAX_S,
                   then: Call[T] | None = None) -> T | None:
        """Returns when a wake token arrives, when ``next_due_ms`` (ms until
        the earliest SCHEDULED task, -1 if none) has passed, or after about
        ``max_s`` seconds. With ``then`` (a claim), its parsed reply, or None
        if it gave none (an error reply, NOSCRIPT, a lost connection: the
        caller claims itself, under the same claim id, which replays a claim
        that did run)."""
        due_s = next_due_ms / 1000 if 0 <= next_due_ms < max_s * 1000 else None
        if due_s is None:
            return await self._blpop(max_s, then)
        # A timer handle rather than a second task and asyncio.wait: it rings
        # the alarm list when the due time comes (the BLPOP then returns).
        alarm = asyncio.get_running_loop().call_later(due_s, self._ring_soon)
        try:
            return await self._blpop(max_s, then)
        finally:
            alarm.cancel()

    def _ring_soon(self) -> None:
        self._ringing = asyncio.get_running_loop().create_task(self._ring())

    async def _blpop(self, max_s: float, then: Call[T] | None) -> T | None:
        if then is None:
            await self.client.blpop(self.watched, timeout=max_s)
            return None
        if self.held is not None:
            raws = await self.held.raw([then], head=("BLPOP", *self.watched, max_s),
                                       head_block_s=max_s)
            if raws is None or isinstance(raws[0], Exception):
                return None
            return then.parse(raws[0])
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
