"""Code written for the seed runs on taskmesh (SPEC §16, §17): seed-style unit
tests of ``taskmesh.task_management`` over ``memory://`` (by reference) and
``memory://?serialize=1``, and one seed program run in-process and against
the real Redis with a real worker process."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from unittest.mock import AsyncMock, MagicMock

import pytest

import taskmesh
from taskmesh import EventType, SerializationError, current_task
from taskmesh.task_management import (
    InvalidTaskStateError,
    Task,
    TaskCancellationError,
    TaskDependencyError,
    TaskError,
    TaskExecutionError,
    TaskManager,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    create_task_id,
)
from tests.conftest import REPO_ROOT, namespace_snapshot

WAIT = 20.0
BY_REFERENCE = "memory://"
SERIALIZED = "memory://?serialize=1"


class SeedError(Exception):
    """Importable on every side, so it rebuilds in both modes."""


async def add(a: int, b: int, extra: int = 0) -> int:
    return a + b + extra


def sync_add(a: int, b: int) -> int:
    return a + b


async def fail(message: str) -> None:
    raise SeedError(message)


async def linger(seconds: float = 30.0) -> str:
    await asyncio.sleep(seconds)
    return "done"


def report_progress() -> str:
    current_task().update_progress(0.5, "Halfway done")
    return "ok"


@pytest.fixture(params=[BY_REFERENCE, SERIALIZED], ids=["by-reference", "serialized"])
def seed_tm(request, monkeypatch):
    """A fresh seed TaskManager per test, as WiseFlow's own tests make one."""
    monkeypatch.setenv("TASKMESH_URL", request.param)
    monkeypatch.delenv("TASKMESH_NAMESPACE", raising=False)
    TaskManager._instance = None
    manager = TaskManager(max_concurrent_tasks=2)
    yield manager
    TaskManager._instance = None
    manager.core.close()


@pytest.fixture
def by_reference(seed_tm):
    if seed_tm.core.url != BY_REFERENCE:
        pytest.skip("mocks and closures are kept by reference only on plain memory://")
    return seed_tm


def run(coro):
    return asyncio.run(coro)


# ---- the manager ----------------------------------------------------------------------

def test_singleton_and_seed_defaults(seed_tm):
    assert TaskManager() is seed_tm and TaskManager(max_concurrent_tasks=9) is seed_tm
    assert seed_tm.max_concurrent_tasks == 2 and seed_tm.default_executor_type == "async"
    assert {"sequential", "thread_pool", "async"} <= set(seed_tm.executors)
    assert isinstance(seed_tm.tasks, dict) and len(seed_tm.tasks) == 0
    for view in (seed_tm.pending_tasks, seed_tm.running_tasks, seed_tm.waiting_tasks,
                 seed_tm.completed_tasks, seed_tm.failed_tasks, seed_tm.cancelled_tasks):
        assert len(view) == 0 and list(view) == []
    TaskManager._instance = None
    fresh = TaskManager()
    try:
        assert fresh is not seed_tm and fresh.max_concurrent_tasks == 4
        assert fresh.core.namespace != seed_tm.core.namespace  # a fresh one starts empty
    finally:
        fresh.core.close()


def test_only_an_explicit_cap_changes_the_namespace(monkeypatch, namespace):
    monkeypatch.setenv("TASKMESH_URL", BY_REFERENCE)
    monkeypatch.setenv("TASKMESH_NAMESPACE", namespace)
    TaskManager._instance = None
    first = TaskManager(max_concurrent_tasks=7)
    assert first.get_metrics()["max_concurrent_tasks"] == 7
    TaskManager._instance = None
    second = TaskManager()  # the default 4 leaves the stored cap alone
    try:
        assert second.core.get_metrics()["max_concurrent_tasks"] == 7
        assert second.get_metrics()["max_concurrent_tasks"] == 7
    finally:
        TaskManager._instance = None
        first.core.close()
        second.core.close()


