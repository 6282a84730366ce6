"""Events: live fan-out, an async iterator, and stream replay.

Scripts append every transition to the namespace's capped ``events`` stream
(one per shard), in the same atomic step as the transition itself (``emit``
in lua/prelude.lua): one write per event. Replay reads the stream
(``get_events``); live readers block on it (XREAD) from the position each
shard's stream had when they subscribed, so a live reader is "subscribed"
as soon as it knows those positions, and after a dropped connection it
resumes where it was: nothing is missed unless the stream's cap trimmed it
meanwhile.

:class:`Hub` is the one listener per (url, namespace) in a process: a
daemon thread running an event loop with one client, whose one XREAD reader
fans each event out to every :func:`subscribe` handler and ``tm.events()``
iterator (:class:`EventStream`), and whose one pub/sub connection serves
every result waiter of the process (waiters.py). Sync handlers run on that
thread, async handlers on its loop; a handler that raises is logged and the
listener goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import json
import logging
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Union

import redis.exceptions

from . import scripts
from .connection import (
    CONNECTION_ERRORS,
    async_client,
    is_cluster_client,
    memory_default,
    resolve_namespace,
    resolve_url,
)
from .keys import Keys, validate_namespace
from .models import Event, EventType
from .portal import run_loop
from .pubsub import stop_listener, stopped
from .scripts import busy_error
from .sharding import ShardSet, merge_key, event_id, shards_call
from .store import field_text
from .waiters import DoneWaiter

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


# An entry (``emit`` in lua/prelude.lua): task_id, e =
# "<type>,<status>,<priority>,<queue>,<attempt>,<runtime_ms>,<us>", worker,
# name, and data (JSON) only for other extras. Earlier shapes: the same with
# us in a field of its own (e without it); type, task_id, ts and data (JSON
# of everything); or type, task_id, us and the data flat.
E_FIELDS = ("status", "priority", "queue", "attempt", "runtime_ms")
NUMBER_FIELDS = frozenset({"priority", "attempt", "runtime_ms"})
ENVELOPE_FIELDS = frozenset({"type", "task_id", "us", "ts", "data", "e"})


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _timestamp(f: dict[str, str]) -> float:
    """Seconds, to the ms: from ``us`` (microseconds), or ``ts`` in entries
    written before it."""
    if "us" in f and "ts" not in f:
        return (int(f["us"]) // 1000) / 1000
    return float(f["ts"])


def _decode(f: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """(type, data) of an entry's fields; '' values of the compact shape
    are what the event does not have."""
    data = _data(json.loads(f["data"])) if f.get("data") else {}
    if "e" not in f:
        for name, value in f.items():
            if name not in ENVELOPE_FIELDS:
                data[name] = _number(value) if name in NUMBER_FIELDS else value
        return f["type"], data
    etype, *values = f["e"].split(",")
    if len(values) == len(E_FIELDS) + 1:  # us inside e
        f["us"] = values.pop()
    if len(values) != len(E_FIELDS):
        raise ValueError("malformed event")
    for name, value in (("name", f.get("name", "")), *zip(E_FIELDS, values),
                        ("worker", f.get("worker", ""))):
        if value:
            data[name] = _number(value) if name in NUMBER_FIELDS else value
    return etype, data


def decode_entry(entry_id: bytes | str, fields: dict[Any, Any]) -> Event | None:
    """An Event from a stream entry; None for an entry of another shape.
    Bytes that are not UTF-8 are a CorruptRecordError naming the field."""
    record = f"event {entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"
    f: dict[str, str] = {}
    for k, v in fields.items():
        name = field_text(record, "<field name>", k) or ""
        f[name] = field_text(record, name, v) or ""
    try:
        etype, data = _decode(f)  # first: it sets f["us"] from e, for _timestamp
        return Event(EventType(etype), f["task_id"], _timestamp(f), data,
                     entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
    except (ValueError, KeyError, TypeError):
        return None


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


SUBSCRIBE_WAIT_S = 5.0  # how long subscribing waits for the reader before going on
LIVE_BLOCK_MS = 1000  # one XREAD's wait: how often a live reader checks its stop event
LIVE_BATCH = 1000  # entries per stream per read


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def after(position: str, stream_id: str) -> bool:
    """Whether ``stream_id`` comes after ``position`` in one shard's stream."""
    return _stream_order(stream_id) > _stream_order(position)


async def _shard_count(client: Any, keys: Keys) -> int:
    """The stored count; 0 while the namespace has none (unused, or written
    before shards existed: shard 0 only, until a count is stored)."""
    count: int = await scripts.arun(client, shards_call(keys, 0))
    return count


