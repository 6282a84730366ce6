"""Events across processes: producer here, worker in a second process,
subscriber in a third."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import pytest

from taskmesh import EventType, TaskFailedError, TaskStatus, subscribe
from taskmesh.events import iterate_events
from tests import semantics_tasks as st
from tests.conftest import REPO_ROOT
from tests.helpers import wait_until

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)

TERMINAL = {"TASK_COMPLETED", "TASK_FAILED", "TASK_CANCELLED"}


def _workload(tm, redis_server, namespace):
    """Produces every TASK_* type at least once."""
    key = f"{namespace}:attempts"
    ok = tm.register_task("tests.tasks:my_function", 1, 2, kwargs={"param1": 3})
    flaky = tm.register_task(st.succeed_on_attempt, redis_server.url, key, 2,
                             max_retries=1, retry_delay=0.05)
    broken = tm.register_task(st.fail)
    deferred = tm.register_task(st.noop, defer=True)
    doomed = tm.register_task(st.noop, defer=True)
    tm.cancel_task_sync(doomed)
    tm.execute_task_sync(deferred)
    return [ok, flaky, broken, deferred, doomed]


def test_subscriber_in_another_process_sees_every_type_in_order(
        tm, backend, redis_server, worker_factory, namespace, tmp_path):
    out, stop = tmp_path / "events.jsonl", tmp_path / "stop"
    listener = subprocess.Popen(
        [sys.executable, "-m", "tests.event_listener", backend.url, namespace,
         str(out), str(stop)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        ids = _workload(tm, redis_server, namespace)
        worker_factory("--burst").wait(30)
        expected = len(tm.get_events(count=1000))

        def lines():
            return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []

        wait_until(lambda: len(lines()) >= expected, what=f"{expected} events in the listener")
    finally:
        stop.touch()
        listener.wait(20)
    received = lines()
    assert {e["type"] for e in received} == {t.value for t in EventType}
    # Same events, same order as the replay stream, per task and per shard
    # (SPEC §14: order is kept within a shard; one shard is the whole order).
    replay = tm.get_events(count=1000)

    def by_shard(ids):
        shards: dict[str, list[str]] = {}
        for event_id in ids:
            shards.setdefault(event_id.split(":", 1)[0], []).append(event_id)
        return shards

    assert by_shard(e["id"] for e in received) == by_shard(e.id for e in replay)
    assert sorted(e["id"] for e in received) == sorted(e.id for e in replay)
    for task_id in ids:
        seq = [e["type"] for e in received if e["task_id"] == task_id]
        assert seq[0] == "TASK_CREATED"
        assert seq[-1] in TERMINAL and sum(t in TERMINAL for t in seq) == 1
    flaky_seq = [e["type"] for e in received if e["task_id"] == ids[1]]
    assert flaky_seq == ["TASK_CREATED", "TASK_STARTED", "TASK_RETRYING", "TASK_QUEUED",
                         "TASK_STARTED", "TASK_COMPLETED"]
    failed = [e for e in received if e["type"] == "TASK_FAILED"][0]
    assert failed["data"]["error"]["type"] == "ValueError"
    assert failed["data"]["name"] and failed["data"]["queue"] == "default"


def test_handler_errors_do_not_stop_delivery_and_close_stops(tm, backend, namespace):
    seen, done = [], threading.Event()

    def good(event):
        seen.append(event)
        if len(seen) >= 2:
            done.set()

    bad = subscribe(None, lambda e: 1 / 0, url=backend.url, namespace=namespace)
    sub = tm.subscribe(EventType.TASK_CREATED, good)
    tm.register_task(st.noop)
    tm.register_task(st.noop)
    assert done.wait(10)
    assert all(e.type is EventType.TASK_CREATED for e in seen)
    sub.close()
    bad.close()
    count = len(seen)
    tm.register_task(st.noop)
    tm.get_events(count=1)  # a round trip after publishing
    assert len(seen) == count


def test_async_handler_and_events_iterator(tm, worker_factory):
    async def main():
        got = []
        subscribed = asyncio.Event()
        # tm.events() is this iterator; its subscribed signal says when every
        # event from then on will be delivered.
        stream = iterate_events(tm._state().client, tm.keys,
                                [EventType.TASK_STARTED, EventType.TASK_COMPLETED],
                                on_subscribed=subscribed.set)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.wait_for(subscribed.wait(), 15)
        t = tm.register_task(st.noop)
        worker_factory()
        got.append(await asyncio.wait_for(first, 15))
        got.append(await asyncio.wait_for(stream.__anext__(), 15))
        await stream.aclose()
        return t, got

    t, got = asyncio.run(main())
    assert [(e.type, e.task_id) for e in got] == [
        (EventType.TASK_STARTED, t), (EventType.TASK_COMPLETED, t)]


def test_replay_since(tm):
    ids = [tm.register_task(st.noop, defer=True) for _ in range(5)]
    events = tm.get_events(count=100)
    assert [e.task_id for e in events] == ids
    assert [e.task_id for e in tm.get_events(since=events[1].id)] == ids[2:]
    assert [e.task_id for e in tm.get_events(count=2)] == ids[-2:]
    assert all(e.data["status"] == "pending" for e in events)
    with pytest.raises(ValueError):
        tm.get_events(count=0)


def test_metrics_match_a_known_workload(tm, redis_server, worker_factory, namespace):
    key = f"{namespace}:attempts"
    done = tm.register_many(st.noop, range(10))
    broken = [tm.register_task(st.fail) for _ in range(2)]
    flaky = [tm.register_task(st.succeed_on_attempt, redis_server.url, f"{key}{i}", 2,
                              max_retries=1, retry_delay=0.01) for i in range(3)]
    cancelled = tm.register_task(st.noop, defer=True)
    tm.cancel_task_sync(cancelled)
    waiting = tm.register_task(st.noop, dependencies=[tm.register_task(st.noop, defer=True)])
    worker_factory("--burst").wait(30)
    m = tm.get_metrics()
    assert m["totals"] == {"registered": 18, "completed": 13, "failed": 2, "cancelled": 1,
                           "retried": 3}
    assert m["tasks"] == {"pending": 1, "waiting": 1, "queued": 0, "scheduled": 0,
                          "running": 0, "completed": 13, "failed": 2, "cancelled": 1}
    assert m["blocked_on_dependencies"] == 1
    assert m["throughput_per_s"] > 0
    assert 0 < m["failure_rate"] < 1
    assert m["runtime_ms"]["p50"] is not None and m["runtime_ms"]["max"] >= m["runtime_ms"]["p50"]
    assert m["recoveries"] == 0 and m["max_concurrent_tasks"] is None
    assert tm.get_task_status(waiting) is TaskStatus.WAITING
    assert all(tm.get_task_status(d) is TaskStatus.COMPLETED for d in done + flaky)
    with pytest.raises(TaskFailedError):
        tm.wait_for_task_sync(broken[0], timeout=5)


def test_metrics_queues_by_priority_and_workers(tm, worker_factory):
    for p in (0, 5, 5, 15):
        tm.register_task(st.noop, priority=p, queue="reports")
    m = tm.get_metrics()
    assert m["queues"]["reports"]["queued"] == 4
    assert m["queues"]["reports"]["by_priority"] == {15: 1, 5: 2, 0: 1}
    assert set(m["oldest_queued_age_s"]["reports"]) == {0, 5, 15}
    w = worker_factory("--queues", "other")
    wait_until(lambda: tm.get_metrics()["workers"], what="worker heartbeat")
    (info,) = tm.get_metrics()["workers"]
    assert info["pid"] == w.pid and info["queues"] == ["other"] and info["concurrency"] == 10
    w.stop()
    assert tm.get_metrics()["workers"] == []


def test_progress_updates_publish_and_tight_loops_are_throttled(tm, worker_factory):
    few = tm.register_task(st.progress_steps, 3)
    many = tm.register_task(st.progress_steps, 5000)
    worker_factory()
    assert tm.wait_for_task_sync(few, timeout=20) == 3
    assert tm.wait_for_task_sync(many, timeout=60) == 5000
    events = tm.get_events(count=10_000)

    def progress_of(task_id):
        return [e.data["progress"] for e in events
                if e.task_id == task_id and e.type is EventType.TASK_PROGRESS]

    assert progress_of(few) == pytest.approx([0.3, 0.6, 0.9])  # each update published
    published = progress_of(many)
    assert 1 < len(published) < 200  # a tight loop does not flood subscribers
    assert published[-1] == pytest.approx(0.9)  # the final value always goes out
    assert tm.get_task_progress(many)[0] == pytest.approx(0.9)
    producer = tm.register_task(st.noop, defer=True)  # producer updates are never throttled
    for value in (0.1, 0.2, 0.3):
        tm.update_task_progress(producer, value)
    assert [e.data["progress"] for e in tm.get_events(count=3)] == [0.1, 0.2, 0.3]


def test_entries_of_every_shape_decode_to_the_same_event():
    """The stream's entry shapes (prelude.lua's emit, and the earlier ones a
    stream may still hold) decode to one Event, and merge by the same us."""
    from taskmesh.events import decode_entry
    from taskmesh.sharding import merge_key

    us = b"1764655108123456"
    now = {b"task_id": b"t1", b"e": b"TASK_STARTED,running,0,default,1,," + us,
           b"worker": b"w,1", b"name": b"a, name"}
    before = {b"task_id": b"t1", b"us": us, b"e": b"TASK_STARTED,running,0,default,1,",
              b"worker": b"w,1", b"name": b"a, name"}
    events = [decode_entry(b"1764655108123-0", fields) for fields in (now, before)]
    assert events[0] == events[1]
    assert events[0].type == EventType.TASK_STARTED and events[0].timestamp == 1764655108.123
    assert events[0].data == {"name": "a, name", "status": "running", "priority": 0,
                              "queue": "default", "attempt": 1, "worker": "w,1"}
    assert merge_key(0, "1764655108123-0", now) == merge_key(0, "1764655108123-0", before)
    assert merge_key(0, "1764655108123-0", now)[0] == int(us)
    with_data = dict(now, data=json.dumps({"delay": 0.5}).encode())
    assert decode_entry(b"1764655108123-1", with_data).data["delay"] == 0.5