def test_register_task_is_pending_until_executed(seed_tm):
    task_id = seed_tm.register_task("Test Task", sync_add, 1, 2, priority=TaskPriority.HIGH,
                                    description="d", tags=["test", "unit"],
                                    metadata={"meta": "data"})
    other = seed_tm.register_task("Other", sync_add, 3, 4)
    assert run(seed_tm.execute_task(other)) == 7  # the embedded worker is running ...
    task = seed_tm.tasks[task_id]  # ... and the registered task stays PENDING
    assert task.status == TaskStatus.PENDING and task_id in seed_tm.pending_tasks
    assert (task.name, task.priority, task.description, task.tags, task.metadata) == (
        "Test Task", TaskPriority.HIGH, "d", ["test", "unit"], {"meta": "data"})
    assert task.args == (1, 2) and task.kwargs == {} and task.result is None
    assert task_id in seed_tm.tasks and "nope" not in seed_tm.tasks
    assert set(seed_tm.tasks) == {task_id, other} and len(seed_tm.tasks) == 2


def test_mocks_and_closures_are_kept_by_reference(by_reference):
    tm = by_reference
    mock = AsyncMock(return_value="result")
    seen = []
    lock = threading.Lock()  # a closure over state that does not pickle

    def remember(value):
        with lock:
            seen.append(value)
        return seen

    task_id = tm.register_task("Mock", mock, 1, 2, kwargs={"key": "value"})
    assert tm.tasks[task_id].func is mock
    assert run(tm.execute_task(task_id)) == "result"
    mock.assert_called_once_with(1, 2, key="value")
    closure = tm.register_task("Closure", remember, "x")
    assert run(tm.execute_task(closure)) is seen and seen == ["x"]
    assert tm.get_task_result(closure) is seen  # the very object, not a copy


def test_serialize_mode_refuses_what_a_real_redis_would(seed_tm):
    if seed_tm.core.url != SERIALIZED:
        pytest.skip("serialize=1 only")
    lock = threading.Lock()
    with pytest.raises(SerializationError):
        seed_tm.register_task("Mock", add, 1, 2, kwargs={"extra": lock})
    task_id = seed_tm.register_task("Plain", add, 1, 2, kwargs={"extra": 3})
    assert run(seed_tm.execute_task(task_id)) == 6


def test_dependencies_wait_then_pending_then_run(seed_tm):
    first = seed_tm.register_task("Task 1", add, 1, 1)
    second = seed_tm.register_task("Task 2", add, 2, 2, dependencies=[first])
    assert seed_tm.get_task_status(second) == TaskStatus.WAITING
    assert second in seed_tm.waiting_tasks and second not in seed_tm.pending_tasks
    assert not seed_tm.tasks[second].is_ready(seed_tm.completed_tasks)
    assert run(seed_tm.execute_task(first)) == 2
    assert seed_tm.get_task_status(second) == TaskStatus.PENDING  # runs only when executed
    assert seed_tm.tasks[second].is_ready(seed_tm.completed_tasks)
    assert run(seed_tm.execute_task(second)) == 4


def test_execute_waits_for_unfinished_dependencies(seed_tm):
    first = seed_tm.register_task("Task 1", add, 1, 1)
    second = seed_tm.register_task("Task 2", add, 2, 2, dependencies=[first])

    async def both():
        waiter = asyncio.ensure_future(seed_tm.execute_task(second))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        assert await seed_tm.execute_task(first) == 2
        return await waiter

    assert run(both()) == 4


def test_unknown_dependency_is_a_task_dependency_error(seed_tm):
    with pytest.raises(TaskDependencyError) as raised:
        seed_tm.register_task("Bad", add, 1, 1, task_id="mine", dependencies=["non_existent"])
    assert raised.value.task_id == "mine" and "non_existent" in str(raised.value)
    assert seed_tm.get_task("mine") is None


