"""Finding tasks and running one again (SPEC §11, §17): list_tasks orderings,
filters and cursors, retry_task, and TaskError.exception(), against the real
Redis and real worker processes."""

from __future__ import annotations

import asyncio
import base64

import pytest

from taskmesh import (
    DependencyFailedError,
    ProcessCrashedError,
    RemoteTaskError,
    TaskError,
    TaskmeshError,
    WorkerLostError,
    TaskManager,
    TaskNotFoundError,
    TaskPage,
    TaskPriority,
    TaskStatus,
    TaskTimeoutError,
)
from taskmesh import scripts
from tests import listing_tasks as lt
from tests import tasks
from tests.helpers import wait_until

pytestmark = pytest.mark.all_backends  # single Redis and Redis Cluster (conftest BACKENDS)

WAIT = 20.0
S = TaskStatus


def ids(page: TaskPage) -> list[str]:
    return [t.id for t in page.tasks]


def all_pages(tm: TaskManager, **filters) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = tm.list_tasks(cursor=cursor, **filters)
        pages.append(ids(page))
        if page.cursor is None:
            return pages
        cursor = page.cursor
        assert len(pages) < 1000, "paging does not end"


def run_to_end(tm: TaskManager, worker_factory, task_ids: list[str], *flags: str) -> None:
    worker_factory("--burst", *flags).wait(WAIT)
    for task_id in task_ids:
        assert tm.get_task_status(task_id).is_terminal


def hgetall_calls(rds) -> int:
    stats = rds.info("commandstats").get("cmdstat_hgetall")
    return int(stats["calls"]) if stats else 0


# ---- orderings ------------------------------------------------------------------------

@pytest.mark.single_backend  # FIFO across shards is per shard
def test_queued_tasks_come_in_claim_order_across_queues(tm):
    plan = [("a", TaskPriority.LOW), ("b", TaskPriority.HIGH), ("a", TaskPriority.HIGH),
            ("b", TaskPriority.NORMAL), ("a", TaskPriority.NORMAL), ("b", TaskPriority.HIGH)]
    registered = [(tm.register_task(tasks.add, 1, 1, queue=q, priority=p), p)
                  for q, p in plan]
    # Claim order: priority first, then the global registration order.
    expected = [i for i, _ in sorted(registered, key=lambda r: -r[1])]
    page = tm.list_tasks(status=S.QUEUED)
    assert ids(page) == expected and page.cursor is None
    assert ids(tm.list_tasks(status="queued", queue="b")) == [
        i for i in expected if tm.get_task(i).queue == "b"]


@pytest.mark.single_backend  # claim order across shards is per shard (README, priority bound)
def test_queued_order_is_the_order_a_worker_claims(tm, worker_factory, redis_server):
    key = f"order-{tm.namespace}"
    label_of = {}
    for n, priority in enumerate([0, 10, 5, 10, 15, 0, 5]):
        task_id = tm.register_task("tests.tasks:record", redis_server.url, key, n,
                                   priority=priority, queue="a" if n % 2 else "b")
        label_of[task_id] = n
    listed = [label_of[i] for i in ids(tm.list_tasks(status=S.QUEUED))]
    worker_factory("--burst", "--queues", "a,b", "--concurrency", "1").wait(WAIT)
    client = redis_server.client()
    try:
        ran = [int(x) for x in client.lrange(key, 0, -1)]
    finally:
        client.delete(key)
        client.close()
    assert listed == ran == [4, 1, 3, 2, 6, 0, 5]


