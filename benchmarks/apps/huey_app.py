"""huey: ``huey_consumer benchmarks.apps.huey_app.huey -k thread -w N``."""

import os

from huey import RedisHuey

from benchmarks import tasks

# store_none: huey drops None results by default; stored, they count as done.
huey = RedisHuey("bench", url=os.environ["BENCH_PEER_URL"], store_none=True)


@huey.task()
def noop():
    return tasks.noop()
