"""Adapters for the peers: RQ, arq, huey, saq, taskiq, dramatiq, celery
and streaQ (see :mod:`benchmarks.systems` for the interface).

Each peer's app lives in :mod:`benchmarks.apps` and is configured from
``BENCH_PEER_URL`` / ``BENCH_CONCURRENCY``, which the adapter sets before
importing it, so the producer (this process) and the peer's own worker
command build the same app. Settings are chosen to help each peer (its
fastest documented worker mode, latency-friendly polling) and are listed in
each class's ``notes``, printed under the table.

A peer is a :class:`_SyncPeer` or an :class:`_AsyncPeer`: the base times the
enqueue loops and the round trips, so an adapter says only how to send one
task (``send``) and how to wait for one (``one_roundtrip``), and overrides
``enqueue_batch`` where the system has a bulk API.

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

from .systems import System, _redis_client, chunks

BATCH = 500  # for peers without a bulk API: gather this many enqueues at a time


def _app(module: str, url: str, concurrency: int = 10) -> Any:
    os.environ["BENCH_PEER_URL"] = url
    os.environ.setdefault("BENCH_CONCURRENCY", str(concurrency))
    return importlib.import_module(f"benchmarks.apps.{module}")


def _env(url: str, concurrency: int) -> dict[str, str]:
    return {"BENCH_PEER_URL": url, "BENCH_CONCURRENCY": str(concurrency)}


class _Counted(System):
    """Shared bookkeeping: a flushed database and an enqueue counter (every
    timed enqueue and every round trip adds to it)."""

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

    def close(self) -> None:
        self.redis.close()


class _SyncPeer(_Counted):
    def send(self, kind: str, args: tuple) -> Any:
        raise NotImplementedError

    def one_roundtrip(self, kind: str, timeout: float) -> None:
        """Enqueues one task and returns once the producer sees it done."""
        raise NotImplementedError

    def enqueue_loop(self, kind: str, n: int, args: tuple = ()) -> float:
        return self._timed(n, lambda: [self.send(kind, args) for _ in range(n)])

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        return self.enqueue_loop(kind, n, args)  # unless the system has a bulk API

    def roundtrips(self, kind: str, n: int, timeout: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.one_roundtrip(kind, timeout)
            out.append(time.perf_counter() - t0)
        self.enqueued += n
        return out


class _AsyncPeer(_Counted):
    """Runs the peer's coroutines on a loop of its own; the round trips are
    timed inside one coroutine so no loop start-up is counted in them."""

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        self.loop = asyncio.new_event_loop()

    def _run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def send(self, kind: str, args: tuple) -> Any:
        raise NotImplementedError

    async def one_roundtrip(self, kind: str, timeout: float) -> None:
        raise NotImplementedError

    def enqueue_loop(self, kind: str, n: int, args: tuple = ()) -> float:
        async def go() -> None:
            for _ in range(n):
                await self.send(kind, args)

        return self._timed(n, lambda: self._run(go()))

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        async def go() -> None:
            for count in chunks(n, BATCH):
                await asyncio.gather(*(self.send(kind, args) for _ in range(count)))

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

    def close(self) -> None:
        self.loop.close()
        super().close()


# =============================================================================
class RQ(_SyncPeer):
    name = "rq"
    module = "rq"
    kinds = ("noop",)
    native = "noop"
    batch_api = "enqueue_many (1 pipeline / 1000)"
    notes = (
        "rq: SimpleWorker (runs jobs in the worker process; the default Worker "
        "spawns a process per job); one job at a time per worker process",
        "rq: round trip waits with job.latest_result(timeout) (XREAD BLOCK); worker at "
        "--logging_level WARNING (taskmesh logs successes at DEBUG)",
    )
    FUNCS = {"noop": "benchmarks.tasks.noop"}

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        from rq import Queue

        self.queue = Queue("default", connection=self.redis)

    def send(self, kind: str, args: tuple) -> Any:
        return self.queue.enqueue(self.FUNCS[kind], *args)

    def enqueue_batch(self, kind: str, n: int, args: tuple = ()) -> float:
        from rq import Queue

        def go() -> None:
            for count in chunks(n, 1000):
                self.queue.enqueue_many([Queue.prepare_data(self.FUNCS[kind], args=args)
                                         for _ in range(count)])

        return self._timed(n, go)

    def one_roundtrip(self, kind: str, timeout: float) -> None:
        job = self.queue.enqueue(self.FUNCS[kind])
        if job.latest_result(timeout=int(max(timeout, 1))) is None:
            raise TimeoutError(f"rq job {job.id} gave no result within {timeout}s")

    def done_count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.queue.finished_job_registry.key)
        pipe.zcard(self.queue.failed_job_registry.key)
        return sum(pipe.execute())

    def queued_count(self) -> int:
        return int(self.redis.llen(self.queue.key))

    def failed_count(self) -> int | None:
        return int(self.redis.zcard(self.queue.failed_job_registry.key))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "rq.cli", "worker", "--url", self.url,
                "--worker-class", "rq.worker.SimpleWorker", "--logging_level", "WARNING",
                "default"]
        if burst:
            argv.insert(4, "--burst")
        return argv, {}


# =============================================================================
class Arq(_AsyncPeer):
    name = "arq"
    module = "arq"
    kinds = ("anoop", "asleep")
    native = "anoop"
    batch_api = f"asyncio.gather of enqueue_job, {BATCH} at a time (no bulk API)"
    notes = (
        "arq: tuned for latency: worker poll_delay=0.01 s (default 0.5 s), "
        "job.result(poll_delay=0.002) (default 0.5 s); logging at WARNING; arq runs only "
        "coroutine functions",
    )

    def __init__(self, url: str, namespace: str):
        super().__init__(url, namespace)
        from arq.connections import create_pool

        settings = _app("arq_app", url).WorkerSettings.redis_settings
        self.pool = self._run(create_pool(settings))

    async def send(self, kind: str, args: tuple) -> Any:
        return await self.pool.enqueue_job(kind, *args)

    async def one_roundtrip(self, kind: str, timeout: float) -> None:
        job = await self.pool.enqueue_job(kind)
        await job.result(timeout=timeout, poll_delay=0.002)

    def prefill(self, kind: str, n: int, args: tuple = ()) -> float:
        # arq has no bulk enqueue, and enqueue_job costs a WATCH/MULTI round
        # trip each: write what it writes (arq's own serialize_job, PSETEX +
        # ZADD) through a pipeline so large backlogs fill in seconds.
        import uuid

        from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix
        from arq.jobs import serialize_job

        def go() -> None:
            for count in chunks(n, 1000):
                pipe = self.redis.pipeline(transaction=False)
                now_ms = int(time.time() * 1000)
                for _ in range(count):
                    job_id = uuid.uuid4().hex
                    pipe.psetex(job_key_prefix + job_id, expires_extra_ms,
                                serialize_job(kind, tuple(args), {}, None, now_ms))
                    pipe.zadd(default_queue_name, {job_id: now_ms})
                pipe.execute()

        return self._timed(n, go)

    def done_count(self) -> int:
        # arq keeps a job in its queue zset until the job has finished.
        return self.enqueued - self.queued_count()

    def queued_count(self) -> int:
        return int(self.redis.zcard("arq:queue"))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> tuple[list[str], dict]:
        argv = [sys.executable, "-m", "arq", "benchmarks.apps.arq_app.WorkerSettings",
                "--custom-log-dict", "benchmarks.apps.arq_app.LOG_CONFIG"]
        if burst:
            argv.append("--burst")
        return argv, _env(self.url, concurrency)

    def close(self) -> None:
        self._run(self.pool.aclose())
        super().close()


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

    def one_roundtrip(self, kind: str, timeout: float) -> None:
        self.app.noop().get(blocking=True, timeout=timeout, backoff=1.0, max_delay=0.001)


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

    def one_roundtrip(self, kind: str, timeout: float) -> None:
        self.app.noop.send().get_result(block=True, timeout=int(timeout * 1000))


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

    def one_roundtrip(self, kind: str, timeout: float) -> None:
        self.app.noop.delay().get(timeout=timeout, interval=0.001)


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
            for count in chunks(n, 1000):
                await self.app.worker.enqueue_many([task.enqueue(*args) for _ in range(count)])

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


PEER_SYSTEMS: tuple[type[System], ...] = (RQ, Arq, Huey, Saq, Taskiq, Dramatiq, Celery,
                                          Streaq)