@pytest.mark.single_backend  # "newest first" across shards follows each shard's own seq
def test_listing_spans_kinds_queued_then_unfinished_then_finished(tm, worker_factory):
    # Finished ones, finishing one after another (a chain).
    first = tm.register_task(tasks.add, 1, 1)
    second = tm.register_task(tasks.fail, "x", dependencies=[first])
    third = tm.register_task(tasks.add, 3, 3, dependencies=[second])  # cancelled by cascade
    run_to_end(tm, worker_factory, [first, second, third])
    finished = [first, second, third]
    # Unfinished ones: PENDING (deferred) and WAITING, interleaved.
    deferred = tm.register_task(tasks.add, 0, 0, defer=True)
    waiting = tm.register_task(tasks.add, 0, 1, dependencies=[deferred])
    deferred2 = tm.register_task(tasks.add, 0, 2, defer=True)
    # Queued ones, low priority first.
    q_low = tm.register_task(tasks.add, 1, 2, priority=TaskPriority.LOW)
    q_high = tm.register_task(tasks.add, 1, 3, priority=TaskPriority.HIGH)

    listed = ids(tm.list_tasks())
    assert listed[:2] == [q_high, q_low]
    assert listed[2:5] == [deferred2, waiting, deferred]
    finished_listed = listed[5:]
    assert sorted(finished_listed) == sorted(finished)
    stamps = [tm.get_task(i).finished_at for i in finished_listed]
    assert stamps == sorted(stamps, reverse=True), "most recently finished first"
    if len(set(stamps)) == 3:
        assert finished_listed == [third, second, first]
    # A status list picks its kinds and keeps the same order.
    assert ids(tm.list_tasks(status=[S.COMPLETED, S.QUEUED, S.WAITING])) == [
        q_high, q_low, waiting, first]


@pytest.mark.single_backend  # "newest first" across shards follows each shard's own seq
def test_running_and_scheduled_are_listed_newest_first(tm, worker_factory, redis_server):
    retried = tm.register_task(tasks.fail, "again", max_retries=1, retry_delay=30)
    worker_factory()
    wait_until(lambda: tm.get_task_status(retried) is S.SCHEDULED, WAIT, what="retry due later")
    slow = tm.register_task("tests.semantics_tasks:async_sleep", 30)
    wait_until(lambda: tm.get_task_status(slow) is S.RUNNING, WAIT, what="task running")
    assert ids(tm.list_tasks(status=[S.RUNNING, S.SCHEDULED])) == [slow, retried]
    assert ids(tm.list_tasks(status=S.SCHEDULED)) == [retried]
    asyncio.run(tm.cancel_task(slow))
    asyncio.run(tm.cancel_task(retried))
    wait_until(lambda: tm.get_task_status(slow) is S.CANCELLED, WAIT, what="cancelled")
    assert ids(tm.list_tasks(status=[S.RUNNING, S.SCHEDULED])) == []
    assert set(ids(tm.list_tasks(status=S.CANCELLED))) == {slow, retried}


# ---- filters ---------------------------------------------------------------------------

def test_filters_combine_with_and(tm, worker_factory):
    a = tm.register_task(tasks.fail, "a", tags=["billing", "eu"], metadata={"n": 1})
    b = tm.register_task(tasks.add, 1, 2, tags=["billing"], metadata={"n": "1"})
    c = tm.register_task(tasks.fail, "c", tags=["eu"], metadata={"n": 1, "x": [1, 2]},
                         queue="other")
    d = tm.register_task(tasks.add, 3, 4, metadata={"n": 1})
    worker_factory("--burst", "--queues", "default,other").wait(WAIT)

    assert set(ids(tm.list_tasks(tag="billing"))) == {a, b}
    assert ids(tm.list_tasks(status=S.FAILED, tag="billing")) == [a]
    assert set(ids(tm.list_tasks(status="failed"))) == {a, c}
    assert ids(tm.list_tasks(queue="other")) == [c]
    assert ids(tm.list_tasks(queue="other", tag="billing")) == []
    # Metadata matches the JSON form exactly: 1 is not "1".
    assert set(ids(tm.list_tasks(metadata={"n": 1}))) == {a, c, d}
    assert ids(tm.list_tasks(metadata={"n": "1"})) == [b]
    assert ids(tm.list_tasks(metadata={"x": [1, 2]})) == [c]
    assert ids(tm.list_tasks(metadata={"n": 1}, tag="eu", status=S.FAILED, queue="default")) == [a]
    assert ids(tm.list_tasks(tag="nobody")) == []
    info = tm.list_tasks(tag="eu", status=S.FAILED, queue="other").tasks[0]
    assert info.id == c and info.tags == ["eu"] and info.error is not None


