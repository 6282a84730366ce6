"""Selective retries (SPEC §13, §17): ``retry_on`` by class or qualified name,
subclasses matching, taskmesh's own errors by their class; ``retry_jitter``
spreading each delay over [0.5, 1.5] x the computed one."""

from __future__ import annotations

import json

import pytest

from taskmesh import EventType, TaskFailedError, TaskStatus, TaskTimeoutError
from tests import flow_tasks as ft
from tests.conftest import namespace_snapshot

WAIT = 60.0


def _attempts(rds, key):
    return [int(v.decode().split()[0]) for v in rds.lrange(key, 0, -1)]


@pytest.mark.parametrize("retry_on", [
    (ft.TransientError,),
    ("tests.flow_tasks.TransientError",),
    ft.TransientError,  # a single class, like `except`
    [ValueError, "tests.flow_tasks.TransientError"],
])
def test_listed_failure_is_retried(tm, rds, redis_server, namespace, worker_factory, retry_on):
    key = f"{namespace}:a"
    t = tm.register_task(ft.raise_error, redis_server.url, key, "transient", 3, max_retries=5,
                         retry_delay=0.01, retry_on=retry_on)
    worker_factory()
    assert tm.wait_for_task_sync(t, timeout=WAIT) == 3
    assert _attempts(rds, key) == [1, 2, 3]
    assert tm.get_metrics()["totals"]["retried"] == 2


def test_subclass_of_a_listed_class_is_retried(tm, rds, redis_server, namespace,
                                               worker_factory):
    key = f"{namespace}:a"
    t = tm.register_task(ft.raise_error, redis_server.url, key, "flaky", 2, max_retries=5,
                         retry_delay=0.01, retry_on=("tests.flow_tasks.TransientError",))
    worker_factory()
    assert tm.wait_for_task_sync(t, timeout=WAIT) == 2


@pytest.mark.parametrize("retry_on", [(ft.TransientError,), ("tests.flow_tasks.FlakyNetworkError",)])
def test_unlisted_failure_fails_at_once(tm, rds, redis_server, namespace, worker_factory,
                                        retry_on):
    """PermanentError is not listed; TransientError (a parent of the listed
    FlakyNetworkError) does not match a subclass either."""
    key = f"{namespace}:a"
    kind = "permanent" if retry_on[0] is ft.TransientError else "transient"
    t = tm.register_task(ft.raise_error, redis_server.url, key, kind, max_retries=5,
                         retry_delay=0.01, retry_on=retry_on)
    worker_factory()
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(t, timeout=WAIT)
    assert info.value.error.type == ("PermanentError" if kind == "permanent" else "TransientError")
    assert info.value.error.attempt == 1
    assert _attempts(rds, key) == [1]
    assert tm.get_task(t).status is TaskStatus.FAILED
    assert tm.get_metrics()["totals"]["retried"] == 0


def test_builtin_exceptions_by_bare_or_qualified_name(tm, rds, redis_server, namespace,
                                                      worker_factory):
    ids = [tm.register_task(ft.raise_error, redis_server.url, f"{namespace}:{i}", "value", 2,
                            max_retries=2, retry_delay=0.01, retry_on=(name,))
           for i, name in enumerate(["ValueError", "builtins.ValueError", "builtins.Exception"])]
    worker_factory()
    for t in ids:
        assert tm.wait_for_task_sync(t, timeout=WAIT) == 2


@pytest.mark.parametrize("retry_on", [(TaskTimeoutError,), ("taskmesh.TaskTimeoutError",)])
def test_timeouts_match_by_their_taskmesh_class(tm, rds, redis_server, namespace,
                                                worker_factory, retry_on):
    key = f"{namespace}:a"
    t = tm.register_task(ft.sleep_then_ok, redis_server.url, key, 1.5, timeout=0.3,
                         max_retries=2, retry_delay=0.01, retry_on=retry_on)
    worker_factory()
    assert tm.wait_for_task_sync(t, timeout=WAIT) == 2
    assert tm.get_task(t).attempts == 2


def test_timeout_not_listed_is_not_retried(tm, redis_server, namespace, worker_factory):
    t = tm.register_task(ft.sleep_then_ok, redis_server.url, f"{namespace}:a", 1.5, timeout=0.3,
                         max_retries=2, retry_delay=0.01, retry_on=(ValueError,))
    worker_factory()
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(t, timeout=WAIT)
    assert info.value.error.type == "TaskTimeoutError" and info.value.error.attempt == 1


def test_process_child_failures_match_too(tm, rds, redis_server, namespace, worker_factory):
    """The error record with the exception's classes comes from the child."""
    key = f"{namespace}:a"
    retried = tm.register_task(ft.raise_error, redis_server.url, key, "flaky", 2,
                               max_retries=3, retry_delay=0.01, executor_type="process",
                               retry_on=(ft.TransientError,))
    final = tm.register_task(ft.raise_error, redis_server.url, f"{namespace}:b", "permanent",
                             max_retries=3, retry_delay=0.01, executor_type="process",
                             retry_on=(ft.TransientError,))
    worker_factory("--processes", "1")
    assert tm.wait_for_task_sync(retried, timeout=WAIT) == 2
    with pytest.raises(TaskFailedError):
        tm.wait_for_task_sync(final, timeout=WAIT)
    assert tm.get_task(final).attempts == 1


