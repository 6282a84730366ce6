"""One events subscription per dashboard process, fanned out to SSE clients.

:class:`EventHub` holds the process's only events reader (through
:func:`taskmesh.events.iterate_events`, which reconnects by itself) and copies
each event into a bounded queue per connected browser. Two rules keep every
client gap-free without the hub remembering anything:

- a client whose queue overflows (a stalled tab) is disconnected rather than
  silently skipped; its browser reconnects with ``Last-Event-ID`` and the
  replay stream fills in what it missed;
- after the hub's own connection drops (Redis restart), it resumes reading
  the events stream where it was, so connected clients miss nothing (only
  what the stream's cap trimmed meanwhile, which a replay could not give
  back either).

:func:`sse_messages` is the per-connection part: it registers the client's
queue *before* reading the replay stream, so an event published meanwhile is
both replayed and queued; the replayed ids are remembered and their queued
copies skipped, which is what makes the resume free of gaps and duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from typing import Any, AsyncIterator, Awaitable, Callable

from ..events import iterate_events
from ..keys import Keys
from ..models import Event

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
KEEPALIVE_S = 15.0
REPLAY_BATCH = 1000

_CLOSE: Any = object()  # queued to end one client's stream


class Listener:
    """One SSE client's queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_LIMIT + 1)

    def offer(self, item: Any) -> bool:
        if self.queue.qsize() >= QUEUE_LIMIT and item is not _CLOSE:
            return False
        self.queue.put_nowait(item)
        return True


class EventHub:
    def __init__(self, client: Any, keys: Keys):
        self.client = client
        self.keys = keys
        self.listeners: set[Listener] = set()
        self.subscribed = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscriptions = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        for listener in list(self.listeners):
            listener.offer(_CLOSE)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.5)

    def _on_subscribed(self) -> None:
        self._subscriptions += 1
        if self._subscriptions > 1:
            log.warning("event subscription restored; %d SSE client(s) resume from the "
                        "replay stream", len(self.listeners))
            for listener in list(self.listeners):
                self._close(listener)
        self.subscribed.set()

    async def _run(self) -> None:
        try:
            async for event in iterate_events(self.client, self.keys,
                                              on_subscribed=self._on_subscribed, stop=self._stop):
                for listener in list(self.listeners):
                    if not listener.offer(event):
                        log.warning("SSE client fell %d events behind; disconnecting it "
                                    "(it resumes from the replay stream)", QUEUE_LIMIT)
                        self._close(listener)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("event hub stopped")

    def _close(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        listener.offer(_CLOSE)

    def listen(self) -> Listener:
        listener = Listener()
        self.listeners.add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        self.listeners.discard(listener)


def event_json(event: Event) -> dict[str, Any]:
    data = asdict(event)
    data["type"] = str(event.type)
    return data


def sse_message(event: Event) -> str:
    payload = json.dumps(event_json(event), default=str, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"


Replay = Callable[[str], Awaitable[list[Event]]]


async def open_stream(hub: EventHub, replay: Replay, last_event_id: str | None,
                      subscribe_timeout_s: float = 5.0) -> AsyncIterator[str]:
    """Sets up one SSE connection and returns its message iterator.

    Everything that can fail with a status code (a malformed
    ``Last-Event-ID``, Redis unreachable for the replay) fails here, before
    the response starts; the iterator itself only waits."""
    try:
        await asyncio.wait_for(hub.subscribed.wait(), subscribe_timeout_s)
    except TimeoutError:
        pass  # Redis is down: the stream starts and waits for it
    listener = hub.listen()
    try:
        first = await replay(last_event_id) if last_event_id else []
    except BaseException:
        hub.unlisten(listener)
        raise
    return _messages(hub, replay, listener, first)


async def _messages(hub: EventHub, replay: Replay, listener: Listener,
                    first: list[Event]) -> AsyncIterator[str]:
    replayed: set[str] = set()
    try:
        batch = first
        while batch:
            for event in batch:
                if event.id:
                    replayed.add(event.id)
                yield sse_message(event)
            if len(batch) < REPLAY_BATCH or not batch[-1].id:
                break
            batch = await replay(batch[-1].id)
        while True:
            try:
                item = await asyncio.wait_for(listener.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is _CLOSE:
                return
            if item.id in replayed:
                replayed.discard(item.id)  # each id is queued at most once
                continue
            yield sse_message(item)
    finally:
        hub.unlisten(listener)