@pytest.mark.single_backend  # inspects raw keys on the single server
def test_a_big_tag_filters_the_status_walk(tm):
    """Above 2000 ids a tag no longer sorts its own index: the status walk is
    filtered by it instead, with the same order and cursors."""
    tagged = tm.register_many(tasks.add, [(i, i) for i in range(2050)], tags=["bulk"])
    plain = tm.register_many(tasks.add, [(i, 0) for i in range(30)])
    deferred = tm.register_task(tasks.add, 0, 0, tags=["bulk"], defer=True)
    assert tm._client.zcard(tm.keys.tag("bulk")) == 2051
    pages = all_pages(tm, tag="bulk", limit=1000)
    flat = [i for page in pages for i in page]
    assert flat == tagged + [deferred]
    assert [len(p) for p in pages] == [1000, 1000, 51]
    assert not set(flat) & set(plain)
    assert ids(tm.list_tasks(tag="bulk", status=S.PENDING)) == [deferred]


# ---- paging ------------------------------------------------------------------------------

def test_paging_visits_every_task_exactly_once_in_listing_order(tm, worker_factory):
    done = tm.register_many(tasks.add, [(i, 1) for i in range(12)])
    failed = [tm.register_task(tasks.fail, f"f{i}") for i in range(5)]
    run_to_end(tm, worker_factory, done + failed)
    deferred = [tm.register_task(tasks.add, i, 2, defer=True) for i in range(9)]
    queued = [tm.register_task(tasks.add, i, 3, priority=i % 3 * 5) for i in range(15)]
    everything = set(done + failed + deferred + queued)

    whole = tm.list_tasks(limit=1000)
    assert whole.cursor is None and set(ids(whole)) == everything and len(ids(whole)) == 41
    for limit in (1, 7, 10, 41):
        pages = all_pages(tm, limit=limit)
        flat = [i for page in pages for i in page]
        assert flat == ids(whole), f"limit={limit}"
        assert all(len(p) == limit for p in pages[:-1])
    # A last page that is exactly full still says there is no more.
    pages = all_pages(tm, limit=41)
    assert len(pages) == 1 and pages[0] == ids(whole)
    assert tm.list_tasks(limit=1000, status=S.QUEUED).cursor is None


@pytest.mark.single_backend  # inspects raw keys on the single server
def test_equal_scores_page_exactly(tm, rds):
    """Tasks that finished in the same millisecond share a score: the
    cursor breaks the tie by id, even across more ties than one read chunk."""
    ids_ = [tm.register_task(tasks.add, i, i, defer=True) for i in range(450)]
    for task_id in ids_:
        tm.cancel_task_sync(task_id)
    key = tm.keys.done("cancelled")
    rds.zadd(key, {task_id: 4503599627370496 + 1_000_000 for task_id in ids_})
    flat = [i for page in all_pages(tm, status=S.CANCELLED, limit=37) for i in page]
    assert flat == sorted(ids_, reverse=True)


@pytest.mark.single_backend  # inspects raw keys on the single server
def test_expired_records_drop_out_of_listings_and_indexes(redis_server, namespace, rds,
                                                          worker_factory):
    with TaskManager(redis_server.url, namespace=namespace, result_ttl=1) as tm:
        short = [tm.register_task(tasks.add, i, i, tags=["t"]) for i in range(3)]
        run_to_end(tm, worker_factory, short)
    with TaskManager(redis_server.url, namespace=namespace) as tm:
        kept = tm.register_task(tasks.add, 9, 9, tags=["t"])
        run_to_end(tm, worker_factory, [kept])
        # Enough untagged tasks that "t" is sparse: listed from its own index.
        others = tm.register_many(tasks.add, [(i, i) for i in range(50)], defer=True)
        wait_until(lambda: not any(rds.exists(tm.keys.task(i)) for i in short), 10,
                   what="records expired")
        assert ids(tm.list_tasks()) == others[::-1] + [kept]
        # Walking the done index removed the dead entries on the way ...
        assert rds.zrange(tm.keys.done("completed"), 0, -1) == [kept.encode()]
        assert ids(tm.list_tasks(tag="t")) == [kept]
        # ... and so did the small-tag listing for its own index.
        assert rds.zrange(tm.keys.tag("t"), 0, -1) == [kept.encode()]


