"""Read-only views of the stored tasks with the seed's shapes (README
*Coming from the seed / WiseFlow*):
``tm.tasks`` (a dict-like mapping id -> Task) and the status sets
(``pending_tasks``, ``running_tasks``, ...). Nothing is cached: every
access reads Redis, through the core (``get_task``, ``list_tasks``,
``get_metrics``), so the views are true in every process.
"""

from __future__ import annotations

from collections.abc import Set
from typing import TYPE_CHECKING, Any, Iterator

from ..models import TaskStatus

if TYPE_CHECKING:
    from .task import Task
    from .task_manager import TaskManager


class TaskMap(dict):  # type: ignore[type-arg]
    """id -> Task for every stored task of the namespace. A ``dict`` subclass
    because seed code checks ``isinstance(tm.tasks, dict)``; it holds no
    entries itself and refuses writes."""

    def __init__(self, manager: "TaskManager"):
        super().__init__()
        self._manager = manager

    def __getitem__(self, task_id: str) -> "Task":
        task = self._manager.get_task(task_id)
        if task is None:
            raise KeyError(task_id)
        return task

    def get(self, task_id: str, default: Any = None) -> Any:
        task = self._manager.get_task(task_id)
        return default if task is None else task

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self._manager.get_task_status(task_id) is not None

    def __iter__(self) -> Iterator[str]:
        return (info.id for info in self._manager.iter_infos())

    def __len__(self) -> int:
        return sum(self._manager.seed_counts().values())

    def __bool__(self) -> bool:
        return len(self) > 0

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(self)

    def values(self) -> list["Task"]:  # type: ignore[override]
        return [self._manager._task(info) for info in self._manager.iter_infos()]

    def items(self) -> list[tuple[str, "Task"]]:  # type: ignore[override]
        return [(task.task_id, task) for task in self.values()]

    def __repr__(self) -> str:
        return f"<tasks of {self._manager.core!r}>"

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("tm.tasks is a read-only view of the stored tasks")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]


class StatusView(Set):  # type: ignore[type-arg]
    """The ids of the stored tasks in one (seed) status: ``in``, ``len``,
    iteration, and the set operators of ``collections.abc.Set``."""

    def __init__(self, manager: "TaskManager", status: TaskStatus):
        self._manager = manager
        self.status = status

    def __contains__(self, task_id: object) -> bool:
        return (isinstance(task_id, str)
                and self._manager.get_task_status(task_id) is self.status)

    def __iter__(self) -> Iterator[str]:
        return (info.id for info in self._manager.iter_infos([self.status]))

    def __len__(self) -> int:
        return self._manager.seed_counts().get(self.status.value, 0)

    def __repr__(self) -> str:
        return f"<{self.status.value} tasks: {sorted(self)!r}>"
