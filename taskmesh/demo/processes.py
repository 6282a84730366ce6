"""The demo's worker processes (``python -m taskmesh worker``), stopped by PID."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from .. import demo_tasks
from ..server import spawn
from ..connection import mask_url

WORKER_CONCURRENCY = 4
WORKER_LEASE_TIMEOUT_S = 5.0
WORKER_GRACE_PERIOD = 3.0
WORKER_STOP_TIMEOUT = 10.0


class WorkerProcesses:
    """``python -m taskmesh worker`` processes, stopped by their PIDs."""

    def __init__(self, count: int, url: str, namespace: str, log_dir: str):
        self.count = count
        self.url = url
        self.namespace = namespace
        self.log_dir = log_dir
        self.suffix = secrets.token_hex(2)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.exit_codes: list[int | None] = []

    def argv(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "taskmesh", "worker", "--namespace", self.namespace,
                "--concurrency", str(WORKER_CONCURRENCY),
                "--lease-timeout", f"{WORKER_LEASE_TIMEOUT_S:g}",
                "--grace-period", f"{WORKER_GRACE_PERIOD:g}",
                "--import", demo_tasks.__name__, "--name", name]
        if mask_url(self.url) == self.url:  # a password goes by environment, not argv
            argv[4:4] = ["--url", self.url]
        return argv

    def start(self) -> None:
        env = dict(os.environ, TASKMESH_URL=self.url, PYTHONUNBUFFERED="1")
        env.pop("TASKMESH_NAMESPACE", None)
        for i in range(1, self.count + 1):
            name = f"demo-w{i}-{self.suffix}"
            with open(self.log_path(name), "wb") as logfile:
                # If the demo is killed outright, its workers go too, at once: a
                # graceful stop may wait forever for a Redis the demo took along.
                self.procs.append(spawn(self.argv(name), death_signal=signal.SIGKILL,
                                        stdin=subprocess.DEVNULL, stdout=logfile,
                                        stderr=subprocess.STDOUT, env=env))
            self.names.append(name)

    def log_path(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    def alive(self) -> int:
        return sum(1 for p in self.procs if p.poll() is None)

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT) -> list[int | None]:
        """SIGTERM to each (by PID), then SIGKILL whatever is left after ``timeout``."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.exit_codes = [p.returncode for p in self.procs]
        return self.exit_codes

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            with open(self.log_path(name), encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:]).rstrip()
        except OSError:
            return "(no log)"