def test_execute_reraises_the_tasks_own_exception(seed_tm):
    task_id = seed_tm.register_task("Error Task", fail, "Test error")
    with pytest.raises(SeedError, match="Test error"):
        run(seed_tm.execute_task(task_id))
    assert seed_tm.get_task_status(task_id) == TaskStatus.FAILED
    assert task_id in seed_tm.failed_tasks
    assert isinstance(seed_tm.tasks[task_id].error, SeedError)
    assert isinstance(seed_tm.get_task_error(task_id), SeedError)


def test_retries_double_the_delay(seed_tm):
    task_id = seed_tm.register_task("Flaky", fail, "again", max_retries=2, retry_delay=0.05)
    with pytest.raises(SeedError):
        run(seed_tm.execute_task(task_id))
    delays = [e.data["delay"] for e in seed_tm.core.get_events(count=1000)
              if e.task_id == task_id and e.type is EventType.TASK_RETRYING]
    assert delays == [0.05, 0.1]
    assert seed_tm.get_task(task_id).retry_count == 2


def test_execute_task_refusals(seed_tm):
    with pytest.raises(TaskNotFoundError):
        run(seed_tm.execute_task("non_existent_task"))
    with pytest.raises(taskmesh.TaskNotFoundError):  # also the core's own
        run(seed_tm.execute_task("non_existent_task"))
    task_id = seed_tm.register_task("Once", add, 1, 1)
    assert run(seed_tm.execute_task(task_id)) == 2
    with pytest.raises(InvalidTaskStateError):
        run(seed_tm.execute_task(task_id))


def test_cancel_task(seed_tm):
    pending = seed_tm.register_task("Pending", add, 1, 1)
    assert run(seed_tm.cancel_task(pending)) is True
    assert seed_tm.get_task_status(pending) == TaskStatus.CANCELLED
    assert pending in seed_tm.cancelled_tasks
    assert seed_tm.get_task_error(pending) is None  # only FAILED tasks have one
    running = seed_tm.register_task("Cancel Task Test", linger)

    async def cancel_while_running():
        future = asyncio.ensure_future(seed_tm.execute_task(running))
        while seed_tm.get_task_status(running) != TaskStatus.RUNNING:
            await asyncio.sleep(0.01)
        assert await seed_tm.cancel_task(running) is True
        assert seed_tm.get_task_status(running) == TaskStatus.CANCELLED  # on return
        with pytest.raises(TaskCancellationError):
            await future

    run(cancel_while_running())
    assert run(seed_tm.cancel_task(running)) is False
    assert run(seed_tm.cancel_task("non_existent_task")) is False


def test_progress(seed_tm):
    task_id = seed_tm.register_task("Progress Test", report_progress)
    assert seed_tm.update_task_progress(task_id, 0.25, "a quarter") is True
    assert seed_tm.get_task_progress(task_id) == (0.25, "a quarter")
    assert seed_tm.tasks[task_id].progress == 0.25
    assert seed_tm.update_task_progress("non_existent_task", 0.5) is False
    assert seed_tm.get_task_progress("non_existent_task") == (0.0, "")
    with pytest.raises(ValueError):
        seed_tm.update_task_progress(task_id, 1.5)
    assert run(seed_tm.execute_task(task_id)) == "ok"
    assert seed_tm.get_task_progress(task_id) == (0.5, "Halfway done")
    assert seed_tm.update_task_progress(task_id, 0.9) is False  # finished


def test_unknown_ids_give_none(seed_tm):
    assert seed_tm.get_task("x") is None and seed_tm.get_task_status("x") is None
    assert seed_tm.get_task_result("x") is None and seed_tm.get_task_error("x") is None
    assert seed_tm.tasks.get("x") is None
    with pytest.raises(KeyError):
        seed_tm.tasks["x"]


