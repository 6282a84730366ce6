"""The worker's background threads (the lease keeper, the periodic ticker),
and the one rule for stopping them.

Each runs off the event loop on purpose (a task that blocks the loop must
not delay heartbeats or ticks) and loops until its ``stopped`` event is set.
Stopping waits, bounded, for the pass each may be in the middle of: the
worker closes the clients they use right after, and a lease renewal that
reached Redis after the worker's unregister would list the stopped worker
as alive again until its heartbeat lapsed.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

STOP_JOIN_S = 2.0  # how long a stop waits, in all, for the passes in progress


class BackgroundThread(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.stopped = threading.Event()  # set by stop_all; the thread's loop ends on it


def stop_all(threads: Iterable[BackgroundThread], timeout_s: float = STOP_JOIN_S) -> None:
    """Tells every thread to stop first, so that they wind down together,
    then waits for each; ``timeout_s`` bounds the whole wait (a pass stuck
    on a frozen Redis is left to its socket timeout: the threads are daemons)."""
    threads = list(threads)
    for thread in threads:
        thread.stopped.set()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
