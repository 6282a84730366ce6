"""One reconnecting pub/sub reader, shared by the result waiters, the event
stream and the workers' control channel."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Sequence

import redis.exceptions

from .connection import CONNECTION_ERRORS, pubsub_for
from .scripts import busy_error

log = logging.getLogger(__name__)


def stopped(stop: asyncio.Event) -> bool:
    """A reader's loop condition: its stop event is set, or its task was
    cancelled and a client swallowed the CancelledError (fakeredis can, in a
    blocking read): the request to cancel is still pending on the task."""
    task = asyncio.current_task()
    return stop.is_set() or (task is not None and task.cancelling() > 0)


async def messages(
    client: Any,
    *,
    channels: Sequence[str] = (),
    patterns: Sequence[str] = (),
    label: str,
    on_subscribed: Callable[[], None] | None = None,
    on_reconnect: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """Yields ``(channel, data)`` until ``stop`` is set. After a dropped
    connection it backs off, resubscribes and calls ``on_reconnect``
    (messages published while it was away are lost: callers that must not
    miss anything re-read state).

    Stopping is by the event, checked between reads of at most 1 s, rather
    than by cancellation alone: some clients (fakeredis) can swallow a
    cancellation that lands inside a pub/sub read."""
    stop = stop or asyncio.Event()
    delay = 0.1
    attempt = 0
    while not stopped(stop):
        pubsub, node = pubsub_for(client, attempt)
        attempt += 1  # after a failure, a cluster listener tries another node
        try:
            if channels:
                await pubsub.subscribe(*channels)
            if patterns:
                await pubsub.psubscribe(*patterns)
            if on_subscribed is not None:
                on_subscribed()
            delay = 0.1
            while not stopped(stop):
                msg = await pubsub.get_message(timeout=1.0)
                if msg and msg.get("type") in ("message", "pmessage"):
                    channel = msg["channel"]
                    yield (channel.decode() if isinstance(channel, bytes) else channel,
                           msg["data"])
        except (*CONNECTION_ERRORS, redis.exceptions.ResponseError) as exc:
            # Redis BUSY with another client's script is transient like a
            # dropped connection; any other error reply is a real error.
            if isinstance(exc, redis.exceptions.ResponseError) and busy_error(exc) is None:
                raise
            if stop.is_set():
                return
            log.warning("%s lost Redis (%s); reconnecting in %.1fs", label, exc, delay)
            if on_reconnect is not None:
                on_reconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            try:
                await asyncio.wait_for(pubsub.aclose(), 2.0)
                if node is not None:
                    await asyncio.wait_for(node.aclose(), 2.0)
            except Exception:
                pass


async def stop_listener(task: asyncio.Task[Any] | None, stop: asyncio.Event,
                        timeout: float = 2.5) -> None:
    """Ends a task consuming :func:`messages`: cancels it, and sets its stop
    event so that it still ends (within one read) if the cancellation is
    swallowed by the client. Waits at most ``timeout`` s."""
    stop.set()
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task], timeout=timeout)
