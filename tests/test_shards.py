"""Sharded namespaces (SPEC §14, §17) on the real 3+3 cluster: the stored
shard count, placement, dependencies and cascades across shards, their
at-least-once delivery applied once, merged events and metrics."""

from __future__ import annotations

import pytest
import redis.cluster
from redis.crc import key_slot

from taskmesh import DependencyFailedError, TaskManager, TaskStatus
from taskmesh import scripts
from taskmesh.sharding import ShardSet, apply_call, link_call, shard_of
from tests import semantics_tasks as st
from tests import tasks
from tests.helpers import ids_in, wait_until

WAIT = 30.0


@pytest.fixture
def url(redis_cluster) -> str:
    return redis_cluster.url


@pytest.mark.parametrize("bad", [0, 1025, -1, True, 2.0, "3"])
def test_shards_out_of_range_is_a_value_error_before_any_io(bad):
    with pytest.raises(ValueError, match="shards"):
        TaskManager("redis+cluster://127.0.0.1:1", shards=bad)


def test_count_is_fixed_at_first_registration_and_followed(url, namespace):
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        # Unused: nothing fixed yet, another count is still possible.
        TaskManager(url, namespace=namespace, shards=2).close()
        task_id = tm.register_task(tasks.add, 1, 1)
        with pytest.raises(ValueError, match="3 shard"):
            TaskManager(url, namespace=namespace, shards=2)
        with TaskManager(url, namespace=namespace) as follower:  # shards=None follows
            assert follower.get_metrics()["shards"][shard_of(task_id, 3)]["tasks"]["queued"] == 1
            assert len(follower.get_metrics()["shards"]) == 3
            assert follower.get_task_status(task_id) is TaskStatus.QUEUED
        TaskManager(url, namespace=namespace, shards=3).close()


def test_a_settings_write_fixes_the_count_and_none_means_one(url, namespace):
    with TaskManager(url, namespace=namespace) as tm:
        tm.set_max_concurrent_tasks(4)
    with pytest.raises(ValueError):
        TaskManager(url, namespace=namespace, shards=3)
    with TaskManager(url, namespace=namespace, shards=1) as tm:
        assert len(tm.get_metrics()["shards"]) == 1


def test_a_namespace_without_a_stored_count_is_one_shard(url, namespace):
    """What a version without shards wrote: records, no 'shards' setting."""
    with TaskManager(url, namespace=namespace) as tm:
        task_id = tm.register_task(tasks.add, 1, 1)
        tm._client.hdel(tm.keys.config, "shards")
    with pytest.raises(ValueError, match="1 shard"):
        TaskManager(url, namespace=namespace, shards=3)
    with TaskManager(url, namespace=namespace) as tm:
        assert tm.get_task_status(task_id) is TaskStatus.QUEUED


def test_shards_land_on_different_masters(redis_cluster, namespace):
    for ns in [namespace] + [f"{namespace}{i}" for i in range(20)]:
        shardset = ShardSet(ns, 3)
        slots = [key_slot(k.seq.encode()) for k in shardset.keys]
        masters = {redis_cluster.node_for_slot(s).port for s in slots}
        assert len(masters) == 3, (ns, slots)


def test_tasks_are_stored_in_their_shard(url, namespace):
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        ids = [tm.register_task(tasks.add, i, i) for i in range(30)]
        shardset = ShardSet(namespace, 3)
        client = tm._client
        for task_id in ids:
            home = shardset.keys[shard_of(task_id, 3)]
            assert client.exists(home.task(task_id)) == 1
        per_shard = [s["tasks"]["queued"] for s in tm.get_metrics()["shards"]]
        assert sum(per_shard) == 30 and all(n > 0 for n in per_shard)
        assert tm.get_metrics()["tasks"]["queued"] == 30


def test_dag_whose_edges_cross_shards_runs_in_order(url, namespace, rds, redis_server,
                                                     worker_factory):
    key = f"{namespace}:stamps"
    (a,), (b,), (c,), (d,) = (ids_in(s, 3, f"{namespace}-{name}")
                              for s, name in ((0, "a"), (1, "b"), (2, "c"), (0, "d")))
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        tm.register_task(st.stamp, redis_server.url, key, "a", task_id=a)
        tm.register_task(st.stamp, redis_server.url, key, "b", task_id=b, dependencies=[a])
        tm.register_task(st.stamp, redis_server.url, key, "c", task_id=c, dependencies=[a])
        tm.register_task(st.stamp, redis_server.url, key, "d", task_id=d, dependencies=[b, c])
        assert tm.get_task_status(d) is TaskStatus.WAITING
        worker_factory("--concurrency", "4", url=url)
        assert tm.wait_for_task_sync(d, timeout=WAIT) == "d"
        order = [x.decode().split()[0] for x in rds.lrange(key, 0, -1)]
        assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
        assert tm.get_metrics()["totals"]["completed"] == 4


