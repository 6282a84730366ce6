"""Push-based waiting for task completion.

One pattern subscription (``done:*`` of every shard of the namespace) is
shared by every wait on it, from any thread or event loop: its reader runs
on one loop (the process's listener for the namespace, events.py), and a
wait registers a wake-up callback that is safe to call from that loop's
thread. A wait subscribes first, then reads the stored status, so a
completion between the two is never missed; the stored state is re-read
when the subscription is lost, again once it is made again, and every few
seconds as well, so a lost pub/sub message (a Redis restart, a dropped
connection) costs latency, never correctness. The wait for the
subscription lasts until the reader's first attempt ends, at most RECHECK_S
(or the wait's own timeout): with Redis down the reader's failed connect
lets the status read go ahead at once, and it raises, instead of the wait
hanging or sitting out the bound.

The ``done:<id>`` message carries the outcome itself when it is small
(``done_message`` in lua/prelude.lua): a wait woken by one returns without
reading the record, one round trip less per result. A larger outcome, or a
wake-up after a reconnection, reads the record as before. Either way the
caller gets the same fields (:data:`OUTCOME_FIELDS`) and verifies a result
the same way (its signature binds the task id and the attempt).

A task this process registered while the subscription stood (a *fresh*
task, :meth:`DoneWaiter.mark` / :meth:`DoneWaiter.expect`) needs no first
read either: its completion cannot have been published before the
subscription, and the reader keeps the last RECENT_DONE messages, so one
that arrived before the wait began is found there. A reconnection in
between (the epoch changes), or more messages since than that window holds,
and the wait reads first as any other.

A blocking caller (``wait_for_task_sync``) reads the status on its own
(sync) connection. On a plain Redis (``redis://`` or a unix socket, hiredis
installed) the subscription is one raw socket read under a *reading role*
(:class:`_SocketReader`): a blocking wait that finds the role free reads
the socket itself until its own message comes (handing every other message
to its waiter), so the thread that waits is the thread that wakes, with no
other thread in between. A wait that finds the role taken (another thread
reads), and every async wait, parks on its callback as before; the
socket's own thread (``taskmesh-done-<ns>``) takes the role whenever such
waits are parked and nobody else reads, drains the socket when nobody
waits at all, and reconnects. One connection either way. Other clients
(memory://, cluster, Sentinel, TLS) read on the listener's loop (asyncio)
and a blocking wait sleeps on a ``threading.Event`` its callback sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Generator, NamedTuple

import redis
import redis.asyncio
from redis.exceptions import ResponseError

from .connection import CONNECTION_ERRORS, tcp_keepalive_applies
from .keys import Keys
from .models import TERMINAL_STATUSES, TaskStatus
from .pubsub import messages, stop_listener
from .scripts import busy_error
from .sharding import channel_patterns

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency
    _hiredis = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RECHECK_S = 5.0
RECENT_DONE = 1024  # done messages the reader keeps for waits that begin after them
SERVE_READ_S = 1.0  # longest socket read of the socket's own thread (it re-checks its work)
DRAIN_S = 0.5  # how often the socket's own thread drains it while nobody waits
# What a wait reads with the status (empty until the task ends), in this
# order after it: the read that sees the task finished is the last one, and
# a done:<id> message that carries them spares even that read.
OUTCOME_FIELDS = ("result", "attempts", "error", "error_exc")

Outcome = list[Any]  # [status, *OUTCOME_FIELDS] as HMGET returns them
Wake = Callable[["Outcome | None"], None]


_TERMINAL_BY_TEXT = {s.value.encode(): s for s in TERMINAL_STATUSES}


def parse_done(data: Any) -> Outcome | None:
    """The outcome a ``done:<id>`` message carries:
    ``"<status>|<attempts>|<#result>|<#error>|<#error_exc>|"`` then those
    values (an empty one is absent). None when it carries the status alone
    (an outcome over the script's size cap) or is malformed: read the record."""
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, bytes):
        return None
    parts = data.split(b"|", 5)
    if len(parts) != 6:
        return None
    status_text, attempts, n_result_text, n_error_text, n_exc_text, body = parts
    status = _TERMINAL_BY_TEXT.get(status_text)
    if status is None:
        return None
    try:
        n_result, n_error, n_exc = int(n_result_text), int(n_error_text), int(n_exc_text)
    except ValueError:
        return None
    if n_result + n_error + n_exc != len(body):
        return None
    error_at = n_result + n_error
    return [status, body[:n_result] or None, attempts or None,
            body[n_result:error_at] or None, body[error_at:] or None]


