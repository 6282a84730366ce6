"""saq: ``saq benchmarks.apps.saq_app.settings``."""

import asyncio
import os

from saq import Queue

queue = Queue.from_url(os.environ["BENCH_PEER_URL"], name="default")


async def anoop(ctx, **kwargs):
    return None


async def asleep(ctx, seconds: float = 0.01, **kwargs):
    await asyncio.sleep(seconds)


settings = {
    "queue": queue,
    "functions": [anoop, asleep],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
}
