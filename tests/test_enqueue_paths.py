"""The fast paths of registration give what the general ones give.

register_task keeps one Blueprint per distinct option set, register_many
builds one per call and streams its chunks, and payloads are assembled from
bytes (serialization.TaskEncoder); each must store the same records, raise
the same errors and survive the same failures as the general path.
"""

from __future__ import annotations

import uuid

import pytest

from taskmesh import SerializationError, TaskManager, TaskPriority, TaskStatus
from taskmesh.registration import new_task_ids
from taskmesh.serialization import Codec
from tests import tasks

pytestmark = pytest.mark.all_backends

# Fields that differ between any two registrations.
_PER_TASK = {b"seq", b"created_at", b"queued_at", b"first_queued_ms", b"payload"}


@pytest.mark.parametrize("codec", [Codec(), Codec(secret=b"s3cret", namespace="ns"),
                                   Codec(max_payload_bytes=1 << 20)], ids=["plain", "secret",
                                                                          "limit"])
@pytest.mark.single_backend
def test_task_encoder_is_byte_for_byte_encode_task(codec):
    cases = [((), {}), ((1, "x", (2, (3,)), [4], None, 1.5), {"a": {"b": (1,)}}),
             ((b"x" * 300,), {}), ((2 ** 70,), {}), (("x" * 70000,), {"q": (1,)}),
             (("\ud800",), {})]
    for func in ("tests.tasks:add", tasks.add, lambda: None):
        encoder = codec.task_encoder(func)
        for args, kwargs in cases:
            for task_id in ("abc", "periodic:nightly:1700000000"):
                fast = encoder.encode(task_id, args, kwargs)
                assert fast == codec.for_payload(task_id).encode_task(func, args, kwargs)


@pytest.mark.single_backend
def test_new_task_ids_are_uuid4_hex():
    ids = new_task_ids(500)
    assert len(set(ids)) == 500
    for task_id in ids:
        assert uuid.UUID(hex=task_id).version == 4 and uuid.UUID(hex=task_id).hex == task_id
    assert new_task_ids(0) == []


@pytest.mark.single_backend
def test_a_kept_blueprint_never_lets_a_bad_type_through(tm):
    tm.register_task(tasks.add, 1, 2, priority=1, max_retries=1, retry_delay=1, timeout=5)
    with pytest.raises(TypeError):
        tm.register_task(tasks.add, 1, 2, priority=True, max_retries=1, retry_delay=1, timeout=5)
    with pytest.raises(TypeError):
        tm.register_task(tasks.add, 1, 2, priority=1, max_retries=1.0, retry_delay=1, timeout=5)
    with pytest.raises(TypeError):
        tm.register_task(tasks.add, 1, 2, priority=1, max_retries=1, retry_delay=True,
                         timeout=5)
    tm.register_task("tests.tasks:add", retry_jitter=False)
    with pytest.raises(TypeError):
        tm.register_task("tests.tasks:add", retry_jitter=0)
    with pytest.raises(TypeError):
        tm.register_task("tests.tasks:add", kwargs={1: 2})
    with pytest.raises(SerializationError):
        tm.register_task("tests.tasks:add", object.__new__(_Unpicklable))
    with pytest.raises(ValueError):
        tm.register_task("tests.tasks:add", task_id="")


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("no")


@pytest.mark.single_backend
def test_register_many_stores_what_register_task_stores(tm, rds):
    options = dict(priority=TaskPriority.HIGH, max_retries=2, timeout=3.0, tags=["t"],
                   metadata={"k": 1}, description="d", queue="q1")
    one = tm.register_task(tasks.add, 1, 2, **options)
    many = tm.register_many(tasks.add, [(1, 2)] * 250, **options)
    assert len(set(many)) == 250
    expected = {k: v for k, v in rds.hgetall(tm.keys.task(one)).items() if k not in _PER_TASK}
    for task_id in many:
        record = rds.hgetall(tm.keys.task(task_id))
        assert {k: v for k, v in record.items() if k not in _PER_TASK} == expected
    assert tm.get_metrics()["queues"]["q1"]["queued"] == 251


