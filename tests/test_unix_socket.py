"""unix:// end to end: producer, worker, waits and events over a private
redis-server listening on a unix socket only (``--port 0``)."""

from __future__ import annotations

import asyncio

import pytest

from taskmesh import EventType, TaskManager
from taskmesh.server import RedisServer
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def unix_url(tmp_path_factory):
    path = tmp_path_factory.mktemp("unix") / "redis.sock"
    with RedisServer(extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"]):
        yield f"unix://{path}?db=0"


def test_unix_socket_round_trip_with_worker_waits_and_events(unix_url, worker_factory):
    seen = []
    with TaskManager(unix_url, namespace="unix") as tm:
        sub = tm.subscribe(EventType.TASK_COMPLETED, seen.append)
        task = tm.register_task("tests.tasks:add", 2, 3)
        other = tm.register_task("tests.tasks:add", 4, 5)
        worker_factory("--burst", url=unix_url, namespace="unix")
        assert tm.wait_for_task_sync(task, timeout=20) == 5  # the blocking wait
        assert asyncio.run(tm.wait_for_task(other, timeout=20)) == 9  # the async one
        wait_until(lambda: len(seen) >= 2, timeout=5, what="TASK_COMPLETED over a unix socket")
        sub.close()
    assert {e.task_id for e in seen} >= {task, other}
