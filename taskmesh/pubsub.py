"""One reconnecting pub/sub reader, shared by the result waiters, the event
stream and the workers' control channel."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Sequence

from .connection import CONNECTION_ERRORS

log = logging.getLogger(__name__)


async def messages(
    client: Any,
    *,
    channels: Sequence[str] = (),
    patterns: Sequence[str] = (),
    label: str,
    on_subscribed: Callable[[], None] | None = None,
    on_reconnect: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """Yields ``(channel, data)`` forever. After a dropped connection it backs
    off, resubscribes and calls ``on_reconnect`` (messages published while it
    was away are lost: callers that must not miss anything re-read state)."""
    delay = 0.1
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            if channels:
                await pubsub.subscribe(*channels)
            if patterns:
                await pubsub.psubscribe(*patterns)
            if on_subscribed is not None:
                on_subscribed()
            delay = 0.1
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg and msg.get("type") in ("message", "pmessage"):
                    channel = msg["channel"]
                    yield (channel.decode() if isinstance(channel, bytes) else channel,
                           msg["data"])
        except CONNECTION_ERRORS as exc:
            log.warning("%s lost Redis (%s); reconnecting in %.1fs", label, exc, delay)
            if on_reconnect is not None:
                on_reconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            try:
                await pubsub.aclose()
            except Exception:
                pass
