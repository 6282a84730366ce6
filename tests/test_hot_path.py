"""The cheaper per-task path (issue 9) keeps every guarantee of the plain one.

report_many.lua applies each report exactly as its own report.lua call
would (fencing, retries, cancellation, errors), and the worker's reporter
sends the outcomes that are ready together as one such call.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from taskmesh import TaskStatus, scripts
from taskmesh.reporter import Reporter
from taskmesh.store import Commands

WAIT = 20.0


def _claim(tm, rds, n: int, worker: str = "w-test"):
    res = scripts.run(rds, Commands(tm.keys).claim(worker, ["default"], n, 30_000, 2, 2))
    assert len(res.tasks) == n
    return res.tasks


def _error(message: str) -> str:
    return json.dumps({"type": "ValueError", "message": message, "traceback": "", "attempt": 1})


def _report_together(redis_server, commands: Commands, calls: list) -> tuple[list, list[int]]:
    """Submits ``calls`` all at once through a real Reporter on its own
    client; returns each caller's reply and the size of every merged
    report_many call the reporter sent."""
    import redis.asyncio

    merged: list[int] = []

    def merge(batch):
        merged.append(len(batch))
        return commands.report_many(batch)

    async def main() -> list:
        client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)
        reporter = Reporter(client, merge=merge)
        reporter.start()
        try:
            return await asyncio.gather(*(reporter.submit(c) for c in calls))
        finally:
            await reporter.close(timeout=5)
            await client.aclose()

    return asyncio.run(main()), merged


def test_report_many_applies_each_report_as_report_lua_would(tm, rds):
    """One call, five reports: completed, failed with a retry left, failed for
    good, cancelled, and one whose claim token is stale."""
    commands = Commands(tm.keys)
    ids = [tm.register_task("tests.tasks:add", 1, 2) for _ in range(3)]
    ids.append(tm.register_task("tests.tasks:add", 1, 2, max_retries=1, retry_delay=60))
    ids.append(tm.register_task("tests.tasks:add", 1, 2))
    claimed = {c.id: c for c in _claim(tm, rds, 5)}
    done, fails, stays, retries, stale = (claimed[i] for i in ids)
    result = tm.codec.encode_result(42)
    reports = [
        commands.report(done.id, done.token, "completed", result),
        commands.report(fails.id, fails.token, "failed", _error("boom"), True),
        commands.report(stays.id, stays.token, "cancelled", ""),
        commands.report(retries.id, retries.token, "failed", _error("again"), True),
        commands.report(stale.id, "999999", "completed", result),
    ]
    replies = scripts.run(rds, commands.report_many(reports))
    assert replies == ["completed", "failed", "cancelled", "scheduled", "stale"]
    assert tm.get_task_result(done.id) == 42
    assert tm.get_task_error(fails.id).message == "boom"
    assert tm.get_task_status(stays.id) is TaskStatus.CANCELLED
    assert tm.get_task_status(retries.id) is TaskStatus.SCHEDULED
    assert tm.get_task_status(stale.id) is TaskStatus.RUNNING  # fenced out: untouched
    # Sent again (a retried batch), every report answers 'stale' and changes nothing.
    again = scripts.run(rds, commands.report_many(reports[:3]))
    assert again == ["stale", "stale", "stale"]
    assert rds.hget(tm.keys.stats, "completed") == b"1"


def test_a_report_that_raises_fails_alone(tm, rds):
    """A report whose script raises (an undecodable error record) gets its own
    error reply; the reports around it in the same call are applied."""
    commands = Commands(tm.keys)
    ids = [tm.register_task("tests.tasks:add", 1, 2) for _ in range(3)]
    claimed = {c.id: c for c in _claim(tm, rds, 3)}
    first, bad, last = (claimed[i] for i in ids)
    result = tm.codec.encode_result(1)
    replies = scripts.run(rds, commands.report_many([
        commands.report(first.id, first.token, "completed", result),
        commands.report(bad.id, bad.token, "failed", "{not json", True),
        commands.report(last.id, last.token, "completed", result),
    ]))
    assert replies[0] == "completed" and replies[2] == "completed"
    assert isinstance(replies[1], Exception)
    assert tm.get_task_status(bad.id) is TaskStatus.RUNNING


def test_reporter_sends_ready_outcomes_as_one_call(tm, rds, redis_server):
    """Outcomes submitted together reach Redis as one report_many call; each
    caller still gets its own task's reply."""
    commands = Commands(tm.keys)
    ids = [tm.register_task("tests.tasks:add", i, 1) for i in range(20)]
    claimed = {c.id: c for c in _claim(tm, rds, 20)}
    stale = claimed[ids[0]]
    calls = [commands.report(stale.id, "0", "completed", tm.codec.encode_result(0))]
    calls += [commands.report(i, claimed[i].token, "completed", tm.codec.encode_result(n))
              for n, i in enumerate(ids) if n > 0]
    replies, merged = _report_together(redis_server, commands, calls)
    assert merged == [20]
    assert replies == ["stale"] + ["completed"] * 19
    assert [tm.get_task_result(i) for i in ids[1:]] == list(range(1, 20))