@pytest.mark.single_backend  # inspects raw keys on the single server
def test_the_reaper_removes_expired_ids_from_tag_indexes(redis_server, namespace, rds,
                                                         worker_factory):
    with TaskManager(redis_server.url, namespace=namespace, result_ttl=1) as tm:
        task_id = tm.register_task(tasks.add, 1, 1, tags=["x", "y"])
        run_to_end(tm, worker_factory, [task_id])
        assert rds.zcard(tm.keys.tag_expiry) == 1
        wait_until(lambda: not rds.exists(tm.keys.task(task_id)), 10, what="record expired")
        scripts.run(tm._client, tm.commands.recover())
        assert not rds.exists(tm.keys.tag("x")) and not rds.exists(tm.keys.tag("y"))
        assert rds.zcard(tm.keys.tag_expiry) == 0


@pytest.mark.single_backend  # inspects raw keys on the single server
def test_a_page_reads_about_limit_records_however_many_tasks_exist(tm, rds):
    tm.register_many(tasks.add, [(i, i) for i in range(30)], tags=["p"])
    before = hgetall_calls(rds)
    assert len(tm.list_tasks(limit=10).tasks) == 10
    small = hgetall_calls(rds) - before
    tm.register_many(tasks.add, [(i, i) for i in range(3000)], tags=["p"])
    before = hgetall_calls(rds)
    page = tm.list_tasks(limit=10)
    big = hgetall_calls(rds) - before
    assert len(page.tasks) == 10
    assert small == big == 11  # the page, plus one to know that more follow
    before = hgetall_calls(rds)
    assert len(tm.list_tasks(limit=10, tag="p", status=S.QUEUED).tasks) == 10
    assert hgetall_calls(rds) - before == 11


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [0, -1, 1001, 10_000, True, 2.5, "10"])
def test_limit_out_of_range_is_a_value_error(tm, limit):
    with pytest.raises(ValueError):
        tm.list_tasks(limit=limit)


@pytest.mark.parametrize("status", ["bogus", ["queued", "nope"], "QUEUEDX", []])
def test_unknown_status_is_a_value_error(tm, status):
    with pytest.raises(ValueError):
        tm.list_tasks(status=status)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "", "not a cursor!", "%%%", _b64(b"not json"), _b64(b"[1, 2]"),
    _b64(b'[1, "z", "5", "abc"]'), _b64(b'[1, "q", "notanumber", "abc"]'),
    _b64(b'[9, "q", "5", "abc"]'), _b64(b'[1, "q", "5", ""]'),
])
def test_malformed_cursor_is_a_value_error(tm, cursor):
    tm.register_task(tasks.add, 1, 1)
    with pytest.raises(ValueError):
        tm.list_tasks(cursor=cursor)


def test_status_values_and_lists_are_accepted(tm):
    task_id = tm.register_task(tasks.add, 1, 1, defer=True)
    for status in ("pending", S.PENDING, ["pending"], (S.PENDING, "queued")):
        assert ids(tm.list_tasks(status=status)) == [task_id]


# ---- retry_task --------------------------------------------------------------------------

