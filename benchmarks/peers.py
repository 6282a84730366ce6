"""Adapters for the peers beyond RQ and arq: huey, saq, taskiq, dramatiq,
celery and streaQ (see :mod:`benchmarks.systems` for the interface).

Each peer's app lives in :mod:`benchmarks.apps` and is configured from
``BENCH_PEER_URL`` / ``BENCH_CONCURRENCY``, which the adapter sets before
importing it, so the producer (this process) and the peer's own worker
command build the same app. Settings are chosen to help each peer (its
fastest documented worker mode, latency-friendly polling) and are listed in
each class's ``notes``, printed under the table.

"Done" is counted the cheapest way each system allows, without adding work
to its tasks: a results index or result keys where the system keeps one,
else "enqueued minus still unacknowledged" (as for arq).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
from typing import Any, Awaitable, Callable

from .systems import System, _redis_client

BATCH = 500  # for peers without a bulk API: gather this many enqueues at a time


def _app(module: str, url: str, concurrency: int = 10) -> Any:
    os.environ["BENCH_PEER_URL"] = url
    os.environ.setdefault("BENCH_CONCURRENCY", str(concurrency))
    return importlib.import_module(f"benchmarks.apps.{module}")


def _env(url: str, concurrency: int) -> dict[str, str]:
    return {"BENCH_PEER_URL": url, "BENCH_CONCURRENCY": str(concurrency)}


class _Counted(System):
    """Shared bookkeeping: a flushed database and an enqueue counter."""

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.redis = _redis_client(url)
        self.enqueued = 0

    def flush(self) -> None:
        self.redis.flushdb()
        self.enqueued = 0

    def _timed(self, n: int, body: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        body()
        self.enqueued += n
        return time.perf_counter() - t0


class _SyncPeer(_Counted):
    def send(self, kind: str, args: tuple) -> Any:
        raise NotImplementedError

    def enqueue_loop(self, kind: str, n: int, args: tuple = ()) -> float:
        return self._timed(n, lambda: [self.send(kind, args) for _ in range(n)])

    enqueue_batch = enqueue_loop  # none of these has a bulk enqueue


class _AsyncPeer(_Counted):
    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.loop = asyncio.new_event_loop()

    def _run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def send(self, kind: str, args: tuple) -> Any:
        raise NotImplementedError

    def enqueue_loop(self, kind: str, n: int, args: tuple = ()) -> float:
        async def go() -> None:
            for _ in range(n):
                await self.send(kind, args)

        return self._timed(n, lambda: self._run(go()))

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        async def go() -> None:
            for start in range(0, n, BATCH):
                await asyncio.gather(*(self.send(kind, args)
                                       for _ in range(min(BATCH, n - start))))

        return self._timed(n, lambda: self._run(go()))

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        async def go() -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                await self.one_roundtrip(kind, timeout)
                out.append(time.perf_counter() - t0)
            return out

        samples = self._run(go())
        self.enqueued += n
        return samples

    async def one_roundtrip(self, kind: str, timeout: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.loop.close()
        self.redis.close()


# =============================================================================
class Huey(_SyncPeer):
    name = "huey"
    module = "huey"
    kinds = ("noop",)
    native = "noop"
    batch_api = "none (loop of calls)"
    notes = ("huey: RedisHuey (blocking BRPOP), consumer -k thread -w <concurrency>, "
             "store_none=True so finished tasks are counted from the result hash; round trip "
             "polls Result.get every 1 ms",)

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.app = _app("huey_app", url)

    def send(self, kind: str, args: tuple) -> Any:
        return self.app.noop(*args)

    def done_count(self) -> int:
        return int(self.redis.hlen(self.app.huey.storage.result_key))

    def queued_count(self) -> int:
        return int(self.redis.llen(self.app.huey.storage.queue_key))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.apps.huey_app.huey",
                "-k", "thread", "-w", str(concurrency), "-n", "-q"]
        return argv, _env(self.url, concurrency)

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.app.noop().get(blocking=True, timeout=timeout, backoff=1.0, max_delay=0.001)
            out.append(time.perf_counter() - t0)
        return out


# =============================================================================
class Saq(_AsyncPeer):
    name = "saq"
    module = "saq"
    kinds = ("anoop", "asleep")
    native = "anoop"
    batch_api = f"asyncio.gather of enqueue, {BATCH} at a time"
    notes = ("saq: worker concurrency = <concurrency>; round trip polls "
             "job.refresh() every 1 ms",)

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.queue = _app("saq_app", url).queue
        self._run(self.queue.connect())

    async def send(self, kind: str, args: tuple) -> Any:
        kwargs = {"seconds": args[0]} if kind == "asleep" and args else {}
        return await self.queue.enqueue(kind, **kwargs)

    async def one_roundtrip(self, kind: str, timeout: float) -> None:
        # Polled: refresh(until_complete=...) subscribes after enqueueing and
        # can miss a job that finishes first, then waits out the timeout.
        job = await self.queue.enqueue(kind)
        deadline = time.perf_counter() + timeout
        while not job.completed:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"saq job {job.key} not done within {timeout}s")
            await asyncio.sleep(0.001)
            await job.refresh()

    def done_count(self) -> int:
        # saq keeps a job in its `incomplete` zset until it has finished.
        return self.enqueued - int(self.redis.zcard("saq:default:incomplete"))

    def queued_count(self) -> int:
        return int(self.redis.llen("saq:default:queued"))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        return [sys.executable, "-m", "saq", "benchmarks.apps.saq_app.settings"], _env(
            self.url, concurrency)

    def close(self) -> None:
        self._run(self.queue.disconnect())
        super().close()


# =============================================================================
class Taskiq(_AsyncPeer):
    name = "taskiq"
    module = "taskiq"
    kinds = ("anoop", "asleep")
    native = "anoop"
    batch_api = f"asyncio.gather of kiq, {BATCH} at a time"
    notes = ("taskiq: taskiq-redis ListQueueBroker + RedisAsyncResultBackend, one worker "
             "process with --max-async-tasks <concurrency>; round trip polls "
             "wait_result every 1 ms",)
    QUEUE = "taskiq"

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.app = _app("taskiq_app", url)
        self._run(self.app.broker.startup())

    async def send(self, kind: str, args: tuple) -> Any:
        return await getattr(self.app, kind).kiq(*args)

    async def one_roundtrip(self, kind: str, timeout: float) -> None:
        task = await getattr(self.app, kind).kiq()
        await task.wait_result(check_interval=0.001, timeout=timeout)

    def done_count(self) -> int:
        # Results are keys named by task id; the only other key is the queue.
        pipe = self.redis.pipeline(transaction=False)
        pipe.dbsize()
        pipe.exists(self.QUEUE)
        size, queue = pipe.execute()
        return int(size) - int(queue)

    def queued_count(self) -> int:
        return int(self.redis.llen(self.QUEUE))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "taskiq", "worker", "benchmarks.apps.taskiq_app:broker",
                "--workers", "1", "--max-async-tasks", str(concurrency), "--log-level",
                "WARNING"]
        return argv, _env(self.url, concurrency)

    def close(self) -> None:
        self._run(self.app.broker.shutdown())
        super().close()


# =============================================================================
class Dramatiq(_SyncPeer):
    name = "dramatiq"
    module = "dramatiq"
    kinds = ("noop",)
    native = "noop"
    batch_api = "none (loop of send)"
    notes = ("dramatiq: RedisBroker, one worker process with --threads <concurrency>, "
             "Results middleware (RedisBackend) storing results; round trip with "
             "message.get_result(block=True)",)
    MSGS = "dramatiq:default.msgs"

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.app = _app("dramatiq_app", url)

    def send(self, kind: str, args: tuple) -> Any:
        return self.app.noop.send(*args)

    def done_count(self) -> int:
        # A message stays in the queue's .msgs hash until it is acknowledged.
        return self.enqueued - int(self.redis.hlen(self.MSGS))

    def queued_count(self) -> int:
        return int(self.redis.llen("dramatiq:default"))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "dramatiq", "benchmarks.apps.dramatiq_app",
                "--processes", "1", "--threads", str(concurrency), "--queues", "default"]
        return argv, _env(self.url, concurrency)

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.app.noop.send().get_result(block=True, timeout=int(timeout * 1000))
            out.append(time.perf_counter() - t0)
        self.enqueued += n
        return out


# =============================================================================
class Celery(_SyncPeer):
    name = "celery"
    module = "celery"
    kinds = ("noop",)
    native = "noop"
    batch_api = "none (loop of delay)"
    notes = ("celery: Redis broker and result backend, worker -P threads -c <concurrency> "
             "without gossip, mingle, heartbeat, events or remote control; round trip with "
             "AsyncResult.get(interval=0.001)",)
    # Every key in celery's database that is not a result (celery-task-meta-<id>).
    NOT_RESULTS = ("celery", "_kombu.binding.celery", "unacked", "unacked_index",
                   "unacked_mutex")

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.app = _app("celery_app", url)

    def send(self, kind: str, args: tuple) -> Any:
        return self.app.noop.delay(*args)

    def done_count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.dbsize()
        pipe.exists(*self.NOT_RESULTS)
        size, others = pipe.execute()
        return int(size) - int(others)

    def queued_count(self) -> int:
        return int(self.redis.llen("celery"))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "celery", "-A", "benchmarks.apps.celery_app", "worker",
                "-P", "threads", "-c", str(concurrency), "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-l", "WARNING"]
        return argv, _env(self.url, concurrency)

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.app.noop.delay().get(timeout=timeout, interval=0.001)
            out.append(time.perf_counter() - t0)
        return out


# =============================================================================
class Streaq(_AsyncPeer):
    name = "streaq"
    module = "streaq"
    kinds = ("anoop", "asleep")
    native = "anoop"
    batch_api = "Worker.enqueue_many (one pipeline)"
    notes = ("streaq: worker concurrency = <concurrency>, --burst; round trip with "
             "task.result(timeout)",)
    RESULTS = "streaq:default:index:results"

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.app = _app("streaq_app", url)
        self._run(self.app.worker.__aenter__())

    async def send(self, kind: str, args: tuple) -> Any:
        return await getattr(self.app, kind).enqueue(*args)

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        async def go() -> None:
            task = getattr(self.app, kind)
            for start in range(0, n, 1000):
                await self.app.worker.enqueue_many(
                    [task.enqueue(*args) for _ in range(min(1000, n - start))])

        return self._timed(n, lambda: self._run(go()))

    async def one_roundtrip(self, kind: str, timeout: float) -> None:
        task = await getattr(self.app, kind).enqueue()
        await task.result(timeout=int(max(timeout, 1)))

    def done_count(self) -> int:
        return int(self.redis.zcard(self.RESULTS))

    def queued_count(self) -> int:
        return self.enqueued - self.done_count()

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "streaq", "run", "benchmarks.apps.streaq_app:worker"]
        if burst:
            argv.append("--burst")
        return argv, _env(self.url, concurrency)

    def close(self) -> None:
        try:
            self._run(self.app.worker.__aexit__(None, None, None))
        finally:
            super().close()


PEER_SYSTEMS: tuple[type[System], ...] = (Huey, Saq, Taskiq, Dramatiq, Celery, Streaq)
