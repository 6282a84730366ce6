"""``taskmesh demo``: a small DAG through real worker processes, shown live.

What it does, in order:

1. picks a Redis: ``url`` / ``TASKMESH_URL``; else localhost:6379 if a Redis
   answers there; else an :class:`~taskmesh.server.RedisServer` it starts
   and stops itself (no Redis and no redis-server: one line saying how to get
   one, exit 1);
2. uses a fresh namespace (``demo-<random>``) unless one was asked for, so it
   never mixes with other data, and deletes nothing;
3. submits the tasks of :mod:`taskmesh.demo_tasks` — an ETL DAG with
   priorities, a retried failure, a timeout, a running task it cancels, a
   deferred task it cancels, a failure cascading to its dependents, and an
   import-string task — then launches ``workers`` worker processes
   (``python -m taskmesh worker``) so the first claims show the priorities;
4. shows one progress bar per task (polled from the store a few times a
   second) and the namespace's live events (``tm.subscribe``); then a
   summary table, the metrics screen of ``taskmesh metrics`` and a verdict;
5. stops the workers (SIGTERM, SIGKILL after 10 s) and its own Redis, and
   returns 0 if every task ended as expected, else 1.

Modules, one concept each: :mod:`.target` (which Redis, which namespace),
:mod:`.workload` (the tasks and what each must end as), :mod:`.processes`
(the worker processes), :mod:`.events` (the live event feed), :mod:`.board`
(the live display), :mod:`.tables` (the final tables) and :mod:`.run`
(``run_demo`` itself: the watch loop and the verdict).
"""

from .board import STATUS_STYLE, Board, TaskErrorView, describe_error
from .events import EVENT_STYLE, EventFeed
from .processes import (
    WORKER_CONCURRENCY,
    WORKER_GRACE_PERIOD,
    WORKER_LEASE_TIMEOUT_S,
    WORKER_STOP_TIMEOUT,
    WorkerProcesses,
)
from .run import CANCEL_AT_PROGRESS, DEMO_TIMEOUT, POLL_INTERVAL, RESULT_TTL, run_demo
from .tables import metrics_table, start_order, summary_table
from ..connection import mask_url
from .target import LOCALHOST_URL, DemoError, pick_namespace, pick_redis
from .workload import DemoTask, Expect, submit

__all__ = [
    "CANCEL_AT_PROGRESS", "DEMO_TIMEOUT", "EVENT_STYLE", "LOCALHOST_URL", "POLL_INTERVAL",
    "RESULT_TTL", "STATUS_STYLE", "WORKER_CONCURRENCY", "WORKER_GRACE_PERIOD",
    "WORKER_LEASE_TIMEOUT_S", "WORKER_STOP_TIMEOUT", "Board", "DemoError", "DemoTask",
    "EventFeed", "Expect", "TaskErrorView", "WorkerProcesses", "describe_error", "mask_url",
    "metrics_table", "pick_namespace", "pick_redis", "run_demo", "start_order", "submit",
    "summary_table",
]