def test_get_tasks_by_status_tag_and_metadata(seed_tm):
    a = seed_tm.register_task("A", add, 1, 1, tags=["x"], metadata={"k": 1})
    b = seed_tm.register_task("B", add, 2, 2, tags=["x", "y"], metadata={"k": "1"})
    c = seed_tm.register_task("C", fail, "no", tags=["y"])
    run(seed_tm.execute_task(a))
    with pytest.raises(SeedError):
        run(seed_tm.execute_task(c))
    assert [t.task_id for t in seed_tm.get_tasks_by_status(TaskStatus.PENDING)] == [b]
    assert [t.task_id for t in seed_tm.get_tasks_by_status(TaskStatus.COMPLETED)] == [a]
    assert [t.task_id for t in seed_tm.get_tasks_by_status(TaskStatus.FAILED)] == [c]
    assert sorted(t.name for t in seed_tm.get_tasks_by_tag("x")) == ["A", "B"]
    assert [t.name for t in seed_tm.get_tasks_by_metadata("k", 1)] == ["A"]
    assert all(isinstance(t, Task) for t in seed_tm.get_tasks_by_tag("y"))


def test_start_enqueues_in_priority_order_and_stop_cancels(seed_tm):
    ids = {p: seed_tm.register_task(p.name, sync_add, 1, int(p), priority=p,
                                    executor_type="sequential")
           for p in (TaskPriority.LOW, TaskPriority.CRITICAL, TaskPriority.NORMAL)}

    async def scenario():
        await seed_tm.start()
        results = [await seed_tm.core.wait_for_task(ids[p], timeout=WAIT) for p in ids]
        later = seed_tm.register_task("Later", add, 5, 5)  # enqueued at once now
        assert await seed_tm.core.wait_for_task(later, timeout=WAIT) == 10
        slow = seed_tm.register_task("Slow", linger)
        while seed_tm.get_task_status(slow) != TaskStatus.RUNNING:
            await asyncio.sleep(0.01)
        await seed_tm.stop()
        assert seed_tm.get_task_status(slow) == TaskStatus.CANCELLED
        return results

    assert run(scenario()) == [1, 16, 6]
    started = [e.task_id for e in seed_tm.core.get_events(count=1000)
               if e.type is EventType.TASK_STARTED and e.task_id in ids.values()]
    assert started == [ids[TaskPriority.CRITICAL], ids[TaskPriority.NORMAL],
                       ids[TaskPriority.LOW]]
    after = seed_tm.register_task("After stop", add, 1, 1)
    assert seed_tm.get_task_status(after) == TaskStatus.PENDING


def test_metrics_carry_the_seed_keys(seed_tm):
    first = seed_tm.register_task("Metrics Test 1", add, 1, 1)
    seed_tm.register_task("Metrics Test 2", add, 2, 2)
    seed_tm.register_task("Metrics Test 3", add, 3, 3, dependencies=[
        seed_tm.register_task("Gate", add, 0, 0)])
    run(seed_tm.execute_task(first))
    metrics = seed_tm.get_metrics()
    assert {k: metrics[k] for k in ("total_tasks", "pending_tasks", "running_tasks",
                                    "completed_tasks", "failed_tasks", "cancelled_tasks",
                                    "waiting_tasks", "max_concurrent_tasks")} == {
        "total_tasks": 4, "pending_tasks": 2, "running_tasks": 0, "completed_tasks": 1,
        "failed_tasks": 0, "cancelled_tasks": 0, "waiting_tasks": 1,
        "max_concurrent_tasks": 2}
    assert set(metrics["executors"]) >= {"async", "sequential", "thread_pool"}
    assert metrics["tasks"]["completed"] == 1 and "queues" in metrics  # taskmesh's own too


# ---- records and exceptions -------------------------------------------------------------

def test_task_record_by_hand():
    func = MagicMock()
    task = Task("t1", "Name", func, args=(1,), kwargs={"a": 2}, dependencies=["d"],
                tags=["x"], metadata={"m": 1})
    assert (task.task_id, task.name, task.func, task.args, task.kwargs) == (
        "t1", "Name", func, (1,), {"a": 2})
    assert task.status == TaskStatus.PENDING and task.result is None and task.error is None
    assert task.progress == 0.0 and task.progress_message == "" and task.retry_count == 0
    assert task.started_at is None and task.completed_at is None and task.created_at
    task.update_progress(0.5, "half")
    assert (task.progress, task.progress_message) == (0.5, "half")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            task.update_progress(bad)
    assert task.is_ready({"d"}) and not task.is_ready(set())
    d = task.to_dict()
    assert d["task_id"] == "t1" and d["status"] == "PENDING" and d["priority"] == "NORMAL"
    assert "Task(t1, Name, PENDING)" == str(task)
    assert Task().name == "Unnamed Task" and Task().task_id != Task().task_id
    assert create_task_id() != create_task_id()
    assert {s.name for s in TaskStatus} >= {"PENDING", "RUNNING", "COMPLETED", "FAILED",
                                            "CANCELLED", "WAITING"}
    assert {p.name for p in TaskPriority} == {"LOW", "NORMAL", "HIGH", "CRITICAL"}