@pytest.mark.single_backend  # inspects raw keys on the single server
def test_retry_of_a_failed_task_copies_function_arguments_and_options(tm, worker_factory, rds):
    old = tm.register_task(lt.raise_custom, "bad input", 7, name="importer",
                           priority=TaskPriority.HIGH, max_retries=0, retry_delay=0.5,
                           retry_backoff=2.0, timeout=30.0, description="nightly",
                           tags=["billing"], metadata={"customer": "acme"},
                           executor_type="thread_pool", queue="jobs")
    worker_factory("--burst", "--queues", "jobs").wait(WAIT)
    assert tm.get_task_status(old) is S.FAILED
    before = rds.hgetall(tm.keys.task(old))

    new = tm.retry_task(old)
    assert new != old
    info, was = tm.get_task(new), tm.get_task(old)
    assert info.status is S.QUEUED and info.dependencies == []
    for field in ("name", "description", "priority", "queue", "executor_type", "max_retries",
                  "tags"):
        assert getattr(info, field) == getattr(was, field), field
    assert info.metadata == {"customer": "acme", "retry_of": old}
    assert rds.hget(tm.keys.task(new), "timeout") == b"30.0"
    assert rds.hget(tm.keys.task(new), "retry_backoff") == b"2.0"
    assert rds.hgetall(tm.keys.task(old)) == before  # terminal tasks never change

    worker_factory("--burst", "--queues", "jobs").wait(WAIT)
    error = tm.get_task_error(new)
    assert (error.type, error.message) == ("CustomError", "('bad input', 7)")
    # A retry of a retry names the one it retried.
    again = tm.retry_task(new, priority=TaskPriority.LOW, queue="elsewhere")
    info = tm.get_task(again)
    assert info.metadata["retry_of"] == new
    assert (info.priority, info.queue) == (TaskPriority.LOW, "elsewhere")


def test_retry_of_a_cancelled_task_runs_it(tm, worker_factory):
    blocker = tm.register_task(tasks.add, 0, 0, defer=True)
    old = tm.register_task(tasks.add, 20, 22, dependencies=[blocker], tags=["x"])
    assert asyncio.run(tm.cancel_task(old)) is True
    new = tm.retry_task(old)
    assert tm.get_task(new).dependencies == [] and tm.get_task(new).tags == ["x"]
    worker_factory("--burst").wait(WAIT)
    assert tm.get_task_result(new) == 42
    assert tm.get_task_status(blocker) is S.PENDING  # not a dependency any more


def test_retry_of_a_task_cancelled_by_its_dependency(tm, worker_factory):
    dep = tm.register_task(tasks.fail, "dep")
    worker_factory("--burst").wait(WAIT)
    child = tm.register_task(tasks.add, 1, 2, dependencies=[dep])
    assert tm.get_task_status(child) is S.CANCELLED
    new = tm.retry_task(child)
    worker_factory("--burst").wait(WAIT)
    assert tm.get_task_result(new) == 3


def test_retry_refuses_unfinished_and_completed_tasks_and_unknown_ids(tm, worker_factory):
    done = tm.register_task(tasks.add, 1, 1)
    worker_factory("--burst").wait(WAIT)
    pending = tm.register_task(tasks.add, 1, 1, defer=True)
    queued = tm.register_task(tasks.add, 1, 1)
    for task_id in (done, pending, queued):
        with pytest.raises(ValueError):
            tm.retry_task(task_id)
    with pytest.raises(TaskNotFoundError):
        tm.retry_task("no-such-task")
    failed = tm.register_task(tasks.fail, "x", defer=True)
    tm.cancel_task_sync(failed)
    with pytest.raises(ValueError):
        tm.retry_task(failed, priority=300)
    with pytest.raises(ValueError):
        tm.retry_task(failed, queue="bad queue")


# ---- TaskError.exception() ------------------------------------------------------------------

def test_exception_rebuilds_the_tasks_own_exception(tm, worker_factory):
    custom = tm.register_task(lt.raise_custom, "nope", 42)
    builtin = tm.register_task(lt.raise_value_error, "bad value")
    worker_factory("--burst").wait(WAIT)
    exc = tm.get_task_error(custom).exception()
    assert type(exc) is lt.CustomError and exc.code == 42 and exc.args == ("nope", 42)
    exc = tm.get_task_error(builtin).exception()
    assert type(exc) is ValueError and str(exc) == "bad value"
    # Through every way a producer meets the error.
    assert type(tm.get_task(custom).error.exception()) is lt.CustomError
    assert type(tm.list_tasks(status=S.FAILED).tasks[0].error.exception()) in (
        lt.CustomError, ValueError)
    with pytest.raises(Exception) as failed:
        tm.wait_for_task_sync(custom, timeout=WAIT)
    assert type(failed.value.error.exception()) is lt.CustomError


