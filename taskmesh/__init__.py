"""taskmesh: a distributed task manager for Python, backed by Redis."""

from .context import TaskContext, current_task
from .exceptions import (
    CorruptRecordError,
    DependencyFailedError,
    PayloadDecodeError,
    PayloadTooLargeError,
    ProcessCrashedError,
    RemoteTaskError,
    SerializationError,
    SignatureError,
    ServerBusyError,
    StoreError,
    TaskCancelledError,
    TaskFailedError,
    ReplicationError,
    TaskmeshConnectionError,
    TaskmeshError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnsafePayloadError,
    WorkerLostError,
)
from .events import Subscription, subscribe
from .manager import TaskManager
from .models import Event, EventType, TaskError, TaskInfo, TaskPage, TaskPriority, TaskStatus
from .periodic import PeriodicInfo
from .worker import Worker, WorkerHandle, WorkerOptions
from . import embedded as _embedded  # installs the in-process worker host  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "CorruptRecordError",
    "DependencyFailedError",
    "Event",
    "EventType",
    "PayloadDecodeError",
    "PayloadTooLargeError",
    "PeriodicInfo",
    "ProcessCrashedError",
    "RemoteTaskError",
    "SerializationError",
    "SignatureError",
    "ServerBusyError",
    "StoreError",
    "Subscription",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskFailedError",
    "TaskInfo",
    "TaskManager",
    "TaskPage",
    "TaskNotFoundError",
    "TaskPriority",
    "TaskStatus",
    "TaskTimeoutError",
    "ReplicationError",
    "TaskmeshConnectionError",
    "TaskmeshError",
    "UnsafePayloadError",
    "Worker",
    "WorkerHandle",
    "WorkerLostError",
    "WorkerOptions",
    "current_task",
    "subscribe",
]
