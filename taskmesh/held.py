"""A connection held by one sequential user (the worker's claim loop, its
reporter), written to directly.

A script call through redis-py's asyncio client takes a connection from the
pool and gives it back (a lock, connection-count bookkeeping, a readiness
check) around the command itself: on this machine about half of the
~110 us of worker CPU a claim or report round trip cost, paid twice per
batch of tasks. The claim loop and the reporter each send one call (or one
pipeline) at a time, so each keeps a connection of the pool for itself and
writes to it and reads from it directly (the pattern of ``scripts._direct``
for sync clients): the same packing, the same reply parsing, errors in
place.

Only a plain ``redis.asyncio.Redis`` on its own ``ConnectionPool`` goes
this way; anything else (memory://, cluster, Sentinel) and any connection
failure go through the client as before (``None`` from :meth:`HeldConnection.raw`),
which brings the client's own retries. A resend after a lost reply is safe
for what goes here: claims are replayed by claim id, reports and progress
are fenced by the claim token.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .scripts import Call, busy_error

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - hiredis is a dependency
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]
    NOT_ENOUGH_DATA = object()
try:
    from hiredis import PushNotification as _Push
except ImportError:  # pragma: no cover - hiredis < 3.2
    class _Push(list):  # type: ignore[no-redef,type-arg]
        pass


class HeldConnection:
    """A pool connection kept by its one user between calls (not thread-safe,
    not for concurrent coroutines: a second caller meanwhile gets ``None``)."""

    def __init__(self, client: Any):
        pool = getattr(client, "connection_pool", None)
        self._pool: Any = pool if (type(client) is redis.asyncio.Redis
                                   and type(pool) is redis.asyncio.ConnectionPool) else None
        self._conn: Any = None
        self._in_use = False

    @property
    def usable(self) -> bool:
        """This client's calls can go here (a plain client on its own pool)."""
        return self._pool is not None

    async def raw(self, calls: Sequence[Call[Any]], head: Sequence[Any] = (),
                  head_block_s: float = 0.0) -> list[Any] | None:
        """The calls' raw replies in order, an error reply in its place as
        the exception (OOM/BUSY as ServerBusyError), or None when the
        client's regular path must run them: no usable connection, or one
        that failed (then none of the replies was read, and the caller's
        resend is fenced or replayed as the module docstring says).

        ``head`` is a command sent ahead of the calls in the same write (the
        idle worker's BLPOP, blocking up to ``head_block_s``): Redis runs
        the calls once it returns; its own reply is read and dropped. A wait
        cancelled meanwhile drops the connection (its replies are unread)."""
        if self._pool is None or self._in_use or not calls:
            return None
        self._in_use = True
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = await self._pool.get_connection()
            return await self._exchange(conn, calls, head, head_block_s)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await self._drop()
            return None
        except BaseException:
            await self._drop()  # cancelled mid-exchange: its replies are unread
            raise
        finally:
            self._in_use = False

    async def _exchange(self, conn: Any, calls: Sequence[Call[Any]], head: Sequence[Any],
                        head_block_s: float) -> list[Any]:
        replies = await self._send(conn, calls, head, head_block_s)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # first use of a script, or Redis flushed its cache: load, resend those
            sources = list(dict.fromkeys(calls[i].script.source for i in missing))
            await conn.send_packed_command(
                [part for source in sources for part in conn.pack_command("SCRIPT", "LOAD", source)])
            refused: ResponseError | None = None
            for _ in sources:
                try:
                    await conn.read_response()
                except ResponseError as exc:  # e.g. OOM: those calls fail as a NOSCRIPT would
                    refused = exc
            if refused is not None:
                for i in missing:
                    replies[i] = busy_error(refused) or refused
                return replies
            for i, reply in zip(missing, await self._send(conn, [calls[i] for i in missing])):
                replies[i] = reply
        return replies

    @staticmethod
    async def _send(conn: Any, calls: Sequence[Call[Any]], head: Sequence[Any] = (),
                    head_block_s: float = 0.0) -> list[Any]:
        packed = [part for call in calls for part in conn.pack_command("EVALSHA", *call.evalsha_args)]
        if head:
            packed[:0] = conn.pack_command(*head)
        await _write(conn, packed)
        # A head (the idle BLPOP) blocks on the server for head_block_s first.
        head_timeout = head_block_s + conn.socket_timeout if conn.socket_timeout else None
        fast = _hiredis_parts(conn)
        if fast is not None:
            timeout = head_timeout if head else conn.socket_timeout
            raws = await _read_replies(conn, *fast, len(calls) + bool(head), timeout)
            # (the head's own reply, even an error one, is dropped: the calls still ran)
            return [(busy_error(raw) or raw) if isinstance(raw, ResponseError) else raw
                    for raw in raws[1 if head else 0:]]
        if head:
            try:
                await conn.read_response(timeout=head_timeout)
            except ResponseError:
                pass  # the calls behind it still ran: their replies follow
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # an error reply: the rest still follow
                replies.append(busy_error(exc) or exc)
        return replies

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)

    async def close(self) -> None:
        """Gives the connection back to the pool (the client closes it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


def _hiredis_parts(conn: Any) -> tuple[Any, Any] | None:
    """The connected hiredis reader and stream of ``conn``, or None: these
    are redis-py internals (its ``_AsyncHiredisParser``), so a redis-py
    that names them otherwise takes the regular ``read_response`` path
    instead of failing."""
    parser = getattr(conn, "_parser", None)
    if type(parser) is not _AsyncHiredisParser or not getattr(parser, "_connected", False):
        return None
    reader, stream = getattr(parser, "_reader", None), getattr(parser, "_stream", None)
    return None if reader is None or stream is None else (reader, stream)


async def _read_replies(conn: Any, reader: Any, stream: Any, count: int,
                        timeout: float | None) -> list[Any]:
    """``count`` replies read straight from the connection's hiredis reader
    and stream, an error reply in its place as its exception instance:
    what ``count`` calls of ``read_response`` give, without their
    per-reply layers (a timeout context each, the health-check and
    push-notification bookkeeping): one timeout for the whole exchange,
    and none when the replies are there already (a claim behind a BLPOP
    arrives with it). A failure leaves the connection half-read: the
    caller drops it (HeldConnection.raw)."""
    replies: list[Any] = []
    _take(reader, replies, count)
    if len(replies) < count:
        try:
            async with asyncio.timeout(timeout):
                while len(replies) < count:
                    data = await stream.read(65536)
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    reader.feed(data)
                    _take(reader, replies, count)
        except TimeoutError:
            raise RedisTimeoutError("Timeout reading from socket") from None
    interval = conn.health_check_interval
    if interval:  # as read_response does: the connection proved alive
        conn.next_health_check = asyncio.get_running_loop().time() + interval
    return replies


def _take(reader: Any, replies: list[Any], count: int) -> None:
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            return
        if isinstance(reply, RedisConnectionError):
            raise reply
        if not isinstance(reply, _Push):  # (a push notification is no reply: skipped)
            replies.append(reply)


async def _write(conn: Any, packed: list[bytes]) -> None:
    """Writes ``packed`` as ``send_packed_command`` does, without its
    per-write ``asyncio.wait_for`` (a Task, a timer and a loop iteration:
    ~15 us of an idle worker's round trip) when the socket takes it all at
    once, as a claim or a lone report always does. A connection due for
    its health check goes the regular way (PING first); a write the socket
    did not take whole drains under the write timeout.

    A transport already closing (Redis dropped the connection, e.g. over a
    refused argument) is a connection error here, before any write: uvloop
    raises RuntimeError for a write to a closed transport (MagicStack/uvloop#506)
    where asyncio logs and drops it, and either way the caller must resend
    on a fresh connection."""
    writer = getattr(conn, "_writer", None)
    if writer is None:
        await conn.send_packed_command(packed)  # not connected yet: it connects
        return
    interval = conn.health_check_interval
    try:
        if writer.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        if interval and asyncio.get_running_loop().time() > conn.next_health_check:
            await conn.send_packed_command(packed)
            return
        writer.writelines(packed)
        if writer.transport.get_write_buffer_size():
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)
    except asyncio.TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except (OSError, RuntimeError) as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc!r}") from exc
