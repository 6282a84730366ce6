"""dramatiq: ``dramatiq benchmarks.apps.dramatiq_app -p 1 -t N``."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from benchmarks import tasks

_url = os.environ["BENCH_PEER_URL"]
broker = RedisBroker(url=_url)
# Results are stored, as taskmesh stores them, so round trips can be timed.
broker.add_middleware(Results(backend=RedisBackend(url=_url)))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", max_retries=0, store_results=True)
def noop():
    return tasks.noop()
