"""The namespace's live events, buffered for the demo's main thread."""

from __future__ import annotations

import collections
import logging
import queue
from typing import Any

log = logging.getLogger(__package__)  # "taskmesh.demo", as before the package split

class EventFeed:
    """The namespace's live events (``tm.subscribe``), buffered for the main
    thread. ``active`` is False if subscribing failed; the board then logs
    the transitions it sees by polling instead."""

    def __init__(self, tm: Any):
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.counts: collections.Counter[str] = collections.Counter()
        self.subscription: Any = None
        try:
            self.subscription = tm.subscribe(None, self.events.put)
        except Exception as exc:  # the UI degrades to polling; the demo goes on
            log.warning("demo: cannot subscribe to events (%s); showing polled transitions", exc)

    @property
    def active(self) -> bool:
        return self.subscription is not None

    def drain(self) -> list[Any]:
        out: list[Any] = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return out
            self.counts[str(event.type)] += 1
            out.append(event)

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None


EVENT_STYLE = {
    "TASK_CREATED": "bright_black", "TASK_QUEUED": "cyan", "TASK_STARTED": "blue",
    "TASK_PROGRESS": "dim", "TASK_RETRYING": "yellow", "TASK_COMPLETED": "green",
    "TASK_FAILED": "red", "TASK_CANCELLED": "magenta",
}