@pytest.mark.parametrize("cls", [TaskError, TaskNotFoundError, TaskDependencyError,
                                 TaskCancellationError, TaskExecutionError,
                                 InvalidTaskStateError])
def test_exceptions_take_the_seeds_constructor(cls):
    exc = cls("something went wrong", "task-1")
    assert (exc.message, exc.task_id, str(exc)) == ("something went wrong", "task-1",
                                                  "something went wrong")
    assert isinstance(exc, TaskError) and isinstance(exc, taskmesh.TaskmeshError)
    assert cls("only a message").task_id is None
    assert exc.to_dict()["error_type"] == cls.__name__
    cause = ValueError("inner")
    wrapped = TaskExecutionError("outer", task_id="t", original_error=cause)
    assert wrapped.original_error is cause
    assert wrapped.to_dict()["original_error"] == {"type": "ValueError", "message": "inner"}


# ---- layering --------------------------------------------------------------------------------

def test_the_producer_does_not_import_the_worker():
    tree = ast.parse((REPO_ROOT / "taskmesh" / "manager.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[-1] in ("worker", "embedded")}


def test_a_manager_touches_redis_on_first_use(redis_server, namespace, rds):
    with taskmesh.TaskManager(redis_server.url, namespace=namespace, max_concurrent_tasks=5,
                              events_maxlen=1000) as tm:
        assert namespace_snapshot(rds, namespace) == {}
        assert tm.get_metrics()["max_concurrent_tasks"] == 5
        assert rds.hget(tm.keys.config, "events_maxlen") == b"1000"


# ---- one seed program, both ways -------------------------------------------------------------

def _run_seed_program(env: dict[str, str]) -> dict:
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "seed_program.py")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_seed_program_runs_in_process_and_on_workers(redis_server, namespace,
                                                         worker_factory):
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASKMESH_")}
    in_process = _run_seed_program(base)
    worker_factory()
    distributed = _run_seed_program({**base, "TASKMESH_URL": redis_server.url,
                                     "TASKMESH_NAMESPACE": namespace})
    expected = {
        "registered": ["PENDING", "WAITING"], "waiting_view": True, "dependency_error": True,
        "first": [0, 1, 2, 3], "second_after_dep": "PENDING", "second": 60,
        "by_tag": ["fetch", "total"], "by_metadata": ["total"], "completed_view": True,
        "execute_twice": "InvalidTaskStateError", "raised": ["KeyError", "'kaboom'"],
        "error": "KeyError('kaboom')", "retry_count": 1, "cancelled": True,
        "cancel_raised": "TaskCancellationError", "cancel_again": False,
        "progress": [True, [0.25, "a quarter"], False, [0.0, ""]], "after_start": [0, 1],
        "unknown": [None, None, None],
        "metrics": {"total_tasks": 5, "pending_tasks": 0, "running_tasks": 0,
                    "completed_tasks": 3, "failed_tasks": 1, "cancelled_tasks": 1,
                    "waiting_tasks": 0, "max_concurrent_tasks": 3},
    }
    for run_ in (in_process, distributed):
        assert {k: v for k, v in run_.items() if k != "task"} == expected
        assert run_["task"][:2] == ["COMPLETED", 60]
    assert Path(REPO_ROOT / "tests" / "seed_program.py").read_text().count(
        "from taskmesh.task_management import") == 1
