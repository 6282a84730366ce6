"""A Redis that cannot be reached is one documented error for the caller:
``TaskmeshConnectionError`` (a TaskmeshError, a builtin ConnectionError and
a redis-py ConnectionError) whose ``__cause__`` is redis-py's own error, for
every URL kind, from the sync and the async API and the CLI. Each test
starts real redis-server processes, uses them, then stops them."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import Iterator

import pytest
import redis

from taskmesh import TaskManager, TaskmeshConnectionError, TaskmeshError
from taskmesh.waiters import RECHECK_S
from tests.cluster import LocalCluster, LocalSentinel
from tests.conftest import REPO_ROOT, RedisServer


def _check(exc: BaseException) -> None:
    assert isinstance(exc, TaskmeshConnectionError)
    assert isinstance(exc, TaskmeshError) and isinstance(exc, ConnectionError)
    assert isinstance(exc, redis.exceptions.ConnectionError)  # code written for redis-py
    cause = exc.__cause__
    assert cause is not None and type(cause).__module__.startswith("redis"), repr(cause)
    assert not isinstance(cause, TaskmeshConnectionError)


@contextlib.contextmanager
def _fails(within_s: float | None) -> Iterator[None]:
    """The block raises a checked TaskmeshConnectionError (within ``within_s``)."""
    began = time.monotonic()
    with pytest.raises(TaskmeshConnectionError) as info:
        yield
    _check(info.value)
    if within_s is not None:
        assert time.monotonic() - began < within_s


def _calls_fail(tm: TaskManager, task_id: str, every_call: bool = True) -> None:
    """Sync reads, writes, listing, metrics and waits, then the async ones,
    on a manager opened while Redis was up (one of each unless
    ``every_call``: behind Sentinel each call takes seconds of redis-py's
    own retries before it gives up). With ``every_call``, a wait fails as
    soon as its result listener fails to connect, not after the RECHECK_S
    it would give a slow subscription."""
    calls = [lambda: tm.get_task_status(task_id),
             lambda: tm.register_task("tests.tasks:return_none"),
             tm.get_metrics, tm.list_tasks, tm.get_events,
             lambda: tm.wait_for_task_sync(task_id, timeout=30)]
    bound_s = RECHECK_S if every_call else None
    for call in calls if every_call else calls[:1]:
        with _fails(bound_s):
            call()

    async def async_calls() -> None:
        calls = [lambda: tm.wait_for_task(task_id, timeout=30),
                 lambda: tm.execute_task(task_id),
                 lambda: tm.cancel_task(task_id)]
        for call in calls if every_call else calls[:1]:
            with _fails(bound_s):
                await call()

    asyncio.run(async_calls())


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_a_stopped_redis(scheme, namespace):
    server = RedisServer().start()
    # rediss://: the TLS connection fails at its TCP connect just the same.
    url = server.url.replace("redis://", f"{scheme}://", 1)
    try:
        with TaskManager(url if scheme == "redis" else server.url, namespace=namespace) as up:
            task_id = up.register_task("tests.tasks:return_none", defer=True)
        with TaskManager(url, namespace=namespace) as tm:
            if scheme == "redis":
                tm.get_task_status(task_id)  # connected before the stop
            server.stop()
            _calls_fail(tm, task_id)
    finally:
        server.cleanup()


def test_the_cli_says_it_in_one_line(namespace):
    server = RedisServer().start()
    server.stop()
    try:
        out = subprocess.run([sys.executable, "-m", "taskmesh", "metrics", "--url", server.url,
                              "--namespace", namespace],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    finally:
        server.cleanup()
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: TaskmeshConnectionError: cannot reach Redis at "), lines


@pytest.mark.slow  # ~40 s: a sentinel set-up started, then stopped
def test_a_stopped_sentinel_set_up(namespace):
    sentinel = LocalSentinel().start()
    try:
        with TaskManager(sentinel.url, namespace=namespace) as tm:
            task_id = tm.register_task("tests.tasks:return_none", defer=True)
            for server in (sentinel.sentinel, sentinel.replica, sentinel.master):
                server.stop()
            _calls_fail(tm, task_id, every_call=False)
    finally:
        sentinel.cleanup()


def test_a_stopped_cluster(namespace):
    cluster = LocalCluster(masters=3, replicas_per_master=0).start()
    try:
        url = cluster.url + "?socket_connect_timeout=1"
        with TaskManager(url, namespace=namespace) as tm:
            task_id = tm.register_task("tests.tasks:return_none", defer=True)
            for node in cluster.nodes:
                node.stop()
            _calls_fail(tm, task_id, every_call=False)
        # A manager opened now fails in its constructor (the cluster client
        # maps the slots there), with the same error.
        with pytest.raises(TaskmeshConnectionError) as info:
            TaskManager(url, namespace=namespace)
        _check(info.value)
    finally:
        cluster.cleanup()


def test_a_worker_still_rides_out_an_outage(namespace, worker_factory):
    """The translation is the producer API's: a worker goes on retrying
    through a restart and then runs what was queued."""
    server = RedisServer().start()
    try:
        worker = worker_factory(url=server.url)
        with TaskManager(server.url, namespace=namespace) as tm:
            assert tm.wait_for_task_sync(tm.register_task("tests.tasks:add", 1, 2), timeout=30) == 3
        server.restart()  # the same port; the worker's connections all break
        with TaskManager(server.url, namespace=namespace) as tm:
            assert tm.wait_for_task_sync(tm.register_task("tests.tasks:add", 2, 3), timeout=30) == 5
        assert worker.returncode is None
    finally:
        server.cleanup()
