"""The public names and enum values of SPEC §2 and §10."""

from __future__ import annotations

import dataclasses
import inspect
from enum import IntEnum, StrEnum

import pytest

import taskmesh
from taskmesh import (
    Event,
    EventType,
    TaskError,
    TaskFailedError,
    TaskInfo,
    TaskmeshError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
)

SPEC_NAMES = [
    "TaskManager", "TaskPriority", "TaskStatus", "EventType", "current_task",
    "TaskError", "TaskInfo", "Event", "TaskPage", "PeriodicInfo",
]
SPEC_EXCEPTIONS = [
    "TaskmeshError", "TaskNotFoundError", "SerializationError", "PayloadTooLargeError",
    "PayloadDecodeError", "SignatureError", "UnsafePayloadError", "TaskFailedError",
    "TaskCancelledError", "TaskTimeoutError", "DependencyFailedError", "WorkerLostError",
    "RemoteTaskError", "ProcessCrashedError", "TaskmeshConnectionError",
]


@pytest.mark.parametrize("name", SPEC_NAMES + SPEC_EXCEPTIONS)
def test_spec_names_are_exported(name):
    assert name in taskmesh.__all__
    assert getattr(taskmesh, name) is not None


def test_all_names_resolve():
    for name in taskmesh.__all__:
        assert hasattr(taskmesh, name), name
    assert len(set(taskmesh.__all__)) == len(taskmesh.__all__)


def test_star_import():
    namespace: dict = {}
    exec("from taskmesh import *", namespace)
    for name in SPEC_NAMES + SPEC_EXCEPTIONS:
        assert name in namespace


@pytest.mark.parametrize("name", SPEC_EXCEPTIONS)
def test_exceptions_share_one_root(name):
    exc = getattr(taskmesh, name)
    assert inspect.isclass(exc) and issubclass(exc, Exception)
    assert issubclass(exc, TaskmeshError)


def test_exception_hierarchy():
    assert issubclass(taskmesh.PayloadTooLargeError, taskmesh.SerializationError)
    err = TaskNotFoundError("abc")
    assert err.task_id == "abc" and "abc" in str(err)
    remote = TaskError("ValueError", "boom", None, 1)
    failed = TaskFailedError("t1", remote)
    assert failed.error is remote and failed.task_id == "t1"


def test_task_status_is_lowercase_str_enum():
    assert issubclass(TaskStatus, StrEnum)
    assert [s.name for s in TaskStatus] == [
        "PENDING", "WAITING", "QUEUED", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED",
        "CANCELLED"]
    for status in TaskStatus:
        assert status.value == status.name.lower()
        assert status == status.name.lower()
        assert str(status) == status.name.lower()
    assert TaskStatus("queued") is TaskStatus.QUEUED


def test_event_type_values_are_member_names():
    assert issubclass(EventType, StrEnum)
    assert [e.name for e in EventType] == [
        "TASK_CREATED", "TASK_QUEUED", "TASK_STARTED", "TASK_PROGRESS", "TASK_RETRYING",
        "TASK_COMPLETED", "TASK_FAILED", "TASK_CANCELLED"]
    for event_type in EventType:
        assert event_type.value == event_type.name
        assert str(event_type) == event_type.name


def test_task_priority_ints():
    assert issubclass(TaskPriority, IntEnum)
    assert {p.name: int(p) for p in TaskPriority} == {
        "LOW": 0, "NORMAL": 5, "HIGH": 10, "CRITICAL": 15}
    assert TaskPriority.HIGH > TaskPriority.NORMAL > TaskPriority.LOW


def test_task_info_fields():
    assert dataclasses.is_dataclass(TaskInfo)
    names = {f.name for f in dataclasses.fields(TaskInfo)}
    assert {
        "id", "name", "description", "status", "priority", "queue", "executor_type",
        "dependencies", "attempts", "max_retries", "worker", "created_at", "started_at",
        "finished_at", "progress", "progress_message", "tags", "metadata", "error",
    } <= names


