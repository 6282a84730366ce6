"""A private event loop on a daemon thread, so blocking twins of the async API
(``execute_task_sync`` and friends) run the one async implementation.

A loop of ours is closed only by :func:`finish_loop`, on its own thread:
every task still pending on it is cancelled and awaited first. A blocking
read left pending when its loop closes (XREAD BLOCK, BLPOP) would leave its
wake-up callback registered in a memory:// store (fakeredis), and every later
write to the store would call into the closed loop
(connection._tolerate_closed_loops stays as the guard for loops we do not own).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")

FINISH_TIMEOUT_S = 2.0  # how long closing a loop lets its cancelled tasks end


def finish_loop(loop: asyncio.AbstractEventLoop, timeout_s: float = FINISH_TIMEOUT_S) -> None:
    """Closes ``loop`` (stopped, on the calling thread) once the tasks still
    pending on it are cancelled and have ended, within ``timeout_s``; tasks
    that a cancellation starts (a client's clean-up) get the same chance."""
    try:
        deadline = loop.time() + timeout_s
        while (pending := [t for t in asyncio.all_tasks(loop) if not t.done()]):
            left_s = deadline - loop.time()
            if left_s <= 0:
                break
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.wait(pending, timeout=left_s))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """A loop thread's body: runs until stopped, then :func:`finish_loop`."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        finish_loop(loop)


class Portal:
    def __init__(self, name: str = "taskmesh-portal"):
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=run_loop, args=(loop,), name=self._name,
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._ensure()

    def check_outside(self) -> None:
        """A blocking call from the portal's own thread would wait on itself."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking taskmesh call made from inside its own portal loop")

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        try:
            self.check_outside()
        except RuntimeError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self) -> None:
        """Stops the loop and waits (up to 5 s) for its thread to cancel and
        end what was pending on it and close it (:func:`run_loop`)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join(timeout=5)