def test_exception_of_an_unknown_class_is_a_remote_task_error(tm, worker_factory):
    ghost = tm.register_task(lt.raise_ghost, "from the worker only")
    unpicklable = tm.register_task(lt.raise_unpicklable, "holds a lock")
    worker_factory("--burst").wait(WAIT)
    for task_id, type_name, message in [(ghost, "GhostError", "from the worker only"),
                                        (unpicklable, "UnpicklableError", "holds a lock")]:
        error = tm.get_task_error(task_id)
        exc = error.exception()
        assert isinstance(exc, RemoteTaskError)
        assert (exc.type, exc.message) == (type_name, message)
        assert exc.traceback == error.traceback and type_name in exc.traceback


def test_exception_of_taskmeshs_own_errors(tm, worker_factory):
    timed_out = tm.register_task(lt.sleep_s, 5, timeout=0.2)
    dep = tm.register_task(tasks.fail, "dep")
    child = tm.register_task(tasks.add, 1, 1, dependencies=[dep])
    worker_factory("--burst").wait(WAIT)
    exc = tm.get_task_error(timed_out).exception()
    assert isinstance(exc, TaskTimeoutError)
    exc = tm.get_task_error(child).exception()
    assert isinstance(exc, DependencyFailedError) and dep in str(exc)


@pytest.mark.single_backend  # its managers use the single server
def test_a_producer_with_a_secret_never_unpickles_an_unsigned_exception(
        redis_server, namespace, worker_factory, tmp_path):
    marker = tmp_path / "unpickled"
    with TaskManager(redis_server.url, namespace=namespace, secret="s3cret") as tm:
        # The worker has no secret: it runs the signed payload unchecked and
        # stores its exception unsigned.
        task_id = tm.register_task(lt.raise_marker, str(marker), "unsigned")
        worker_factory("--burst").wait(WAIT)
        exc = tm.get_task_error(task_id).exception()
        assert isinstance(exc, RemoteTaskError) and exc.type == "MarkerError"
        assert not marker.exists(), "an unsigned exception was unpickled"

        signed = tm.register_task(lt.raise_marker, str(marker), "signed")
        worker_factory("--burst", "--secret", "s3cret").wait(WAIT)
        exc = tm.get_task_error(signed).exception()
        assert type(exc) is RuntimeError and str(exc) == "signed"
        assert marker.exists()  # the control: a signed one is loaded
    marker.unlink()
    with TaskManager(redis_server.url, namespace=namespace, secret="other") as wrong:
        assert isinstance(wrong.get_task_error(signed).exception(), RemoteTaskError)
        assert not marker.exists(), "an exception signed with another secret was unpickled"


def test_no_pickle_workers_store_no_pickled_exception(tm, worker_factory, rds):
    task_id = tm.register_task("tests.listing_tasks:raise_value_error", "plain")
    worker_factory("--burst", "--no-pickle").wait(WAIT)
    assert rds.hget(tm.keys.task(task_id), "error_exc") is None
    exc = tm.get_task_error(task_id).exception()
    assert isinstance(exc, RemoteTaskError) and exc.message == "plain"


# ---- homes added by flow control and delays ----------------------------------------------

@pytest.mark.single_backend  # rate limits are read from shard 0 only (README)
def test_parked_and_delayed_tasks_are_listed(tm, worker_factory):
    """A task waiting for a rate-limit token is QUEUED (parked, listed after
    the claimable ones); a delayed task is SCHEDULED."""
    tm.set_rate_limit("slow", 0.05, burst=1)
    limited = [tm.register_task(tasks.add, i, i, rate_key="slow") for i in range(3)]
    delayed = tm.register_task(tasks.add, 1, 1, delay=60)
    worker_factory()
    wait_until(lambda: sum(tm.get_task_status(i).is_terminal for i in limited) == 1, WAIT,
               what="one token spent")
    wait_until(lambda: tm._client.zcard(tm.keys.parked("default")) == 2, WAIT,
               what="the others parked")
    queued_now = tm.register_task(tasks.add, 5, 5, defer=True)
    parked = [i for i in limited if not tm.get_task_status(i).is_terminal]
    assert ids(tm.list_tasks(status=S.QUEUED)) == parked
    assert all(tm.get_task_status(i) is S.QUEUED for i in parked)
    assert ids(tm.list_tasks(status=S.SCHEDULED)) == [delayed]
    listed = ids(tm.list_tasks())
    assert listed[:4] == parked + [queued_now, delayed]
    assert ids(tm.list_tasks(status=S.QUEUED, queue="default", limit=1, cursor=tm.list_tasks(
        status=S.QUEUED, limit=1).cursor)) == parked[1:]


