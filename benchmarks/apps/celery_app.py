"""celery (Redis broker and result backend): ``celery -A benchmarks.apps.celery_app worker``."""

import os

from celery import Celery

from benchmarks import tasks

_url = os.environ["BENCH_PEER_URL"]
app = Celery("bench", broker=_url, backend=_url)
app.conf.update(
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,  # no pidbox keys or broadcast traffic
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    result_expires=None,
)


@app.task(name="noop")
def noop():
    return tasks.noop()