async def live_positions(client: Any, keys: Keys) -> dict[int, str]:
    """Where each shard's stream ends now: a live reader started from these
    positions sees every event appended after this call ("subscribed"). A
    stream that does not exist yet starts at 0-0."""
    shardset = ShardSet(keys.namespace, max(await _shard_count(client, keys), 1))
    pipe = client.pipeline(transaction=False)
    for k in shardset.keys:
        pipe.execute_command("XREVRANGE", k.events, "+", "-", "COUNT", 1)
    positions = {}
    for shard, last in enumerate(await pipe.execute()):
        positions[shard] = _text(last[0][0]) if last else "0-0"
    return positions


def _entries(reply: Any) -> Iterable[tuple[Any, list[Any]]]:
    """XREAD's reply as (stream key, entries), RESP2 (list) or RESP3 (map)."""
    if not reply:
        return ()
    return reply.items() if isinstance(reply, dict) else reply


async def live_entries(
    client: Any, keys: Keys, start: dict[int, str] | None = None,
    on_subscribed: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[tuple[int, str, dict[Any, Any]]]:
    """(shard, stream id, fields) of every event after ``start`` (default:
    :func:`live_positions` now), in merge order within each read. One XREAD
    covers every shard's stream (on a cluster, one per shard: their keys
    live in different slots). A dropped connection is waited out and the
    read resumes at the same positions."""
    stop = stop or asyncio.Event()
    delay = 0.1
    positions: dict[int, str] = dict(start) if start is not None else {}
    stored = 0
    cluster = is_cluster_client(client)
    while not stopped(stop):
        try:
            if not positions:
                positions = await live_positions(client, keys)
            if stored == 0:
                # Unsharded so far: a count stored later brings the other
                # shards, whose streams hold only events newer than this read.
                stored = await _shard_count(client, keys)
                for shard in range(1, stored):
                    positions.setdefault(shard, "0-0")
            if on_subscribed is not None:
                on_subscribed()
                on_subscribed = None
            delay = 0.1
            shard_keys = ShardSet(keys.namespace, max(len(positions), 1)).keys
            groups = [[s] for s in positions] if cluster else [list(positions)]
            while not stopped(stop):
                reads = [_xread(client, [shard_keys[s].events for s in g],
                                [positions[s] for s in g], cluster) for g in groups]
                replies = (await asyncio.gather(*reads) if len(reads) > 1 else [await reads[0]])
                batch = []
                for group, reply in zip(groups, replies):
                    by_key = {shard_keys[s].events: s for s in group}
                    for key, entries in _entries(reply):
                        shard = by_key[_text(key)]
                        for entry_id, fields in entries:
                            positions[shard] = _text(entry_id)
                            batch.append((merge_key(shard, _text(entry_id), fields), shard,
                                          _text(entry_id), fields))
                batch.sort(key=lambda item: item[0])
                for _, shard, entry_id, fields in batch:
                    yield shard, entry_id, fields
                if stored == 0 and not batch:
                    break  # re-read the shard count (at most once a block)
        except (*CONNECTION_ERRORS, redis.exceptions.ResponseError, AttributeError) as exc:
            # MOVED/ASK: a failover moved a shard's slot (the slot map is
            # updated; the next read goes to the new master). AttributeError:
            # redis-py's asyncio cluster client, writing on a connection a
            # failover just closed ('NoneType' has no 'writelines'); the
            # listener must outlive that as it does any dropped connection.
            if (isinstance(exc, redis.exceptions.ResponseError) and busy_error(exc) is None
                    and not isinstance(exc, redis.exceptions.AskError)):
                raise
            if stop.is_set():
                return
            log.warning("event reader lost Redis (%s); resuming in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _xread(client: Any, stream_keys: list[str], ids: list[str], cluster: bool) -> Any:
    """On a cluster the read goes straight to the node of its stream's slot:
    left to redis-py, XREAD (a command with movable keys) costs one or two
    ``COMMAND GETKEYS`` round trips per read."""
    options = {"target_nodes": client.get_node_from_key(stream_keys[0])} if cluster else {}
    return await client.execute_command("XREAD", "COUNT", LIVE_BATCH, "BLOCK", LIVE_BLOCK_MS,
                                        "STREAMS", *stream_keys, *ids, **options)


async def iterate_events(
    client: Any, keys: Keys, types: EventTypes = None,
    on_subscribed: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    start: dict[int, str] | None = None,
) -> AsyncIterator[Event]:
    """Live events as an async iterator (after ``start``, see
    :func:`live_positions`; default: from now), resuming after Redis drops."""
    wanted = normalize_types(types)
    async for shard, entry_id, fields in live_entries(client, keys, start, on_subscribed, stop):
        event = decode_entry(event_id(shard, entry_id), fields)
        if event is not None and (wanted is None or event.type in wanted):
            yield event


class Subscription:
    """A handler registered with the process's listener; ``close()`` stops it."""

    def __init__(self, hub: "Hub", handler: Handler, types: frozenset[EventType] | None):
        self._hub = hub
        self.handler = handler
        self.types = types
        self.closed = False

    def wants(self, event: Event) -> bool:
        """Whether this handler is still open and asked for this event type."""
        return not self.closed and (self.types is None or event.type in self.types)

    def deliver(self, event: Event) -> None:
        """On the listener's loop: a sync handler runs here, an async one as a
        task of this loop; what it raises is logged."""
        try:
            if inspect.iscoroutinefunction(self.handler):
                task = asyncio.get_running_loop().create_task(self.handler(event))
                task.add_done_callback(_log_failure)
            else:
                self.handler(event)
        except Exception:
            log.exception("event handler %r raised on %s; listener continues",
                          self.handler, event.type)

    def close(self) -> None:
        """Stops delivery to this handler; the listener itself stops with the
        last user of its namespace in this process. Safe to call twice."""
        if not self.closed:
            self.closed = True
            self._hub.unlisten(self)
            self._hub.release()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EventStream:
    """``tm.events()``: live events as an async iterator, fed by the
    process's listener for the namespace (no connection of its own). It
    subscribes on first use; ``await stream.subscribed()`` does so at once
    and returns when every event appended from then on will be delivered.
    ``aclose()`` stops it (so does garbage collection)."""

    def __init__(self, url: str, namespace: str, types: EventTypes = None):
        self._url, self._namespace = url, namespace
        self._wanted = normalize_types(types)
        self._hub: Hub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Event] | None = None
        self._ready: asyncio.Future[None] | None = None

    def wants(self, event: Event) -> bool:
        return self._wanted is None or event.type in self._wanted

    def deliver(self, event: Event) -> None:
        """On the listener's loop: hands the event to the iterating loop."""
        if self._loop is not None and self._queue is not None:
            _call_in(self._loop, self._queue.put_nowait, event)

    async def subscribed(self, timeout_s: float = SUBSCRIBE_WAIT_S) -> None:
        """Subscribes (once) and waits until the listener reads from a
        position taken after this call, at most ``timeout_s``; past that (Redis
        down) the stream goes on and delivers once the reader is back."""
        if self._hub is None:
            loop = self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            ready = self._ready = loop.create_future()

            def set_ready() -> None:
                if not ready.done():
                    ready.set_result(None)

            self._hub = acquire_hub(self._url, self._namespace)
            self._hub.listen(self, lambda: _call_in(loop, set_ready))
        assert self._ready is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        if self._hub is None:
            await self.subscribed()
        assert self._queue is not None
        return await self._queue.get()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.unlisten(self)
            hub.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # (at interpreter exit, say)
            self.close()


Listener = Union[Subscription, EventStream]


class _EventsReader:
    """One XREAD reader of the hub (events), while anyone listens: its task,
    stop event, and whether (and who waits until) it has subscribed."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.ready = False
        self.on_ready: list[Callable[[], None]] = []
        self.task: asyncio.Task[None] | None = None

    def subscribed(self) -> None:
        self.ready = True
        callbacks, self.on_ready = self.on_ready, []
        for callback in callbacks:
            callback()


class _LoopThread:
    """A daemon thread running one event loop, with a client of its own (a
    client's connections belong to the loop that made them)."""

    def __init__(self, url: str, name: str):
        self.loop = asyncio.new_event_loop()
        up = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(url, up), daemon=True, name=name)
        self.thread.start()
        up.wait()

    def _main(self, url: str, up: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.client = async_client(url)
        up.set()
        run_loop(self.loop)  # until stopped; pending reads are ended before it closes

    async def stop(self) -> None:
        """On the loop: closes the client and stops the loop."""
        with contextlib.suppress(Exception):
            await self.client.aclose()
        self.loop.stop()


class Hub:
    """The process's one listener for a (url, namespace), serving everyone
    in the process:

    * :attr:`waiter`, the result waiters' one pub/sub connection (``done:*``
      of every shard), for every manager, thread and loop (waiters.py), on
      a thread of its own (``taskmesh-done-<ns>``), so a handler that blocks
      never holds up a result;
    * while anyone listens to events, one XREAD reader of the events
      streams on the ``taskmesh-events-<ns>`` thread (:attr:`loop`), fanned
      out to every :func:`subscribe` handler (sync ones run on that thread,
      async ones on its loop) and ``tm.events()`` iterator.

    So a process needs two connections per namespace for these, however
    many waits, handlers and iterators it runs. Users (managers,
    subscriptions, streams) hold it with :func:`acquire_hub` and
    :meth:`release`; the last release stops it."""

    def __init__(self, url: str, namespace: str):
        self.url, self.keys = url, Keys(namespace)
        self.users = 1  # guarded by _hubs_lock
        self.listeners: list[Listener] = []
        self._reader: _EventsReader | None = None  # touched on the events loop only
        self._events = _LoopThread(url, f"taskmesh-events-{namespace}")
        self._done = _LoopThread(url, f"taskmesh-done-{namespace}")
        self.loop, self.thread, self.client = (self._events.loop, self._events.thread,
                                               self._events.client)
        self.waiter = DoneWaiter(self._done.client, self.keys, self._done.loop, url=url)

    # ---- events (listeners from any thread; the reader on the loop) ---------------------
    def listen(self, listener: Listener, on_ready: Callable[[], None]) -> None:
        """Adds ``listener``; ``on_ready`` (safe from any thread) is called once
        the reader has subscribed, at once if it has already."""
        self.listeners.append(listener)
        if threading.current_thread() is self.thread:
            self._join_reader(on_ready)  # from a handler
        else:
            _call_in(self.loop, self._join_reader, on_ready)

    def _join_reader(self, on_ready: Callable[[], None]) -> None:
        reader = self._reader
        if reader is None:
            reader = self._reader = _EventsReader()
            reader.task = self.loop.create_task(self._read_events(reader),
                                                name="taskmesh-events-reader")
        if reader.ready:
            on_ready()
        else:
            reader.on_ready.append(on_ready)

    def unlisten(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self.listeners.remove(listener)
        if not self.listeners:
            _call_in(self.loop, self._leave_reader)

    def _leave_reader(self) -> None:
        """The reader stops when nobody listens (a later listener starts a new
        one, subscribed from its own start)."""
        reader = self._reader
        if reader is not None and not self.listeners:
            self._reader = None
            self.loop.create_task(stop_listener(reader.task, reader.stop))

    async def _read_events(self, reader: _EventsReader) -> None:
        async for event in iterate_events(self.client, self.keys, on_subscribed=reader.subscribed,
                                          stop=reader.stop):
            for listener in list(self.listeners):
                if listener.wants(event):
                    listener.deliver(event)

    # ---- lifetime --------------------------------------------------------------------
    def release(self) -> bool:
        """One user fewer; the last one stops the listener (in the background:
        :meth:`join` waits for it) and gets True."""
        with _hubs_lock:
            self.users -= 1
            if self.users > 0:
                return False
            if _hubs.get((self.url, self.keys.namespace)) is self:
                del _hubs[(self.url, self.keys.namespace)]
        _call_in(self.loop, lambda: self.loop.create_task(self._shutdown()))
        return True

    async def _shutdown(self) -> None:
        """Stops the readers now, not after their current blocking read (up to
        a second): a listener still in one when the interpreter exits is torn
        down half-way, and the half-run coroutines' errors surface at exit."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await stop_listener(reader.task, reader.stop)
        _call_in(self._done.loop, lambda: self._done.loop.create_task(self._stop_done()))
        await self._events.stop()

    async def _stop_done(self) -> None:
        await self.waiter.close()
        await self._done.stop()

    def join(self, timeout_s: float = 5.0) -> None:
        """Waits for a stopped listener's threads (not from one of them)."""
        for thread in (self._events.thread, self._done.thread):
            if threading.current_thread() is not thread:
                thread.join(timeout_s)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("async event handler raised; listener continues", exc_info=task.exception())


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Runs ``callback`` on ``loop`` from any thread; a closed loop has
    nobody left to serve."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


_hubs_lock = threading.Lock()
_hubs: dict[tuple[str, str], Hub] = {}


def acquire_hub(url: str, namespace: str) -> Hub:
    """The process's listener for (url, namespace), started if need be; the
    caller owes it one :meth:`Hub.release`."""
    with _hubs_lock:
        hub = _hubs.get((url, namespace))
        if hub is not None and hub.thread.is_alive():
            hub.users += 1
            return hub
        hub = _hubs[(url, namespace)] = Hub(url, namespace)
        return hub


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
    redis://localhost:6379/0. Returns once subscribed (at most 5 s)."""
    if not callable(handler):
        raise TypeError("handler must be callable")
    types = normalize_types(event_type)
    url, namespace = _target(url, namespace)
    hub = acquire_hub(url, namespace)
    sub = Subscription(hub, handler, types)
    ready = threading.Event()
    hub.listen(sub, ready.set)
    if threading.current_thread() is not hub.thread:  # a handler cannot wait on its own loop
        ready.wait(timeout=SUBSCRIBE_WAIT_S)
    return sub
