"""The seed's TaskManager (README *Coming from the seed / WiseFlow*), over taskmesh's core.

A thin adapter: every rule (validation, placement, retries, dependencies,
cancellation, fencing, listing) is the core's. This module only adapts the
seed's names, defaults and return conventions:

* a process-wide singleton; ``TASKMESH_URL`` or, unset, ``memory://`` (in
  process, as the seed was: callables and arguments by reference);
* tasks are registered deferred (PENDING) until ``execute_task`` or
  ``start()``; one whose dependencies are unfinished reads WAITING;
* retries double their delay; unknown ids give None / False / ``(0.0, "")``;
* ``execute_task`` waits by default and raises the task's own exception.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Callable, Iterable, Iterator, Sequence

from .. import manager as core_manager
from ..connection import is_memory
from ..metrics import Metrics, status_counts
from ..exceptions import TaskCancelledError, TaskFailedError
from ..exceptions import TaskNotFoundError as CoreNotFound
from ..models import EXECUTOR_TYPES, TaskInfo, TaskPriority, TaskStatus
from .exceptions import (
    InvalidTaskStateError,
    TaskCancellationError,
    TaskDependencyError,
    TaskNotFoundError,
)
from .task import Task, create_task_id
from .views import StatusView, TaskMap

log = logging.getLogger(__name__)

RETRY_BACKOFF = 2.0  # the seed doubled the delay after each failure
CANCEL_WAIT_S = 5.0  # how long cancel_task waits for a running task to end
PAGE = 1000


class _DefaultCap(int):
    """The default of max_concurrent_tasks, told apart from an explicit 4: only
    an explicit value sets the namespace's cap (README *Coming from the seed / WiseFlow*)."""


DEFAULT_CAP = _DefaultCap(4)

# Seed status as read from the core's (README *Coming from the seed /
# WiseFlow*): a deferred task whose dependencies are unfinished is WAITING;
# every other status is the core's.
_SEED_STATUSES = {
    TaskStatus.PENDING: [TaskStatus.PENDING],
    TaskStatus.WAITING: [TaskStatus.WAITING, TaskStatus.PENDING],
}


def seed_status(info: TaskInfo) -> TaskStatus:
    """The status the seed would report: its deferred tasks with unfinished
    dependencies were WAITING, where the core keeps them PENDING."""
    if info.status is TaskStatus.PENDING and info.pending_dependencies > 0:
        return TaskStatus.WAITING
    return info.status


