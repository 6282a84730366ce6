"""Events: live pub/sub fan-out, an async iterator, and stream replay.

Scripts publish every transition as JSON on the namespace's ``events``
channel and append it to the capped ``events`` stream, in the same atomic
step as the transition itself (see ``emit`` in lua/prelude.lua).

:func:`subscribe` shares one listener per (url, namespace) in a process: a
daemon thread running an event loop with one pub/sub connection, fanning
each event out to the matching handlers. Sync handlers run on that thread,
async handlers on its loop; a handler that raises is logged and the
listener goes on. After a Redis drop the listener reconnects and logs that
live events may have been missed: ``get_events(since=...)`` fills the gap.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import json
import logging
import threading
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Union

from .connection import async_client, memory_default, resolve_namespace, resolve_url
from .keys import Keys, validate_namespace
from .models import Event, EventType
from .pubsub import messages
from .sharding import channel_patterns, event_id, shard_from_channel
from .store import field_text

log = logging.getLogger(__name__)

Handler = Callable[[Event], Union[None, Awaitable[None]]]
EventTypes = Union[EventType, str, Iterable[Union[EventType, str]], None]


def normalize_types(event_type: EventTypes) -> frozenset[EventType] | None:
    if event_type is None:
        return None
    if isinstance(event_type, (str, EventType)):
        event_type = [event_type]
    types = []
    for item in event_type:
        try:
            types.append(EventType(item))
        except ValueError:
            raise ValueError(f"unknown event type {item!r}") from None
    return frozenset(types)


def _data(raw: Any) -> dict[str, Any]:
    # cjson encodes an empty table as [] (fakeredis) or {} (Redis).
    return raw if isinstance(raw, dict) else {}


def decode_message(raw: bytes | str) -> Event | None:
    try:
        msg = json.loads(raw)
        return Event(EventType(msg["type"]), str(msg["task_id"]), float(msg["ts"]),
                     _data(msg.get("data")), msg.get("id"))
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring malformed event message: %r", raw[:200])
        return None


def decode_entry(entry_id: bytes | str, fields: dict[Any, Any]) -> Event | None:
    """An Event from a stream entry; None for an entry of another shape.
    Bytes that are not UTF-8 are a CorruptRecordError naming the field."""
    record = f"event {entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"
    f: dict[str, str] = {}
    for k, v in fields.items():
        name = field_text(record, "<field name>", k) or ""
        f[name] = field_text(record, name, v) or ""
    try:
        return Event(EventType(f["type"]), f["task_id"], float(f["ts"]),
                     _data(json.loads(f.get("data") or "{}")),
                     entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
    except (ValueError, KeyError, TypeError):
        return None


async def iterate_events(
    client: Any, keys: Keys, types: EventTypes = None,
    on_subscribed: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """Live events as an async iterator, reconnecting after Redis drops."""
    wanted = normalize_types(types)

    def reconnected() -> None:
        log.warning("live events may have been missed while Redis was unreachable: "
                    "use get_events(since=...) to replay them")

    # Shard 0's channel, and a pattern for the other shards' (whose count a
    # listener never needs to know: it may start before the namespace is used).
    stream = messages(client, channels=[keys.events_channel],
                      patterns=channel_patterns(keys.namespace, "events")[1:],
                      label="event listener", on_subscribed=on_subscribed,
                      on_reconnect=reconnected, stop=stop)
    async for channel, data in stream:
        event = decode_message(data)
        if event is not None and (wanted is None or event.type in wanted):
            shard = shard_from_channel(keys.namespace, channel)
            yield replace(event, id=event_id(shard, event.id or ""))


class Subscription:
    """A handler registered with a process-wide listener; ``close()`` stops it."""

    def __init__(self, hub: "_Hub", handler: Handler, types: frozenset[EventType] | None):
        self._hub = hub
        self.handler = handler
        self.types = types
        self.closed = False

    def wants(self, event: Event) -> bool:
        """Whether this handler is still open and asked for this event type."""
        return not self.closed and (self.types is None or event.type in self.types)

    def close(self) -> None:
        """Stops delivery to this handler; the listener itself stops with the
        last subscription of its namespace. Safe to call twice."""
        if not self.closed:
            self.closed = True
            self._hub.remove(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Hub:
    """One listener thread + pub/sub connection per (url, namespace)."""

    def __init__(self, url: str, namespace: str):
        self.url, self.keys = url, Keys(namespace)
        self.subs: list[Subscription] = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True,
                                       name=f"taskmesh-events-{namespace}")
        self.task: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self._listen())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    async def _listen(self) -> None:
        client = async_client(self.url)
        try:
            # `ready` is set once subscribed, so subscribe() returns only when
            # an event published right after it will be delivered.
            async for event in iterate_events(client, self.keys, on_subscribed=self.ready.set,
                                              stop=self.stop):
                self._dispatch(event)
        finally:
            self.ready.set()
            await client.aclose()

    def _dispatch(self, event: Event) -> None:
        for sub in list(self.subs):
            if not sub.wants(event):
                continue
            try:
                if inspect.iscoroutinefunction(sub.handler):
                    task = self.loop.create_task(sub.handler(event))
                    task.add_done_callback(_log_failure)
                else:
                    sub.handler(event)
            except Exception:
                log.exception("event handler %r raised on %s; listener continues",
                              sub.handler, event.type)

    def add(self, sub: Subscription) -> None:
        self.subs.append(sub)

    def remove(self, sub: Subscription) -> None:
        """The last subscription to close stops the listener thread."""
        with _hubs_lock:
            if sub in self.subs:
                self.subs.remove(sub)
            if self.subs:
                return
            if _hubs.get((self.url, self.keys.namespace)) is self:
                del _hubs[(self.url, self.keys.namespace)]
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.stop.set)
            except RuntimeError:
                pass  # the loop closed meanwhile


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("async event handler raised; listener continues", exc_info=task.exception())


_hubs_lock = threading.Lock()
_hubs: dict[tuple[str, str], _Hub] = {}


def _target(url: str | None, namespace: str | None) -> tuple[str, str]:
    """Without a URL or $TASKMESH_URL, a process that uses the memory://
    store listens there (the seed example's ``subscribe(EventType.X,
    handler)`` hears its memory:// manager), in the store's most recently
    opened namespace unless one is given."""
    if url is None and not os.environ.get("TASKMESH_URL"):
        memory = memory_default()
        if memory is not None:
            url = memory[0]
            if namespace is None and not os.environ.get("TASKMESH_NAMESPACE"):
                namespace = memory[1]
    return resolve_url(url), validate_namespace(resolve_namespace(namespace))


def subscribe(event_type: EventTypes, handler: Handler, *, url: str | None = None,
              namespace: str | None = None) -> Subscription:
    """Calls ``handler(event)`` for each live event of the given type(s)
    (one type, a list, or None for all). Without ``url``: $TASKMESH_URL, else
    this process's memory:// store if it uses one, else
    redis://localhost:6379/0."""
    if not callable(handler):
        raise TypeError("handler must be callable")
    types = normalize_types(event_type)
    url, namespace = _target(url, namespace)
    with _hubs_lock:
        hub = _hubs.get((url, namespace))
        if hub is None or not hub.thread.is_alive():
            hub = _hubs[(url, namespace)] = _Hub(url, namespace)
        sub = Subscription(hub, handler, types)
        hub.add(sub)
    hub.ready.wait(timeout=5)
    return sub