def test_task_error_fields():
    assert [f.name for f in dataclasses.fields(TaskError)][:4] == [
        "type", "message", "traceback", "attempt"]
    err = TaskError("ValueError", "boom", "Traceback...", 2)
    assert (err.type, err.message, err.traceback, err.attempt) == (
        "ValueError", "boom", "Traceback...", 2)


def test_event_fields():
    assert [f.name for f in dataclasses.fields(Event)][:5] == [
        "type", "task_id", "timestamp", "data", "id"]
    event = Event(EventType.TASK_CREATED, "t1", 1.5, {"status": "queued"})
    assert event.id is None


def test_task_manager_signatures():
    init = inspect.signature(taskmesh.TaskManager.__init__).parameters
    assert list(init)[1] == "url" and init["url"].default is None
    for name, default in {"namespace": None, "max_concurrent_tasks": None,
                          "result_ttl": 86400, "secret": None,
                          "max_payload_bytes": 16 * 1024 * 1024,
                          "priority_aging_s": None}.items():
        assert init[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert init[name].default == default

    reg = inspect.signature(taskmesh.TaskManager.register_task).parameters
    assert list(reg)[1] == "func"
    for name, default in {"name": None, "kwargs": None, "priority": TaskPriority.NORMAL,
                          "dependencies": None, "max_retries": 0, "retry_delay": 1.0,
                          "retry_backoff": 1.0, "timeout": None, "description": "",
                          "tags": None, "metadata": None, "executor_type": "async",
                          "queue": "default", "task_id": None, "defer": False,
                          "delay": None, "eta": None, "rate_key": None,
                          "retry_on": None, "retry_jitter": False}.items():
        assert reg[name].default == default, name

    for name in ("execute_task", "wait_for_task", "cancel_task"):
        assert inspect.iscoroutinefunction(getattr(taskmesh.TaskManager, name)), name
    for name in ("execute_task_sync", "wait_for_task_sync", "cancel_task_sync",
                 "get_task_status", "get_task_result", "get_task_error", "get_task_progress",
                 "get_task", "update_task_progress", "register_many", "start_worker",
                 "set_max_concurrent_tasks", "set_rate_limit", "set_priority_aging", "close"):
        fn = getattr(taskmesh.TaskManager, name)
        assert callable(fn) and not inspect.iscoroutinefunction(fn), name
    rate = inspect.signature(taskmesh.TaskManager.set_rate_limit).parameters
    assert list(rate)[1:3] == ["key", "per_second"]
    assert rate["burst"].kind is inspect.Parameter.KEYWORD_ONLY and rate["burst"].default is None
    ex = inspect.signature(taskmesh.TaskManager.execute_task).parameters
    assert ex["wait"].default is False and ex["timeout"].default is None


def test_periodic_api():
    assert dataclasses.is_dataclass(taskmesh.PeriodicInfo)
    assert [f.name for f in dataclasses.fields(taskmesh.PeriodicInfo)] == [
        "name", "cron", "every", "tz", "next_run_at", "last_run_at", "last_task_id"]
    add = inspect.signature(taskmesh.TaskManager.add_periodic).parameters
    assert list(add)[1:4] == ["name", "func", "args"]
    assert add["args"].kind is inspect.Parameter.VAR_POSITIONAL
    for name, default in {"cron": None, "every": None, "tz": "UTC", "kwargs": None}.items():
        assert add[name].kind is inspect.Parameter.KEYWORD_ONLY and add[name].default == default
    assert add["register_options"].kind is inspect.Parameter.VAR_KEYWORD
    for name in ("add_periodic", "remove_periodic", "list_periodic"):
        assert not inspect.iscoroutinefunction(getattr(taskmesh.TaskManager, name)), name


def test_server_busy_error_is_a_store_error():
    """Issue 8: OOM/BUSY replies reach producers as a typed taskmesh error."""
    assert "ServerBusyError" in taskmesh.__all__
    assert issubclass(taskmesh.ServerBusyError, taskmesh.StoreError)


def test_corrupt_record_error_is_a_store_error():
    """Issue 8: unreadable stored fields are a typed error naming the field."""
    assert "CorruptRecordError" in taskmesh.__all__
    assert issubclass(taskmesh.CorruptRecordError, taskmesh.StoreError)


# The exact public surface (issue 14): an accidental export, or a name
# dropped by a refactor, fails here rather than in a user's import.
PUBLIC_API = {
    "CorruptRecordError", "DependencyFailedError", "Event", "EventType",
    "PayloadDecodeError", "PayloadTooLargeError", "PeriodicInfo", "ProcessCrashedError",
    "RemoteTaskError", "ReplicationError", "SerializationError", "ServerBusyError",
    "SignatureError", "StoreError", "Subscription", "TaskCancelledError", "TaskContext",
    "TaskError", "TaskFailedError", "TaskInfo", "TaskManager", "TaskNotFoundError",
    "TaskPage", "TaskPriority", "TaskStatus", "TaskTimeoutError", "TaskmeshConnectionError",
    "TaskmeshError", "UnsafePayloadError", "Worker", "WorkerHandle", "WorkerLostError",
    "WorkerOptions", "current_task", "subscribe",
}


def test_public_api_is_exactly_this():
    assert set(taskmesh.__all__) == PUBLIC_API


def test_payload_errors_share_a_base():
    from taskmesh.exceptions import PayloadError

    for exc in (taskmesh.SerializationError, taskmesh.PayloadTooLargeError,
                taskmesh.PayloadDecodeError):
        assert issubclass(exc, PayloadError) and issubclass(exc, TaskmeshError)
    too_big = taskmesh.PayloadTooLargeError(2048, 1024, part="result")
    assert (too_big.size, too_big.limit, too_big.part) == (2048, 1024, "result")
    assert str(too_big) == "serialized result is 2048 bytes, over max_payload_bytes=1024"
    assert too_big.cause == str(too_big) and too_big.args == (str(too_big),)
    refused = taskmesh.PayloadTooLargeError(10, None)
    assert refused.part == "payload" and "proto-max-bulk-len" in str(refused)
    plain = taskmesh.SerializationError("args[0]", "no pickling")
    assert str(plain) == "cannot serialize args[0]: no pickling" and plain.cause == "no pickling"


def test_executor_type_is_a_str_enum_of_the_accepted_strings():
    from taskmesh.models import EXECUTOR_TYPES, ExecutorType

    assert issubclass(ExecutorType, StrEnum)
    assert EXECUTOR_TYPES == ("async", "sequential", "thread_pool", "process")
    assert [e.value for e in ExecutorType] == list(EXECUTOR_TYPES)
    assert all(type(v) is str for v in EXECUTOR_TYPES)
    assert ExecutorType.THREAD_POOL == "thread_pool" and str(ExecutorType.PROCESS) == "process"


def test_metrics_typeddict_names_every_key(redis_server, namespace):
    """The Metrics TypedDict and the dict get_metrics() builds name the same keys."""
    from taskmesh.metrics import Metrics, QueueMetrics, RuntimeSummary, TaskCounts

    # A real Redis with no worker: memory:// would start its embedded worker,
    # which could run the task before the metrics are read.
    with taskmesh.TaskManager(redis_server.url, namespace=namespace) as tm:
        tm.register_task("tests.tasks:add", 1, 2)
        m = tm.get_metrics()
    assert set(m) | {"notes"} == set(Metrics.__annotations__)
    assert set(m["tasks"]) == set(TaskCounts.__annotations__)
    assert set(m["queues"]["default"]) == set(QueueMetrics.__annotations__)
    assert set(m["runtime_ms"]) == set(RuntimeSummary.__annotations__)
    assert m["tasks"]["queued"] == 1
    assert type(m) is dict  # a TypedDict is a plain dict at runtime
