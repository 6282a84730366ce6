"""taskiq (+ taskiq-redis): ``taskiq worker benchmarks.apps.taskiq_app:broker``."""

import os

from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from benchmarks import tasks

_url = os.environ["BENCH_PEER_URL"]
# socket_timeout=None: the listener's BRPOP blocks without a timeout, and a
# socket timeout would end an idle worker with a traceback.
broker = ListQueueBroker(_url, socket_timeout=None).with_result_backend(
    RedisAsyncResultBackend(_url))


@broker.task(task_name="anoop")
async def anoop(*args, **kwargs):
    return await tasks.anoop()


@broker.task(task_name="asleep")
async def asleep(seconds: float = 0.01):
    await tasks.asleep(seconds)