def test_dependency_already_finished_in_another_shard(url, namespace, worker_factory):
    (done,), (later,) = ids_in(1, 3, f"{namespace}-p"), ids_in(2, 3, f"{namespace}-c")
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        tm.register_task(tasks.add, 1, 1, task_id=done)
        worker_factory("--burst", url=url).wait(WAIT)
        assert tm.get_task_status(done) is TaskStatus.COMPLETED
        tm.register_task(tasks.add, 2, 2, task_id=later, dependencies=[done])
        assert tm.get_task_status(later) is TaskStatus.QUEUED
        with pytest.raises(KeyError):
            tm.register_task(tasks.add, 2, 2, dependencies=[f"{namespace}-missing"])


def test_cascade_across_shards(url, namespace, worker_factory):
    (root,), (child,), (grand,) = (ids_in(s, 3, f"{namespace}-{n}")
                                   for s, n in ((0, "root"), (1, "child"), (2, "grand")))
    (other,) = ids_in(0, 3, f"{namespace}-other")
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        tm.register_task(st.fail, task_id=root)
        tm.register_task(tasks.add, 1, 1, task_id=child, dependencies=[root])
        tm.register_task(tasks.add, 1, 1, task_id=grand, dependencies=[child])
        tm.register_task(st.noop, task_id=other, defer=True)
        leaf = tm.register_task(tasks.add, 1, 1, dependencies=[other])
        worker_factory("--burst", url=url).wait(WAIT)
        for task_id in (child, grand):
            assert tm.get_task_status(task_id) is TaskStatus.CANCELLED
            assert tm.get_task_error(task_id).type == DependencyFailedError.__name__
        assert tm.get_task_status(root) is TaskStatus.FAILED
        # A producer's cancel cascades across shards at once (no worker).
        assert tm.cancel_task_sync(other) is True
        assert tm.get_task_status(leaf) is TaskStatus.CANCELLED


def test_a_delivery_is_applied_once_even_when_sent_twice(url, namespace):
    """A drainer that dies after applying and before removing the outbox
    entry makes the next one deliver it again: apply.lua counts it once."""
    (parent,), (child,) = ids_in(0, 3, f"{namespace}-p"), ids_in(1, 3, f"{namespace}-c")
    shardset = ShardSet(namespace, 3)
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        other = tm.register_task(st.noop, defer=True, task_id=ids_in(2, 3, f"{namespace}-o")[0])
        tm.register_task(st.noop, defer=True, task_id=parent)
        tm.register_task(tasks.add, 1, 1, task_id=child, dependencies=[parent, other])
        client = tm._client
        assert client.hget(shardset.keys[1].task(child), "pending_dependencies") == b"2"
        first = scripts.run(client, apply_call(shardset.keys[1], child, parent, "completed"))
        again = scripts.run(client, apply_call(shardset.keys[1], child, parent, "completed"))
        assert (first, again) == ("applied", "dup")
        assert client.hget(shardset.keys[1].task(child), "pending_dependencies") == b"1"
        assert tm.get_task_status(child) is TaskStatus.WAITING


def test_a_delivery_before_registration_is_kept_for_it(url, namespace):
    """link.lua, then the dependency finishes and its outcome is applied,
    then the dependent is registered: the early outcome is not lost."""
    (parent,), (child,) = ids_in(0, 3, f"{namespace}-p"), ids_in(2, 3, f"{namespace}-c")
    shardset = ShardSet(namespace, 3)
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        tm.register_task(st.noop, defer=True, task_id=parent)
        client = tm._client
        assert scripts.run(client, link_call(shardset.keys[0], parent, 2, child)) == "linked"
        assert scripts.run(client, apply_call(shardset.keys[2], child, parent, "failed")) == "early"
        call = shardset.commands[2].register(
            child, {"name": "c", "queue": "default", "priority": 5, "ttl": 60, "payload": b"x",
                    "executor": "async", "max_retries": 0, "retry_delay": 1,
                    "retry_backoff": 1, "dependencies": f'["{parent}"]'},
            [], False, [(parent, "linked")])
        assert scripts.run(client, call)[1] == "cancelled"
        assert tm.get_task_error(child).type == "DependencyFailedError"


def test_events_page_across_shards_without_gaps_or_repeats(url, namespace):
    shardset = ShardSet(namespace, 3)
    # Four ids per shard, interleaved (random ids could leave a shard empty).
    per_shard: dict[int, list[str]] = {0: [], 1: [], 2: []}
    n = 0
    while min(len(v) for v in per_shard.values()) < 4:
        candidate = f"ev{n}"
        n += 1
        if len(per_shard[shardset.of(candidate)]) < 4:
            per_shard[shardset.of(candidate)].append(candidate)
    wanted = [per_shard[s][i] for i in range(4) for s in range(3)]
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        ids = [tm.register_task(st.noop, defer=True, task_id=t) for t in wanted]
        everything = tm.get_events(count=100)
        assert [e.task_id for e in everything] == ids  # merged in registration order
        assert {e.id.split(":")[0] for e in everything} == {"0", "1", "2"}
        paged, since = [], everything[0].id
        while batch := tm.get_events(since=since, count=1):
            paged += batch
            since = batch[-1].id
        assert [e.id for e in paged] == [e.id for e in everything[1:]]
        with pytest.raises(ValueError):
            tm.get_events(since="7:1-0")  # no shard 7 here