def test_names_are_stored_canonical(tm, rds):
    t = tm.register_task(ft.stamp, "redis://x", "k", "l", defer=True,
                         retry_on=(ft.FlakyNetworkError, "taskmesh.TaskTimeoutError",
                                   "ValueError", "workeronly.errors.Throttled"))
    stored = json.loads(rds.hget(tm.keys.task(t), "retry_on"))
    assert stored == sorted(["tests.flow_tasks.FlakyNetworkError",
                             "taskmesh.exceptions.TaskTimeoutError", "builtins.ValueError",
                             "workeronly.errors.Throttled"])
    plain = tm.register_task(ft.stamp, "redis://x", "k", "l", defer=True)
    assert rds.hget(tm.keys.task(plain), "retry_on") is None


@pytest.mark.parametrize("retry_on, exc_types", [
    ((int,), (TypeError, ValueError)),           # a class, not an exception class
    ((object,), (TypeError, ValueError)),
    (("builtins.int",), (TypeError, ValueError)),
    (("json.dumps",), (TypeError, ValueError)),  # a function, not a class
    (("tests.flow_tasks.NoSuchError",), (ValueError,)),
    (("not a name",), (ValueError,)),
    (("nodots",), (ValueError,)),
    (("a..b",), (ValueError,)),
    (("",), (ValueError,)),
    ((42,), (TypeError,)),
    (42, (TypeError,)),
    ({"x": ValueError}, (TypeError,)),
])
def test_bad_retry_on_stores_nothing(tm, rds, namespace, retry_on, exc_types):
    tm.register_task(ft.stamp, "redis://x", "k", "ok")
    before = namespace_snapshot(rds, namespace)
    for exc_type in exc_types:
        with pytest.raises(exc_type):
            tm.register_task(ft.stamp, "redis://x", "k", "bad", retry_on=retry_on)
        with pytest.raises(exc_type):
            tm.register_many(ft.stamp, [("redis://x", "k", "bad")], retry_on=retry_on)
    assert namespace_snapshot(rds, namespace) == before


@pytest.mark.parametrize("jitter", ["yes", 1, None])
def test_retry_jitter_must_be_a_bool(tm, rds, namespace, jitter):
    before = namespace_snapshot(rds, namespace)
    with pytest.raises(TypeError):
        tm.register_task(ft.stamp, "redis://x", "k", "bad", retry_jitter=jitter)
    assert namespace_snapshot(rds, namespace) == before


def _retry_waits(tm, task_id):
    """(computed delay, measured wait) of each retry: TASK_RETRYING carries
    the delay; the next TASK_STARTED is when the retry was claimed. Both
    timestamps come from Redis TIME."""
    events = [e for e in tm.get_events(count=10_000) if e.task_id == task_id]
    out = []
    for i, e in enumerate(events):
        if e.type is EventType.TASK_RETRYING:
            started = next(n for n in events[i + 1:] if n.type is EventType.TASK_STARTED)
            out.append((e.data["delay"], started.timestamp - e.timestamp))
    return out


def test_jitter_spreads_delays_within_half_and_one_and_a_half(tm, redis_server, namespace,
                                                              worker_factory):
    t = tm.register_task(ft.raise_error, redis_server.url, f"{namespace}:a", "value",
                         max_retries=10, retry_delay=0.3, retry_backoff=1.0, retry_jitter=True)
    plain = tm.register_task(ft.raise_error, redis_server.url, f"{namespace}:b", "value",
                             max_retries=3, retry_delay=0.3)
    worker_factory()
    for task_id in (t, plain):
        with pytest.raises(TaskFailedError):
            tm.wait_for_task_sync(task_id, timeout=WAIT)

    waits = _retry_waits(tm, t)
    assert len(waits) == 10
    delays = [d for d, _ in waits]
    assert all(0.15 - 1e-9 <= d <= 0.45 + 1e-9 for d in delays), delays
    assert len({round(d, 6) for d in delays}) >= 8  # spread, not one value
    assert min(delays) < 0.3 < max(delays)  # both sides of the base delay
    for delay, waited in waits:  # the retry really waited the jittered delay
        assert delay - 0.002 <= waited <= delay + 0.5, (delay, waited)
    # Without jitter the delay is exactly the computed one.
    assert [d for d, _ in _retry_waits(tm, plain)] == [0.3, 0.3, 0.3]


def test_retry_task_keeps_the_retry_policy(tm, rds):
    old = tm.register_task(ft.stamp, "redis://x", "k", "l", defer=True, rate_key="api",
                           retry_on=(ft.TransientError,), retry_jitter=True)
    assert tm.cancel_task_sync(old)
    new = tm.retry_task(old)
    fields = [b"retry_on", b"retry_jitter", b"rate_key"]
    assert rds.hmget(tm.keys.task(new), fields) == rds.hmget(tm.keys.task(old), fields)
    assert rds.hget(tm.keys.task(new), "retry_jitter") == b"1"