class Mark(NamedTuple):
    """Where the reader was when a fresh task was sent: its epoch (bumped
    at every loss and resubscription) and how many messages it had seen."""

    epoch: int
    seen: int


def _wait_s(task_id: str, timeout: float | None, deadline: float | None, now: float) -> float:
    """How long a wait that read a non-terminal status sleeps before the next
    read (the re-read covers a lost message); TimeoutError once past ``deadline``."""
    if deadline is None:
        return RECHECK_S
    wait_s = min(RECHECK_S, deadline - now)
    if wait_s <= 0:
        raise TimeoutError(f"task {task_id} did not finish within {timeout} s")
    return wait_s


class DoneWaiter:
    """The done-channel reader of one namespace and the waits parked on it.
    The reader runs on ``loop``; waits come from any thread or loop."""

    def __init__(self, client: Any, keys: Keys, loop: asyncio.AbstractEventLoop,
                 url: str | None = None):
        self._client = client
        self._loop = loop
        self._namespace = keys.namespace
        # done:<id> of every shard (sharding.channel_patterns)
        self._patterns = channel_patterns(keys.namespace, "done:*")
        # task id -> wake-up callbacks, registered from any thread (the map is
        # guarded; the reader pops it).
        self._waiters: dict[str, list[Wake]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # Set once the reader has subscribed or failed to: a wait for the
        # first subscription ends there (a failure means Redis is down, and
        # the wait's own read says so at once).
        self._first_attempt = threading.Event()
        self._epoch = 0  # bumped when the subscription is lost or made again
        self._seen = 0  # done messages read so far
        self._recent: OrderedDict[str, Outcome | None] = OrderedDict()
        self._fresh: OrderedDict[str, Mark] = OrderedDict()
        self._on_first_attempt: list[Callable[[], None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False
        # A plain Redis: the raw socket read under the reading role (module docstring).
        self._socket = _SocketReader.for_client(self, client, url)

    # ---- the reader (on its loop) ------------------------------------------------
    def start(self) -> None:
        """Starts the reader if it is not running (from any thread)."""
        if self._socket is not None:
            if not self._closed:
                self._socket.start()
            return
        if self._reader is not None and not self._reader.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._start()
        else:
            _call_in(self._loop, self._start)

    def _start(self) -> None:
        if self._closed or (self._reader is not None and not self._reader.done()):
            return
        self._stop = asyncio.Event()
        self._reader = self._loop.create_task(self._read_forever(), name="taskmesh-done-waiter")

    async def _read_forever(self) -> None:
        stream = messages(self._client, patterns=self._patterns, label="result listener",
                          on_subscribed=self._mark_subscribed,
                          on_reconnect=self._wake_all,  # waiters re-read the stored state
                          stop=self._stop)
        async for channel, data in stream:
            self._wake(channel.split("}:done:", 1)[1], parse_done(data), keep=True)

    def _mark_subscribed(self) -> None:
        """Subscribed, first or again. A wait parked while there was no
        subscription (begun during a failed first attempt, or woken by the
        loss) read before it stood: one more read each closes that gap
        (subscribe, then read), instead of leaving it to the RECHECK_S re-read."""
        self._reread_all(subscribed=True)

    def _after_first_attempt(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._first_attempt.is_set():
                self._on_first_attempt.append(callback)
                return
        callback()

    def _wake(self, task_id: str, outcome: Outcome | None, keep: bool = False) -> None:
        """Wakes the waits on ``task_id``; ``keep`` (a message read) also
        remembers it for a wait on a fresh task that begins later."""
        with self._lock:
            wakes = self._waiters.pop(task_id, [])
            if keep:
                self._seen += 1
                self._recent[task_id] = outcome
                if len(self._recent) > RECENT_DONE:
                    self._recent.popitem(last=False)
        for wake in wakes:
            wake(outcome)

    def _wake_all(self) -> None:
        """The subscription was lost, or could not be made: every wait re-reads."""
        self._reread_all(subscribed=False)

    def _reread_all(self, subscribed: bool) -> None:
        with self._lock:
            self._epoch += 1  # messages may have been missed
            if subscribed:
                self._subscribed.set()
            waiting = list(self._waiters)
            self._first_attempt.set()  # the first attempt, at least, has ended
            callbacks, self._on_first_attempt = self._on_first_attempt, []
        for callback in callbacks:
            callback()
        for task_id in waiting:
            self._wake(task_id, None)

    def _watch(self, task_id: str, wake: Wake, first: bool = False) -> tuple[bool, Outcome | None]:
        """Registers ``wake``. For the ``first`` look of a wait on a fresh
        task (used up by it) also whether it may skip its read, and the
        outcome if its message came already; (False, None): read. Only a
        fresh task's id (new, made here) is looked up among the messages
        kept: an id chosen by a caller may name an earlier task's message."""
        with self._lock:
            self._waiters.setdefault(task_id, []).append(wake)
            mark = self._fresh.pop(task_id, None) if first else None
            if mark is None:
                return False, None
            if task_id in self._recent:
                outcome = self._recent.pop(task_id)
                return outcome is not None, outcome
            fresh = (mark.epoch == self._epoch and self._seen - mark.seen < RECENT_DONE
                     and self._subscribed.is_set())
            return fresh, None

    # ---- fresh tasks (the registering thread) ----------------------------------------
    def mark(self) -> Mark | None:
        """Taken before a registration is sent: None unless subscribed now."""
        with self._lock:
            return Mark(self._epoch, self._seen) if self.subscribed() else None

    def expect(self, task_id: str, mark: Mark) -> None:
        """``task_id`` was created after ``mark``: a wait on it may skip its
        first read while nothing was lost since (see the module docstring)."""
        with self._lock:
            self._fresh[task_id] = mark
            if len(self._fresh) > RECENT_DONE:
                self._fresh.popitem(last=False)

    def _unwatch(self, task_id: str, wake: Wake) -> None:
        with self._lock:
            wakes = self._waiters.get(task_id)
            if wakes and wake in wakes:
                wakes.remove(wake)
                if not wakes:
                    del self._waiters[task_id]

    def subscribed(self) -> bool:
        """The reader runs and has subscribed (read from any thread)."""
        if self._socket is not None:
            return self._subscribed.is_set() and self._socket.running()
        return (self._subscribed.is_set() and self._reader is not None
                and not self._reader.done())

    @staticmethod
    def first_wait_s(timeout: float | None) -> float:
        """How long a wait lets the reader subscribe before reading anyway."""
        return RECHECK_S if timeout is None else min(RECHECK_S, timeout)

    async def ensure_reader(self, timeout: float | None) -> None:
        """Starts the reader; waits (on the caller's loop) until it has
        subscribed or failed to, at most :meth:`first_wait_s`. Past that
        (Redis down or slow) the status read goes ahead anyway: it raises the
        connection error, or finds the state, and the re-read every RECHECK_S
        covers a completion the late subscription missed."""
        self.start()
        if self._first_attempt.is_set():
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def set_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        self._after_first_attempt(lambda: _call_in(loop, set_ready))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ready, self.first_wait_s(timeout))

    def ensure_reader_blocking(self, timeout: float | None) -> None:
        """:meth:`ensure_reader` for a thread outside any loop."""
        self.start()
        self._first_attempt.wait(self.first_wait_s(timeout))

    # ---- waits (any thread or loop) --------------------------------------------------
    async def wait(
        self,
        task_id: str,
        read: Callable[[], Awaitable[Outcome]],
        timeout: float | None,
    ) -> Outcome:
        """The outcome of a terminal task (from its done message, or read);
        raises TimeoutError after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        await self.ensure_reader(timeout)
        reader = self._socket
        plan = self._plan(task_id, timeout, deadline, loop.time, lambda: _LoopWake(loop, reader))
        reply: Any = None
        try:
            while True:
                step = plan.send(reply)
                reply = (await step.parked(step.wait_s) if isinstance(step, _LoopWake)
                         else await read())
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            plan.close()  # a raising read or a cancel: the finally in _plan unwatches

    def wait_blocking(
        self,
        task_id: str,
        read: Callable[[], Outcome],
        timeout: float | None,
        deadline: float | None,
    ) -> Outcome:
        """:meth:`wait` for a thread outside any loop; the caller has
        started the reader (:meth:`ensure_reader_blocking`) and gives the
        ``time.monotonic()`` deadline. ``read`` runs in this thread, and so
        does the socket read that wakes it when the reading role is free."""
        reader = self._socket
        parker: Callable[[], _Parked] = (
            _ThreadWake if reader is None else lambda: _SocketWake(reader))
        plan = self._plan(task_id, timeout, deadline, time.monotonic, parker)
        reply: Any = None
        try:
            while True:
                step = plan.send(reply)
                reply = step.parked(step.wait_s) if isinstance(step, _Blocking) else read()
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            plan.close()

    def _plan(self, task_id: str, timeout: float | None, deadline: float | None,
              clock: Callable[[], float], parker: Callable[[], "_Parked"],
              ) -> Generator["_Step", Any, Outcome]:
        """The one rule of a wait, for both drivers above: yields _READ (send
        back the outcome read) or a parked step (send back the outcome its
        done message pushed, or None after ``wait_s``); returns the outcome.
        Only a first look may skip the read (a fresh task, see _watch); a
        non-terminal read parks until a message or the next re-read."""
        first = True
        while True:
            parked = parker()
            skip, known = self._watch(task_id, parked.wake, first)
            try:
                if known is not None:
                    return known
                if not skip:
                    outcome = yield _READ
                    if outcome[0].is_terminal:
                        return outcome  # type: ignore[no-any-return]
                first = False
                try:
                    parked.wait_s = _wait_s(task_id, timeout, deadline, clock())
                except TimeoutError:
                    if skip:  # out of time unread: one look before giving up
                        outcome = yield _READ
                        if outcome[0].is_terminal:
                            return outcome  # type: ignore[no-any-return]
                    raise
                pushed = yield parked
                if pushed is not None:
                    return pushed  # type: ignore[no-any-return]
            finally:
                self._unwatch(task_id, parked.wake)

    def waiting(self) -> int:
        """How many tasks are waited for right now (subscribed, parked on a
        completion): what a caller checks instead of sleeping."""
        return len(self._waiters)

    async def close(self) -> None:
        """Stops the reader (on its loop): waits still parked re-read the
        record every RECHECK_S and end with their deadlines."""
        self._closed = True
        if self._socket is not None:
            await self._socket.close()
            return
        await stop_listener(self._reader, self._stop)


class _Read:
    """The step of a wait that reads the record (waiters' _plan)."""


_READ = _Read()


class _Parked:
    """The step of a wait parked on a done message: ``wake`` is what the
    reader calls (from its thread), ``parked(s)`` how the driver waits for it."""

    wait_s = 0.0

    def wake(self, outcome: "Outcome | None") -> None:
        raise NotImplementedError


class _LoopWake(_Parked):
    def __init__(self, loop: asyncio.AbstractEventLoop, reader: "_SocketReader | None" = None):
        self._loop = loop
        self._reader = reader
        self._fut: asyncio.Future[Outcome | None] = loop.create_future()

    def _settle(self, outcome: Outcome | None) -> None:
        if not self._fut.done():
            self._fut.set_result(outcome)

    def wake(self, outcome: Outcome | None) -> None:
        _call_in(self._loop, self._settle, outcome)

    async def parked(self, wait_s: float) -> Outcome | None:
        reader = self._reader
        if reader is not None:
            reader.passive(1)  # the socket's own thread reads for it
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                return await asyncio.wait_for(self._fut, wait_s)
            return None
        finally:
            if reader is not None:
                reader.passive(-1)


class _Blocking(_Parked):
    """A parked step a thread waits on (``wait_blocking``)."""

    def parked(self, wait_s: float) -> Outcome | None:
        raise NotImplementedError


class _ThreadWake(_Blocking):
    def __init__(self) -> None:
        self._event = threading.Event()
        self._pushed: Outcome | None = None

    def wake(self, outcome: Outcome | None) -> None:
        self._pushed = outcome
        self._event.set()

    def parked(self, wait_s: float) -> Outcome | None:
        return self._pushed if self._event.wait(wait_s) else None


class _SocketWake(_Blocking):
    """A blocking wait on a :class:`_SocketReader`: it reads the socket
    itself while it holds the reading role; else it parks on an event, as a
    :class:`_ThreadWake` does, counted as passive (the thread that reads
    wakes it). The event is made only then: ``wake`` sets ``woken`` before
    it looks for one, ``parked`` makes it before it looks at ``woken``, so
    one of the two sees the other (under the GIL)."""

    def __init__(self, reader: "_SocketReader"):
        self._reader = reader
        self._pushed: Outcome | None = None
        self.woken = False
        self._event: threading.Event | None = None

    def wake(self, outcome: Outcome | None) -> None:
        self._pushed = outcome
        self.woken = True
        event = self._event
        if event is not None:
            event.set()

    def parked(self, wait_s: float) -> Outcome | None:
        reader = self._reader
        deadline = time.monotonic() + wait_s
        if not reader.serve(self, deadline):
            event = self._event = threading.Event()
            if not self.woken:
                reader.passive(1)
                try:
                    event.wait(max(0.0, deadline - time.monotonic()))
                finally:
                    reader.passive(-1)
        return self._pushed if self.woken else None


class _SocketReader:
    """The done subscription of a plain Redis on one raw socket with a
    hiredis reader, read by whoever holds :attr:`role` (a blocking wait for
    its own message, or the socket's own thread; module docstring). The
    socket's thread also connects, subscribes and reconnects; a reader that
    finds the connection lost drops it, wakes every wait (they re-read the
    stored state) and leaves the reconnection to that thread."""

    @classmethod
    def for_client(cls, waiter: DoneWaiter, client: Any, url: str | None) -> "_SocketReader | None":
        """One for a plain asyncio client on its own pool (the listener's)
        of a ``redis://`` or unix-socket URL, RESP2 bytes; else None."""
        if (url is None or _hiredis is None or type(client) is not redis.asyncio.Redis
                or type(getattr(client, "connection_pool", None)) is not redis.asyncio.ConnectionPool):
            return None
        keepalive = {"socket_keepalive": True} if tcp_keepalive_applies(url) else {}
        pool = redis.ConnectionPool.from_url(url, **keepalive,
                                             retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        kwargs = pool.connection_kwargs
        if (pool.connection_class not in (redis.Connection, redis.UnixDomainSocketConnection)
                or kwargs.get("decode_responses") or kwargs.get("protocol") not in (None, 2, "2")):
            return None
        if not hasattr(pool.connection_class(**kwargs), "_sock"):
            return None  # a redis-py whose connection keeps its socket elsewhere (_connect)
        if kwargs.get("socket_connect_timeout") is None:
            kwargs["socket_connect_timeout"] = RECHECK_S
        return cls(waiter, pool)

    def __init__(self, waiter: DoneWaiter, pool: Any):
        self._waiter = waiter
        self._pool = pool
        self.role = threading.Lock()  # who reads the socket
        self._needed = threading.Event()  # work for the socket's own thread
        self._stop = threading.Event()
        self._count_lock = threading.Lock()
        self._passive = 0  # parked waits that do not read (async ones, or the role was taken)
        self._conn: Any = None
        self._sock: socket.socket | None = None
        self._parser: Any = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    def start(self) -> None:
        with self._start_lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            if self._pid != os.getpid():  # a forked child: the parent's socket is not its own
                self._pid = os.getpid()
                self.role = threading.Lock()
                self._conn = self._sock = self._parser = None
                self._passive = 0
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"taskmesh-done-{self._waiter._namespace}")
            self._thread.start()

    def running(self) -> bool:
        thread = self._thread
        return not self._closed and thread is not None and thread.is_alive()

    def passive(self, delta: int) -> None:
        """A wait parks (+1) or ends (-1) without reading: while any does,
        the socket's own thread reads whenever the role is free."""
        with self._count_lock:
            self._passive += delta
        if delta > 0:
            self._needed.set()

    def serve(self, wake: _SocketWake, deadline: float) -> bool:
        """Reads the socket in this thread until ``wake`` is woken (by the
        message it waits for, or a loss) or ``deadline`` (monotonic) passes.
        False, having read nothing, if the role is taken or there is no
        connection: the caller parks instead."""
        if self._sock is None or self._pid != os.getpid() or not self.role.acquire(blocking=False):
            return False
        try:
            if self._sock is None:
                return False
            while not wake.woken:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._read(remaining) < 0:
                    break
            return True
        finally:
            self.role.release()

    def _read(self, timeout: float) -> int:
        """Reads what arrives within ``timeout`` s (0: what is there) and
        hands it out (under the role): the bytes read, -1 once the
        connection is lost."""
        sock, parser = self._sock, self._parser
        if sock is None:
            return -1
        reply = parser.gets()
        n = 0
        if reply is False:
            try:
                sock.settimeout(timeout if timeout > 0 else 0.0)
                data = sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return 0
            except OSError as exc:
                self._lose(exc)
                return -1
            if not data:
                self._lose(ConnectionResetError("Connection closed by server."))
                return -1
            n = len(data)
            parser.feed(data)
            try:
                reply = parser.gets()
            except _hiredis.ProtocolError as exc:
                self._lose(exc)
                return -1
        while reply is not False:
            self._deliver(reply)
            reply = parser.gets()
        return n

    def _deliver(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
            _, found, task_id = reply[2].partition(b"}:done:")
            if found:
                self._waiter._wake(task_id.decode(), parse_done(reply[3]), keep=True)

    def _lose(self, exc: BaseException) -> None:
        conn, self._conn, self._sock, self._parser = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()
        if not self._closed:
            log.warning("result listener lost Redis (%s); reconnecting", exc)
        self._waiter._wake_all()  # messages may have been missed: waits re-read
        self._needed.set()  # the socket's own thread reconnects

    def _connect(self) -> None:
        """Connects (AUTH, SELECT as the pool's connections do) and
        subscribes; raises as a connection would."""
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            conn.connect()
            sock: socket.socket = conn._sock
            parser = _hiredis.Reader()
            patterns = self._waiter._patterns
            sock.settimeout(RECHECK_S)
            sock.sendall(_hiredis.pack_command(("PSUBSCRIBE", *patterns)))  # type: ignore[arg-type]
            confirmed = 0
            early: list[Any] = []
            while confirmed < len(patterns):
                reply = parser.gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise redis.exceptions.ConnectionError("Connection closed by server.")
                    parser.feed(data)
                elif isinstance(reply, _hiredis.ReplyError):
                    raise ResponseError(str(reply))
                elif isinstance(reply, list) and reply[0] == b"psubscribe":
                    confirmed += 1
                else:
                    early.append(reply)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.disconnect()
            raise
        self._conn, self._sock, self._parser = conn, sock, parser
        self._waiter._mark_subscribed()
        for reply in early:
            self._deliver(reply)

    def _run(self) -> None:
        delay = 0.1
        try:
            while not self._closed:
                if self._sock is None:
                    failure: BaseException | None = None
                    with self.role:
                        if self._sock is None and not self._closed:
                            try:
                                self._connect()
                                delay = 0.1
                            except (*CONNECTION_ERRORS, OSError, ResponseError) as exc:
                                # BUSY (another client's script) is transient; any
                                # other error reply ends the reader.
                                if isinstance(exc, ResponseError) and busy_error(exc) is None:
                                    raise
                                failure = exc
                    if failure is not None:
                        if self._closed:
                            return
                        log.warning("result listener lost Redis (%s); reconnecting in %.1fs",
                                    failure, delay)
                        self._waiter._wake_all()
                        self._stop.wait(delay)
                        delay = min(delay * 2, 5.0)
                    continue
                self._needed.clear()
                if self._passive > 0:  # waits parked that do not read: read for them
                    with self.role:
                        while (self._passive > 0 and not self._closed
                               and self._read(SERVE_READ_S) >= 0):
                            pass
                    continue
                if self._needed.wait(DRAIN_S) or self._closed:
                    continue
                if self.role.acquire(blocking=False):  # nobody waits: drain what came
                    try:
                        while self._read(0.0) > 0:
                            pass
                    finally:
                        self.role.release()
        except Exception:
            log.exception("result listener failed; waits re-read every %.0f s", RECHECK_S)
        finally:
            held = self.role.acquire(timeout=RECHECK_S)  # a reader still in its read ends first
            conn, self._conn, self._sock, self._parser = self._conn, None, None, None
            if held:
                self.role.release()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.disconnect()

    async def close(self) -> None:
        """Stops the socket's thread (within one read: the socket is shut
        down under any reader); waits still parked re-read every RECHECK_S."""
        self._closed = True
        self._stop.set()
        self._needed.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        for _ in range(250):
            if not thread.is_alive():
                return
            await asyncio.sleep(0.01)


_Step = _Read | _Parked


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Runs ``callback`` on ``loop`` (from any thread); a loop already closed
    has nobody left waiting on it."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