def test_register_many_after_a_script_flush(tm, backend, redis_server):
    """Streamed chunks that answer NOSCRIPT are sent again once loaded."""
    tm.register_many("tests.tasks:add", [(1, 2)] * 10)
    if backend.name == "redis":
        redis_server.client().script_flush()
    ids = tm.register_many("tests.tasks:add", [(i, i) for i in range(1234)])
    assert len(ids) == 1234
    assert tm.get_metrics()["totals"]["registered"] == 1244


def test_register_many_bad_item_stores_nothing(tm):
    with pytest.raises(SerializationError):
        tm.register_many("tests.tasks:add", [(1, 2)] * 300 + [(object.__new__(_Unpicklable),)])
    assert tm.get_metrics()["totals"]["registered"] == 0


@pytest.mark.single_backend
def test_a_lost_connection_mid_register_many_loses_nothing(tm, rds):
    """The lane's connection killed between two register_many calls: the
    next call reconnects (or resends), and every task is stored once."""
    tm.register_many("tests.tasks:add", [(1, 2)] * 5)
    rds.client_kill_filter(_type="normal", skipme=True)
    ids = tm.register_many("tests.tasks:add", [(1, 2)] * 500)
    assert len(ids) == 500
    tm.register_task("tests.tasks:add")
    rds.client_kill_filter(_type="normal", skipme=True)
    tm.register_task("tests.tasks:add")
    assert tm.get_metrics()["totals"]["registered"] == 507


@pytest.mark.single_backend
def test_close_releases_the_lane(backend, namespace, rds):
    before = len(rds.client_list())
    manager = TaskManager(backend.url, namespace=namespace)
    manager.register_task("tests.tasks:add")
    manager.register_many("tests.tasks:add", [(1, 2)] * 3)
    manager.close()
    assert len(rds.client_list()) <= before


def test_register_many_deferred_and_tagged(tm):
    """The shared form places like register.lua: deferred tasks PENDING,
    tags indexed, delayed ones SCHEDULED."""
    ids = tm.register_many("tests.tasks:add", [(1, 2)] * 120, defer=True, tags=["bulk"])
    assert {tm.get_task_status(i) for i in ids[::17]} == {TaskStatus.PENDING}
    page = tm.list_tasks(tag="bulk", limit=1000)
    assert sorted(t.id for t in page.tasks) == sorted(ids)
    later = tm.register_many("tests.tasks:add", [(1, 2)] * 3, delay=60)
    assert {tm.get_task_status(i) for i in later} == {TaskStatus.SCHEDULED}


@pytest.mark.single_backend
def test_a_record_at_the_defaults_stores_none_of_them_and_reads_them(tm, rds):
    task_id = tm.register_task(tasks.add, defer=True)
    stored = {k.decode() for k in rds.hkeys(tm.keys.task(task_id))}
    assert not stored & {"executor", "max_retries", "retry_delay", "retry_backoff"}
    info = tm.get_task(task_id)
    assert (info.executor_type, info.max_retries) == ("async", 0)
    # An older record holding the fields reads the same.
    rds.hset(tm.keys.task(task_id), mapping={"executor": "async", "max_retries": "0",
                                             "retry_delay": "1.0", "retry_backoff": "1.0"})
    again = tm.get_task(task_id)
    assert (again.executor_type, again.max_retries) == ("async", 0)
    other = tm.register_task(tasks.add, defer=True, executor_type="thread_pool",
                             max_retries=2, retry_delay=0.5, retry_backoff=2)
    fields = rds.hgetall(tm.keys.task(other))
    assert (fields[b"executor"], fields[b"max_retries"], fields[b"retry_delay"],
            fields[b"retry_backoff"]) == (b"thread_pool", b"2", b"0.5", b"2.0")
    assert tm.get_task(other).executor_type == "thread_pool"