def test_exception_of_a_process_task_is_rebuilt(tm, worker_factory):
    task_id = tm.register_task(lt.raise_custom, "in a child", 3, executor_type="process")
    worker_factory("--burst", "--processes", "1").wait(WAIT)
    exc = tm.get_task_error(task_id).exception()
    assert type(exc) is lt.CustomError and exc.code == 3


@pytest.mark.parametrize("cls", [TaskTimeoutError, WorkerLostError, DependencyFailedError,
                                 ProcessCrashedError])
def test_taskmeshs_own_error_types_come_back_as_themselves(cls):
    exc = TaskError(cls.__name__, "why", "Traceback ...", 2).exception()
    assert type(exc) is cls and str(exc) == "why"
    other = TaskError("KeyError", "'k'", None, 1).exception()  # no pickle carried
    assert isinstance(other, RemoteTaskError) and other.type == "KeyError"
    assert issubclass(RemoteTaskError, TaskmeshError)


@pytest.mark.single_backend  # inspects raw keys on the single server
def test_retry_copies_flow_options(tm, rds):
    old = tm.register_task(tasks.fail, "x", rate_key="k", retry_on=(ValueError,),
                           retry_jitter=True, defer=True)
    tm.cancel_task_sync(old)
    new = tm.retry_task(old)
    for field in (b"rate_key", b"retry_on", b"retry_jitter"):
        assert rds.hget(tm.keys.task(new), field) == rds.hget(tm.keys.task(old), field) != None


@pytest.mark.single_backend  # its manager is on the single server
def test_a_sharded_namespace_lists_every_shard_merged(redis_server, namespace, worker_factory):
    """Every shard is walked from the same cursor and the pages merge in the
    one listing order (SPEC §14: list_tasks merged)."""
    with TaskManager(redis_server.url, namespace=namespace, shards=3) as tm:
        done = [tm.register_task(tasks.add, i, i, tags=["s"]) for i in range(12)]
        run_to_end(tm, worker_factory, done)
        queued = [tm.register_task(tasks.add, i, 0, priority=(i % 3) * 5, tags=["s"])
                  for i in range(20)]
        deferred = [tm.register_task(tasks.add, i, 1, defer=True) for i in range(10)]
        assert len({tm._shards().of(i) for i in queued}) == 3
        whole = ids(tm.list_tasks(limit=1000))
        # Claim order: priority first; FIFO is exact within a shard (each
        # shard has its own sequence), shards merge by queue score.
        assert sorted(whole[:20]) == sorted(queued)
        priorities = [tm.get_task(i).priority for i in whole[:20]]
        assert priorities == sorted(priorities, reverse=True)
        for shard in range(3):
            mine = [i for i in whole[:20] if tm._shards().of(i) == shard]
            assert mine == sorted(mine, key=lambda i: (-tm.get_task(i).priority,
                                                       queued.index(i)))
        assert sorted(whole[20:30]) == sorted(deferred)
        for shard in range(3):  # newest first within each shard
            mine = [i for i in whole[20:30] if tm._shards().of(i) == shard]
            assert mine == [i for i in deferred[::-1] if tm._shards().of(i) == shard]
        assert sorted(whole[30:]) == sorted(done)
        for limit in (1, 7, 42):
            assert [i for p in all_pages(tm, limit=limit) for i in p] == whole
        assert ids(tm.list_tasks(tag="s", status=S.COMPLETED, limit=1000)) == whole[30:]