def test_large_results_are_not_merged(tm, rds, redis_server):
    """A merged call is one command, buffered whole by Redis: a result over
    MERGE_MAX_BYTES goes in a report of its own, the others around it merge."""
    from taskmesh.reporter import MERGE_MAX_BYTES

    commands = Commands(tm.keys)
    ids = [tm.register_task("tests.tasks:add", i, 1) for i in range(5)]
    claimed = {c.id: c for c in _claim(tm, rds, 5)}
    big = tm.codec.encode_result("x" * (MERGE_MAX_BYTES + MERGE_MAX_BYTES // 2))
    calls = [commands.report(i, claimed[i].token, "completed",
                             big if n == 2 else tm.codec.encode_result(n))
             for n, i in enumerate(ids)]
    replies, merged = _report_together(redis_server, commands, calls)
    assert replies == ["completed"] * 5
    assert merged == [2, 2]
    assert len(tm.get_task_result(ids[2])) == MERGE_MAX_BYTES + MERGE_MAX_BYTES // 2


@pytest.mark.all_backends
def test_worker_drains_through_batched_reports(tm, worker_factory):
    """A burst worker with many tasks finishing at once completes each exactly
    once, on a single Redis and on a cluster."""
    ids = tm.register_many("tests.tasks:add", [(i, 1) for i in range(300)])
    worker_factory("--burst", "--concurrency", "50").wait(WAIT)
    assert [tm.get_task_result(i) for i in ids] == [i + 1 for i in range(300)]
    assert tm.get_metrics()["totals"]["completed"] == 300  # each counted once


def test_runtimes_and_wake_tokens_stay_bounded(tm, rds):
    """The runtimes list is trimmed in steps (metrics reads the latest 1000),
    the wake list stays at its cap, and every outcome's rate bucket expires."""
    from taskmesh.metrics import RUNTIME_SAMPLES

    commands = Commands(tm.keys)
    n = RUNTIME_SAMPLES + 150
    tm.register_many("tests.tasks:add", [(1, 1)] * n)
    assert rds.llen(tm.keys.wake("default")) == 64  # WAKE_TOKENS + 1
    claimed = []
    while len(claimed) < n:
        claimed += scripts.run(rds, commands.claim("w-test", ["default"], 100, 30_000, 2, 2)).tasks
    result = tm.codec.encode_result(2)
    for i in range(0, n, 50):
        scripts.run(rds, commands.report_many(
            [commands.report(c.id, c.token, "completed", result) for c in claimed[i:i + 50]]))
    assert RUNTIME_SAMPLES <= rds.llen(tm.keys.runtimes) <= RUNTIME_SAMPLES + 100
    assert tm.get_metrics()["runtime_ms"]["p50"] is not None
    buckets = list(rds.scan_iter(match=f"{tm.keys.prefix}rate:*"))
    assert buckets and all(0 < rds.ttl(b) <= 120 for b in buckets)


def test_plain_records_and_records_without_the_flag_claim_and_finish_the_same(tm, rds):
    """register.lua's `plain` flag lets claim.lua and report.lua skip the
    options a record lacks; a record with options (plain '0') and one written
    before the flag existed (no field) are read field by field."""
    commands = Commands(tm.keys)
    plain_id = tm.register_task("tests.tasks:add", args=(1, 2))
    tagged_id = tm.register_task("tests.tasks:add", args=(1, 2), tags=["t"], timeout=5.0,
                                 executor_type="thread_pool", metadata={"k": 1})
    old_id = tm.register_task("tests.tasks:add", args=(1, 2), timeout=7.0, tags=["u"],
                              executor_type="sequential")
    flags = {i: rds.hget(tm.keys.task(i), "plain") for i in (plain_id, tagged_id, old_id)}
    assert flags == {plain_id: b"1", tagged_id: b"0", old_id: b"0"}
    rds.hdel(tm.keys.task(old_id), "plain")  # as a record written before the flag
    claimed = {c.id: c for c in _claim(tm, rds, 3)}
    assert (claimed[plain_id].executor, claimed[plain_id].timeout) == ("async", None)
    assert (claimed[tagged_id].executor, claimed[tagged_id].timeout) == ("thread_pool", 5.0)
    assert claimed[tagged_id].metadata == {"k": 1}
    assert (claimed[old_id].executor, claimed[old_id].timeout) == ("sequential", 7.0)
    for task_id, c in claimed.items():
        reply = scripts.run(rds, commands.report(task_id, c.token, "completed", b"r"))
        assert reply == "completed"
    # The tagged records (ttl kept forever here, or expiring) still list by tag.
    assert {t.id for t in tm.list_tasks(tag="t").tasks} == {tagged_id}
    assert {t.id for t in tm.list_tasks(tag="u").tasks} == {old_id}


def test_cancelling_a_running_plain_task_is_honoured_by_its_report(tm, rds):
    """cancel.lua clears `plain`, so report.lua reads cancel_requested."""
    commands = Commands(tm.keys)
    task_id = tm.register_task("tests.tasks:add", args=(1, 2))
    (claimed,) = _claim(tm, rds, 1)
    tm.cancel_task_sync(task_id)
    assert rds.hget(tm.keys.task(task_id), "plain") == b"0"
    reply = scripts.run(rds, commands.report(task_id, claimed.token, "completed", b"r"))
    assert reply == "cancelled"
    assert tm.get_task(task_id).status == TaskStatus.CANCELLED


def test_a_task_gaining_dependents_is_no_longer_plain_and_releases_them(tm, rds):
    """A record with `plain` '1' has no dependents (report.lua skips the look
    at its dependents sets): its first dependent, here or through link.lua
    (another shard), writes '0', and its completion still releases them."""
    commands = Commands(tm.keys)
    parent = tm.register_task("tests.tasks:add", args=(1, 2))
    loner = tm.register_task("tests.tasks:add", args=(1, 2))
    assert rds.hget(tm.keys.task(parent), "plain") == b"1"
    child = tm.register_task("tests.tasks:add", args=(1, 2), dependencies=[parent])
    assert rds.hget(tm.keys.task(parent), "plain") == b"0"
    assert rds.hget(tm.keys.task(loner), "plain") == b"1"
    linked = scripts.run(rds, scripts.Call(scripts.script("link"), [tm.keys.task(loner)],
                                           [tm.keys.prefix, loner, "1", "remote-child"]))
    assert linked == b"linked" and rds.hget(tm.keys.task(loner), "plain") == b"0"
    claimed = {c.id: c for c in _claim(tm, rds, 2)}
    calls = [commands.report(i, claimed[i].token, "completed", b"r") for i in (parent, loner)]
    assert scripts.run(rds, commands.report_many(calls)) == ["completed", "completed"]
    assert tm.get_task_status(child) is TaskStatus.QUEUED
    assert rds.llen(tm.keys.outbox) == 1  # the remote dependent's delivery


def test_report_many_sends_only_the_arguments_its_reports_need(tm, rds):
    """Completions send 4 arguments each (6 when one waited in the worker);
    a batch with a failure sends them all, and each report applies as alone."""
    commands = Commands(tm.keys)
    ids = [tm.register_task("tests.tasks:add", args=(1, 2)) for _ in range(3)]
    c = {t.id: t for t in _claim(tm, rds, 3)}
    plain = [commands.report(i, c[i].token, "completed", b"r") for i in ids[:2]]
    assert commands.report_many(plain).args[1] == 4
    waited = commands.report(ids[2], c[ids[2]].token, "completed", b"r", queued_locally_ms=1500)
    call = commands.report_many([*plain, waited])
    assert call.args[1] == 6 and len(call.args) == 2 + 3 * 6
    failed = commands.report(ids[2], c[ids[2]].token, "failed", _error("x"), retryable=True)
    assert commands.report_many([*plain, failed]).args[1] == 8
    started = float(rds.hget(tm.keys.task(ids[2]), "started_at"))
    assert scripts.run(rds, call) == ["completed"] * 3
    assert float(rds.hget(tm.keys.task(ids[2]), "started_at")) == pytest.approx(started + 1.5)