class TaskManager:
    """``TaskManager(max_concurrent_tasks=4, default_executor_type="async")``,
    one per process (``TaskManager._instance = None`` makes a fresh one)."""

    _instance: "TaskManager | None" = None
    _last_private: str | None = None  # the namespace a fresh memory:// manager made

    def __new__(cls, *args: Any, **kwargs: Any) -> "TaskManager":
        if cls._instance is None or not isinstance(cls._instance, cls):
            instance = super().__new__(cls)
            instance._initialized = False
            cls._instance = instance
        return cls._instance

    def __init__(self, max_concurrent_tasks: int = DEFAULT_CAP,
                 default_executor_type: str = "async"):
        if self.__dict__.get("_initialized"):
            return
        if default_executor_type not in EXECUTOR_TYPES:
            raise ValueError(f"default_executor_type must be one of {', '.join(EXECUTOR_TYPES)}")
        explicit = not isinstance(max_concurrent_tasks, _DefaultCap)
        url = os.environ.get("TASKMESH_URL") or "memory://"
        namespace = os.environ.get("TASKMESH_NAMESPACE") or None
        if namespace is None and is_memory(url):
            # In process, as the seed was: a fresh manager starts empty (and
            # the one it replaces, unreachable now, stops its worker).
            if TaskManager._last_private is not None:
                core_manager.worker_host().release_embedded(TaskManager._last_private)
            namespace = TaskManager._last_private = f"seed-{uuid.uuid4().hex[:12]}"
        self.core = core_manager.TaskManager(
            url, namespace=namespace,
            max_concurrent_tasks=int(max_concurrent_tasks) if explicit else None)
        self.max_concurrent_tasks = int(max_concurrent_tasks)
        self.default_executor_type = default_executor_type
        # The seed's executor registry, by name (the strategies live in workers).
        self.executors: dict[str, str] = {name: name for name in EXECUTOR_TYPES}
        self.is_running = False
        self._registered: list[str] = []  # ids registered through this manager
        self._started: set[str] = set()  # ids this manager enqueued
        self.tasks = TaskMap(self)
        self.pending_tasks = StatusView(self, TaskStatus.PENDING)
        self.running_tasks = StatusView(self, TaskStatus.RUNNING)
        self.waiting_tasks = StatusView(self, TaskStatus.WAITING)
        self.completed_tasks = StatusView(self, TaskStatus.COMPLETED)
        self.failed_tasks = StatusView(self, TaskStatus.FAILED)
        self.cancelled_tasks = StatusView(self, TaskStatus.CANCELLED)
        self._initialized = True

    # ---- registration -------------------------------------------------------
    def register_task(
        self,
        name: str,
        func: Callable[..., Any] | str,
        *args: Any,
        task_id: str | None = None,
        kwargs: dict[str, Any] | None = None,
        priority: int = TaskPriority.NORMAL,
        dependencies: Sequence[str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        description: str = "",
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        executor_type: str | None = None,
    ) -> str:
        """Stores the task PENDING (WAITING while a dependency is unfinished)
        until execute_task() or start(); returns its id. An unknown
        dependency raises TaskDependencyError."""
        task_id = task_id or create_task_id()
        if executor_type is not None and executor_type not in EXECUTOR_TYPES:
            log.warning("unknown executor type %r, using %r", executor_type,
                        self.default_executor_type)
            executor_type = None
        try:
            self.core.register_task(
                func, *args, name=name, kwargs=kwargs, priority=priority,
                dependencies=dependencies, max_retries=max_retries, retry_delay=retry_delay,
                retry_backoff=RETRY_BACKOFF, timeout=timeout, description=description,
                tags=tags, metadata=metadata,
                executor_type=executor_type or self.default_executor_type,
                task_id=task_id, defer=not self.is_running)
        except CoreNotFound as exc:
            raise TaskDependencyError(f"Dependency {exc.task_id} does not exist",
                                      task_id=task_id) from None
        self._registered.append(task_id)
        if self.is_running:
            self._started.add(task_id)
        return task_id

    # ---- running ------------------------------------------------------------------
    async def execute_task(self, task_id: str, wait: bool = True) -> Any:
        """Enqueues a PENDING or WAITING task; with ``wait`` returns its result
        or raises the task's own exception (TaskCancellationError if it ends
        CANCELLED)."""
        info = self._info(task_id)
        if info is None:
            raise TaskNotFoundError(f"Task {task_id} not found", task_id=task_id)
        status = seed_status(info)
        if status not in (TaskStatus.PENDING, TaskStatus.WAITING):
            raise InvalidTaskStateError(
                f"Task {task_id} is in invalid state for execution: {status.name}",
                task_id=task_id)
        await self.core.execute_task(task_id)
        self._started.add(task_id)
        if not wait:
            return None
        return await self._outcome(task_id)

    async def _outcome(self, task_id: str) -> Any:
        try:
            return await self.core.wait_for_task(task_id)
        except TaskFailedError as failed:
            raise failed.error.exception() from None
        except TaskCancelledError as cancelled:
            raise TaskCancellationError(f"Task {task_id} was cancelled",
                                        task_id=task_id) from cancelled

    async def cancel_task(self, task_id: str) -> bool:
        """Cancels the task; a running one is waited for (a few seconds) so it
        reads CANCELLED on return. False if unknown or already finished."""
        try:
            if not await self.core.cancel_task(task_id):
                return False
        except CoreNotFound:
            return False
        try:
            await self.core.wait_for_task(task_id, timeout=CANCEL_WAIT_S)
        except (TaskCancelledError, TaskFailedError, TimeoutError):
            pass
        return True

    async def start(self) -> None:
        """From now on tasks registered here are enqueued at once, and the
        PENDING ones already registered are enqueued now (priority order)."""
        if self.is_running:
            log.warning("task manager is already running")
            return
        self.is_running = True
        waiting = []
        for task_id in self._registered:
            info = self._info(task_id)
            if info is not None and info.status is TaskStatus.PENDING:
                waiting.append(info)
        for info in sorted(waiting, key=lambda i: -i.priority):
            await self.core.execute_task(info.id)
            self._started.add(info.id)

    async def stop(self) -> None:
        """Back to registering PENDING; cancels the unfinished tasks this
        manager started."""
        if not self.is_running:
            log.warning("task manager is not running")
        self.is_running = False
        for task_id in list(self._started):
            info = self._info(task_id)
            if info is not None and not info.status.is_terminal:
                await self.cancel_task(task_id)
            self._started.discard(task_id)

    # ---- reading --------------------------------------------------------------------
    def _info(self, task_id: str) -> TaskInfo | None:
        try:
            return self.core.get_task(task_id)
        except CoreNotFound:
            return None

    def _task(self, info: TaskInfo) -> Task:
        task_id = info.id

        def payload() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
            status, raw = self.core._run(self.core.commands.read_fields(task_id, "payload"))
            if not raw:
                return None, (), {}
            func, args, kwargs = self.core.codec.for_payload(task_id).decode_task(raw)
            return func, tuple(args), kwargs

        def error() -> BaseException | None:
            if info.error is not None:
                return info.error.exception()
            if info.status is TaskStatus.CANCELLED:
                return asyncio.CancelledError("Task was cancelled")
            return None

        cached: dict[str, Any] = {}

        def part(i: int) -> Callable[[], Any]:
            def load() -> Any:
                if "payload" not in cached:
                    cached["payload"] = payload()
                return cached["payload"][i]
            return load

        return Task.from_info(
            info, seed_status(info),
            {"func": part(0), "args": part(1), "kwargs": part(2),
             "result": lambda: self.get_task_result(task_id), "error": error},
            report_progress=lambda p, m: self.update_task_progress(task_id, p, m))

    def get_task(self, task_id: str) -> Task | None:
        """The seed's ``Task`` view, or None for an unknown id (the seed
        returned None where the core raises TaskNotFoundError)."""
        info = self._info(task_id)
        return self._task(info) if info is not None else None

    def get_task_status(self, task_id: str) -> TaskStatus | None:
        """The seed's status (see :func:`seed_status`), None for an unknown id."""
        info = self._info(task_id)
        return seed_status(info) if info is not None else None

    def get_task_result(self, task_id: str) -> Any:
        """The result of a COMPLETED task, else None (also for an unknown id)."""
        try:
            return self.core.get_task_result(task_id)
        except CoreNotFound:
            return None

    def get_task_error(self, task_id: str) -> BaseException | None:
        """The exception of a FAILED task, else None (as the seed)."""
        info = self._info(task_id)
        if info is None or info.status is not TaskStatus.FAILED or info.error is None:
            return None
        return info.error.exception()

    def get_task_progress(self, task_id: str) -> tuple[float, str]:
        """``(progress, message)`` with the seed's ``""`` for no message, and
        ``(0.0, "")`` for an unknown id."""
        try:
            progress, message = self.core.get_task_progress(task_id)
        except CoreNotFound:
            return 0.0, ""
        return progress, message or ""

    def update_task_progress(self, task_id: str, progress: float, message: str = "") -> bool:
        """False for an unknown or finished task."""
        try:
            return self.core.update_task_progress(task_id, progress, message)
        except CoreNotFound:
            return False

    def iter_infos(self, statuses: Iterable[TaskStatus] | None = None, *,
                   tag: str | None = None,
                   metadata: dict[str, Any] | None = None) -> Iterator[TaskInfo]:
        """Every stored task matching, through list_tasks, in its order;
        ``statuses`` are the seed's."""
        core_statuses = None
        wanted: set[TaskStatus] | None = None
        if statuses is not None:
            wanted = set(statuses)
            core_statuses = sorted({c for s in wanted for c in _SEED_STATUSES.get(s, [s])})
        cursor = None
        while True:
            page = self.core.list_tasks(status=core_statuses, tag=tag, metadata=metadata,
                                        limit=PAGE, cursor=cursor)
            for info in page.tasks:
                if wanted is None or seed_status(info) in wanted:
                    yield info
            if page.cursor is None:
                return
            cursor = page.cursor

    def get_tasks_by_status(self, status: TaskStatus) -> list[Task]:
        """Every stored task in this seed status (walks list_tasks to the end)."""
        return [self._task(i) for i in self.iter_infos([TaskStatus(status)])]

    def get_tasks_by_tag(self, tag: str) -> list[Task]:
        """Every stored task carrying ``tag`` (read from the tag index)."""
        return [self._task(i) for i in self.iter_infos(tag=tag)]

    def get_tasks_by_metadata(self, key: str, value: Any) -> list[Task]:
        """Every stored task whose ``metadata[key] == value``."""
        return [self._task(i) for i in self.iter_infos(metadata={key: value})]

    def seed_counts(self, metrics: Metrics | None = None) -> dict[str, int]:
        """Tasks per seed status: the core's counts, with deferred tasks whose
        dependencies are unfinished moved from PENDING to WAITING (that part
        walks the PENDING index)."""
        counts = dict(status_counts((metrics or self.core.get_metrics())["tasks"]))
        if counts.get("pending"):
            blocked = sum(1 for i in self.iter_infos([TaskStatus.WAITING])
                          if i.status is TaskStatus.PENDING)
            counts["pending"] -= blocked
            counts["waiting"] = counts.get("waiting", 0) + blocked
        return counts

    def get_metrics(self) -> dict[str, Any]:
        """taskmesh's metrics plus the seed's keys."""
        core = self.core.get_metrics()
        counts = self.seed_counts(core)
        out: dict[str, Any] = dict(core)  # the seed's keys are not in Metrics
        cap = out.get("max_concurrent_tasks")
        out.update({
            "is_running": self.is_running,
            "default_executor_type": self.default_executor_type,
            "total_tasks": sum(counts.values()),
            "pending_tasks": counts.get("pending", 0),
            "running_tasks": counts.get("running", 0),
            "completed_tasks": counts.get("completed", 0),
            "failed_tasks": counts.get("failed", 0),
            "cancelled_tasks": counts.get("cancelled", 0),
            "waiting_tasks": counts.get("waiting", 0),
            "executors": {name: {"type": name, "default": name == self.default_executor_type}
                          for name in self.executors},
            "max_concurrent_tasks": cap if cap is not None else self.max_concurrent_tasks,
        })
        return out

    def __repr__(self) -> str:
        return f"task_management.TaskManager({self.core!r})"
