"""One adapter per task system: how to enqueue, how to start a worker, how
to count finished tasks, how to do one round trip.

An adapter runs inside :mod:`benchmarks.driver`, in an interpreter where its
library is importable (the current one, or one given with ``--peer-python``),
so this module imports no task library at the top.

Task kinds (functions in :mod:`benchmarks.tasks`):

* ``noop``   ``def noop(): pass``
* ``anoop``  ``async def anoop(): pass``
* ``pickle`` a closure sent by value with cloudpickle (taskmesh only)
* ``asleep`` ``async def asleep(s): await asyncio.sleep(s)``
* ``noop-thread_pool``, ``noop-process``: ``noop`` with that ``executor_type``
  (taskmesh only; the process worker runs ``--processes 2``)
"""

from __future__ import annotations

import sys
import time
from typing import Any

KINDS = ("noop", "anoop", "pickle", "asleep", "noop-thread_pool", "noop-process")


class System:
    name = "?"
    module = "?"  # import check / version lookup
    kinds: tuple[str, ...] = ()
    native = "noop"  # the kind used where one kind stands for the system
    batch_api = ""  # what "enqueue batch" means for this system
    notes: tuple[str, ...] = ()

    def __init__(self, url: str, namespace: str):
        self.url = url
        self.namespace = namespace

    # -- to implement ------------------------------------------------------
    def flush(self) -> None:
        raise NotImplementedError

    def enqueue_loop(self, kind: str, n: int, args: tuple = ()) -> float:
        """Enqueues ``n`` tasks one call at a time; returns the seconds taken."""
        raise NotImplementedError

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        """Enqueues ``n`` tasks with the system's bulk API; returns seconds."""
        raise NotImplementedError

    def prefill(self, kind: str, n: int, args: tuple = ()) -> float:
        """Queues ``n`` tasks before a drain (not itself a measured figure);
        the bulk API unless the system has none."""
        return self.enqueue_batch(kind, n, args)

    def done_count(self) -> int:
        """Tasks finished (completed or failed) since the last flush."""
        raise NotImplementedError

    def queued_count(self) -> int:
        raise NotImplementedError

    def failed_count(self) -> int | None:
        """Tasks that failed since the last flush (None: not tracked)."""
        return None

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        raise NotImplementedError

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        """``n`` sequential enqueue -> result-seen-by-producer times, seconds."""
        raise NotImplementedError

    # -- optional: delayed tasks (has_delays) -------------------------------
    has_delays = False

    def register_delayed(self, kind: str, etas: list[float]) -> None:
        """One task per epoch time in ``etas``, each due then."""
        raise NotImplementedError

    def lateness(self) -> list[float]:
        """For every delayed task: start time minus due time, seconds."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- helpers -------------------------------------------------------------
    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        try:
            return version(cls.module)
        except Exception:
            return "?"

    @classmethod
    def supports(cls, kind: str) -> bool:
        return kind in cls.kinds


def chunks(n: int, size: int) -> list[int]:
    """Cuts ``n`` tasks into slices of ``size`` (the last one smaller)."""
    return [min(size, n - start) for start in range(0, n, size)]


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


# =============================================================================
class Taskmesh(System):
    name = "taskmesh"
    module = "taskmesh"
    kinds = ("noop", "anoop", "pickle", "asleep", "noop-thread_pool", "noop-process")
    native = "anoop"
    batch_api = "register_many"

    FUNCS = {
        "noop": "benchmarks.tasks:noop",
        "noop-thread_pool": "benchmarks.tasks:noop",
        "noop-process": "benchmarks.tasks:noop",
        "anoop": "benchmarks.tasks:anoop",
        "asleep": "benchmarks.tasks:asleep",
    }

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        from taskmesh import TaskManager

        self.tm = TaskManager(url, namespace=namespace)
        self.redis = _redis_client(url)

    @staticmethod
    def _closure() -> Any:
        # A closure is not reachable by name, so cloudpickle sends it by value.
        marker = None

        def pickled_noop(*args: Any, **kwargs: Any) -> Any:
            return marker

        return pickled_noop

    def func(self, kind: str) -> Any:
        return self._closure() if kind == "pickle" else self.FUNCS[kind]

    @staticmethod
    def options(kind: str) -> dict[str, Any]:
        """``noop-<executor>`` kinds run the plain noop through that executor."""
        _, sep, executor = kind.partition("-")
        return {"executor_type": executor} if sep else {}

    def flush(self) -> None:
        self.redis.flushdb()

    def enqueue_loop(self, kind: str, n: int, args: tuple = ()) -> float:
        func, register, opts = self.func(kind), self.tm.register_task, self.options(kind)
        t0 = time.perf_counter()
        for _ in range(n):
            register(func, *args, **opts)
        return time.perf_counter() - t0

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        func = self.func(kind)
        t0 = time.perf_counter()
        self.tm.register_many(func, [tuple(args)] * n, **self.options(kind))
        return time.perf_counter() - t0

    def prefill(self, kind: str, n: int, args: tuple = ()) -> float:
        # register_many builds every record before writing; in 20k slices a
        # 1M backlog does not need gigabytes in this process.
        func = self.func(kind)
        t0 = time.perf_counter()
        for count in chunks(n, 20_000):
            self.tm.register_many(func, [tuple(args)] * count, **self.options(kind))
        return time.perf_counter() - t0

    def done_count(self) -> int:
        completed, failed = self.redis.hmget(self.tm.keys.stats, "completed", "failed")
        return int(completed or 0) + int(failed or 0)

    def queued_count(self) -> int:
        return int(self.redis.zcard(self.tm.keys.queue("default")))

    def failed_count(self) -> int | None:
        return int(self.redis.hget(self.tm.keys.stats, "failed") or 0)

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "taskmesh", "worker", "--url", self.url,
                "--namespace", self.namespace, "--concurrency", str(concurrency)]
        if burst:
            argv.append("--burst")
        if kind == "noop-process":
            argv += ["--processes", "2"]
        return argv, {}

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        func, out, opts = self.func(kind), [], self.options(kind)
        for _ in range(n):
            t0 = time.perf_counter()
            task_id = self.tm.register_task(func, **opts)
            self.tm.wait_for_task_sync(task_id, timeout=timeout)
            out.append(time.perf_counter() - t0)
        return out

    has_delays = True

    def register_delayed(self, kind: str, etas: list[float]) -> None:
        # Tasks sharing an eta go in one register_many call (one pipeline).
        func = self.func(kind)
        self.delayed: list[str] = []
        i = 0
        while i < len(etas):
            j = i
            while j < len(etas) and etas[j] == etas[i]:
                j += 1
            self.delayed += self.tm.register_many(func, [()] * (j - i), eta=etas[i])
            i = j

    def lateness(self) -> list[float]:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in self.delayed:
            pipe.hmget(self.tm.keys.task(task_id), "started_at", "due_ms")
        return [float(started) - int(due) / 1000 for started, due in pipe.execute()]

    def close(self) -> None:
        self.tm.close()
        self.redis.close()


class TaskmeshBefore(Taskmesh):
    """Another checkout of taskmesh (``--baseline TREE``), run through the same
    adapter: its driver and its workers import that tree's ``taskmesh``
    (cli.py puts it first on their path), so a before/after sits in the same
    table, run by run, beside the peers."""

    name = "taskmesh-before"


from .peers import PEER_SYSTEMS  # noqa: E402  (they subclass System, defined above)

SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Taskmesh, TaskmeshBefore, *PEER_SYSTEMS)}
PEERS = [cls.name for cls in PEER_SYSTEMS]
