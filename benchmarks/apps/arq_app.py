"""arq: ``arq benchmarks.apps.arq_app.WorkerSettings --custom-log-dict
benchmarks.apps.arq_app.LOG_CONFIG``."""

from __future__ import annotations

import os

from arq.connections import RedisSettings
from arq.logs import default_log_config

from benchmarks import tasks


# arq calls every job as ``func(ctx, *args, **kwargs)``: these take the
# context first, then do what benchmarks.tasks does. The names are the ones
# the producer enqueues ("anoop", "asleep").
async def anoop(ctx, *args, **kwargs):
    return await tasks.anoop(*args, **kwargs)


async def asleep(ctx, seconds: float = 0.01, *args, **kwargs):
    return await tasks.asleep(seconds)


# arq logs every job start and finish at INFO; taskmesh logs successes at
# DEBUG, so the benchmark runs arq at WARNING (``--custom-log-dict``).
LOG_CONFIG = default_log_config(False)
LOG_CONFIG["handlers"]["arq.standard"]["level"] = "WARNING"
LOG_CONFIG["loggers"]["arq"]["level"] = "WARNING"


class WorkerSettings:
    functions = [anoop, asleep]
    # No default on purpose: the benchmark only ever talks to its own server.
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_PEER_URL"])
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.01"))
    handle_signals = True
