"""streaQ: ``streaq run benchmarks.apps.streaq_app:worker --burst``."""

import os

from streaq import Worker

from benchmarks import tasks

worker = Worker(redis_url=os.environ["BENCH_PEER_URL"],
                concurrency=int(os.environ.get("BENCH_CONCURRENCY", "10")),
                queue_name="default", handle_signals=True)


@worker.task()
async def anoop():
    return await tasks.anoop()


@worker.task()
async def asleep(seconds: float = 0.01):
    await tasks.asleep(seconds)
