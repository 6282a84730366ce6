"""Push-based waiting for task completion.

One pattern subscription (``done:*`` of every shard of the namespace) per
event loop is shared by every wait in it. A wait subscribes first, then reads the stored
status, so a completion between the two is never missed; the stored state
is re-read every few seconds as well, so a lost pub/sub message (a Redis
restart, a dropped connection) costs latency, never correctness. The wait
for the subscription is bounded (RECHECK_S, or the wait's own timeout):
with Redis down the status read then raises, instead of the wait hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable

from .keys import Keys
from .models import TaskStatus
from .pubsub import messages, stop_listener
from .sharding import channel_patterns

RECHECK_S = 5.0


class DoneWaiter:
    def __init__(self, client: Any, keys: Keys):
        self._client = client
        # done:<id> of every shard (sharding.channel_patterns)
        self._patterns = channel_patterns(keys.namespace, "done:*")
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._ready: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def _ensure_reader(self, within_s: float) -> None:
        """Starts the reader; waits up to ``within_s`` for it to subscribe.
        Past that (Redis down or slow) the status read goes ahead anyway: it
        raises the connection error, or finds the state, and the re-read
        every RECHECK_S covers a completion the late subscription missed."""
        if self._reader is None or self._reader.done():
            self._ready = asyncio.Event()
            self._stop = asyncio.Event()
            self._reader = asyncio.create_task(self._read_forever(), name="taskmesh-done-waiter")
        assert self._ready is not None
        if not self._ready.is_set() and within_s > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), within_s)

    async def _read_forever(self) -> None:
        stream = messages(self._client, patterns=self._patterns, label="result listener",
                          on_subscribed=self._ready.set,  # type: ignore[union-attr]
                          on_reconnect=self._wake_all,  # waiters re-read the stored state
                          stop=self._stop)
        async for channel, _ in stream:
            self._wake(channel.split("}:done:", 1)[1])

    def _wake(self, task_id: str) -> None:
        for fut in self._waiters.pop(task_id, []):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        for task_id in list(self._waiters):
            self._wake(task_id)

    async def wait(
        self,
        task_id: str,
        read_status: Callable[[], Awaitable[TaskStatus]],
        timeout: float | None,
    ) -> TaskStatus:
        """Returns the terminal status; raises TimeoutError after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        await self._ensure_reader(RECHECK_S if timeout is None else min(RECHECK_S, timeout))
        while True:
            fut = loop.create_future()
            self._waiters.setdefault(task_id, []).append(fut)
            try:
                status = await read_status()
                if status.is_terminal:
                    return status
                wait_s = RECHECK_S
                if deadline is not None:
                    wait_s = min(wait_s, deadline - loop.time())
                    if wait_s <= 0:
                        raise TimeoutError(f"task {task_id} did not finish within {timeout} s")
                try:
                    await asyncio.wait_for(fut, wait_s)
                except asyncio.TimeoutError:
                    pass
            finally:
                waiters = self._waiters.get(task_id)
                if waiters and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._waiters[task_id]

    def waiting(self) -> int:
        """How many tasks are waited for right now (subscribed, parked on a
        completion): what a caller checks instead of sleeping."""
        return len(self._waiters)

    async def close(self) -> None:
        if self._stop is not None:
            await stop_listener(self._reader, self._stop)
