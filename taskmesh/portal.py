"""A private event loop on a daemon thread, so blocking twins of the async API
(``execute_task_sync`` and friends) run the one async implementation."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


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
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
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
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()