def test_a_worker_started_before_first_use_finds_the_shards(url, namespace, worker_factory):
    worker = worker_factory("--concurrency", "4", url=url)
    wait_until(lambda: "started" in worker.log(), WAIT, what="worker up")
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        ids = [tm.register_task(tasks.add, i, 1) for i in range(9)]
        assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [i + 1 for i in range(9)]
    assert "namespace has 3 shards" in worker.log()


def test_cluster_client_is_used_for_sharded_namespaces(url, namespace):
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        assert isinstance(tm._client, redis.cluster.RedisCluster)


def test_priority_aging_reaches_every_shard(url, namespace):
    with TaskManager(url, namespace=namespace, shards=3, priority_aging_s=5.0) as tm:
        tm.register_task(tasks.add, 1, 1)
        configs = [tm._client.hget(k.config, "priority_aging_s") for k in ShardSet(namespace, 3).keys]
        assert configs == [b"5.0"] * 3
        tm.set_priority_aging(None)
        assert not any(tm._client.hget(k.config, "priority_aging_s")
                       for k in ShardSet(namespace, 3).keys)


def test_a_rate_limit_is_split_over_the_shards(url, namespace, rds, redis_server,
                                               worker_factory):
    from tests import chaos_tasks as ct

    marks = f"{namespace}:starts"
    with TaskManager(url, namespace=namespace, shards=3) as tm:
        tm.set_rate_limit("api", 6.0, burst=3)
        stored = [tm._client.hget(k.ratelimits, "api") for k in ShardSet(namespace, 3).keys]
        assert len(set(stored)) == 1 and stored[0].startswith(b"2")  # 6/s over 3 shards
        ids = [tm.register_task(ct.mark, redis_server.url, marks, rate_key="api")
               for _ in range(15)]
        worker_factory("--concurrency", "8", url=url)
        for task_id in ids:
            tm.wait_for_task_sync(task_id, timeout=WAIT)
    starts = sorted(float(m.split()[3]) for m in rds.lrange(marks, 0, -1))
    # 15 starts at 6/s with a bucket of 3 (1 per shard) take at least 2 s.
    assert len(starts) == 15 and starts[-1] - starts[0] >= 1.8


def test_a_sharded_claim_whose_replies_are_lost_is_replayed(url, namespace, monkeypatch):
    """The claim calls of a sharded claim ran on their shards, and the
    batch's reply was lost (the connection dropped while reading it). The
    worker asks again with the same claim id, as a resend: each shard hands
    back what it claimed instead of claiming more, so nothing sits RUNNING
    unknown to its worker until the lease runs out."""
    import asyncio

    from taskmesh.connection import async_client
    from taskmesh.shardwork import ShardedWork
    from taskmesh.worker import Worker

    with TaskManager(url, namespace=namespace, shards=3) as tm:
        ids = tm.register_many(tasks.add, [(i, 1) for i in range(30)])
        sent = []
        real_batch = scripts.arun_batch

        async def lose_the_first_reply(client, calls):
            replies = await real_batch(client, calls)
            sent.append([c.args[-2] for c in calls])  # ARGV[8]: '1' for a first send
            if len(sent) == 1:
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            return replies

        monkeypatch.setattr(scripts, "arun_batch", lose_the_first_reply)

        async def main():
            worker = Worker(url=url, namespace=namespace, name="w-replay")
            worker.client = async_client(url)  # what Worker.run sets up first
            work = ShardedWork(worker, ShardSet(namespace, 3))
            try:
                with pytest.raises(redis.exceptions.ConnectionError):
                    await work.claim(5, 30_000, 0, 0, "claim-1")
                return await work.claim(5, 30_000, 0, 0, "claim-1")
            finally:
                await worker.client.aclose()

        again = asyncio.run(main())
        running = {i for i in ids if tm.get_task_status(i) is TaskStatus.RUNNING}
        # Every task RUNNING is in the second reply: the lost first claim's,
        # replayed, and what the second claimed (the rotation moved on).
        assert {t.id for t in again.tasks} == running
        assert 5 <= len(running) <= 10
        assert all(flag == "1" for flag in sent[0])  # the first attempt: first sends
        # The second: a resend to each shard of the first, which replays.
        assert sent[1].count("") == len(sent[0])
