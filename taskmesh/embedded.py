"""Workers inside a producer's process: ``tm.start_worker()`` and the worker
that ``memory://`` embeds (README *TaskManager* and *Workers*).

The producer (:mod:`taskmesh.manager`) does not import the worker: it asks
an in-process worker host, and this module, which depends on both, installs
itself as that host when the package is imported. So the layering is
models/store <- manager <- embedded -> worker, and a producer-only program
never needs the worker's code paths.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .manager import install_worker_host
from .worker import Worker, WorkerHandle, WorkerOptions

if TYPE_CHECKING:
    from .manager import TaskManager

# memory:// runs one embedded worker per namespace of the process's store.
EMBEDDED_LEASE_TIMEOUT_S = 30.0


class InProcessWorkers:
    """Starts workers on background threads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._embedded: dict[str, WorkerHandle] = {}

    def start(self, manager: "TaskManager", options: dict[str, Any]) -> WorkerHandle:
        """``tm.start_worker(**options)``: options are the CLI flags in
        snake_case (``--import`` as ``imports``, ``import_`` or
        ``**{"import": ...}``); url, namespace and secret default to the
        manager's."""
        options = dict(options)
        for alias in ("import", "import_"):
            if alias in options:
                options["imports"] = options.pop(alias)
        if isinstance(options.get("imports"), str):
            options["imports"] = [options["imports"]]
        options.setdefault("url", manager.url)
        options.setdefault("namespace", manager.namespace)
        options.setdefault("secret", manager.secret)
        return WorkerHandle(Worker(WorkerOptions(**options)))

    def ensure_embedded(self, manager: "TaskManager") -> None:
        """memory:// has no separate worker process: one runs in this one,
        shared by every memory:// manager of the namespace."""
        with self._lock:
            handle = self._embedded.get(manager.namespace)
            if handle is None or not handle.is_alive():
                worker = Worker(WorkerOptions(url=manager.url, namespace=manager.namespace,
                                              secret=manager.secret,
                                              lease_timeout=EMBEDDED_LEASE_TIMEOUT_S))
                self._embedded[manager.namespace] = WorkerHandle(worker)

    def release_embedded(self, namespace: str) -> None:
        """Stops a namespace's embedded worker (in the background: a running
        task gets the grace period) once nothing will use that namespace again."""
        with self._lock:
            handle = self._embedded.pop(namespace, None)
        if handle is not None:
            threading.Thread(target=handle.stop, name=f"taskmesh-release-{namespace}",
                             daemon=True).start()


install_worker_host(InProcessWorkers())
