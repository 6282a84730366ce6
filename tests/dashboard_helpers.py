"""A real ``python -m taskmesh dashboard`` process for the dashboard tests,
plus a tiny SSE reader over httpx."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from tests.conftest import REPO_ROOT, _free_port, child_env, stop_process


class DashboardProcess:
    """One dashboard server on a free loopback port, stopped by PID."""

    def __init__(self, url: str, namespace: str, *flags: str, logpath: Path,
                 env: dict[str, str] | None = None):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.logpath = logpath
        self._log = open(logpath, "wb")
        environ = child_env(drop=("TASKMESH_URL", "TASKMESH_NAMESPACE",
                                  "TASKMESH_DASHBOARD_TOKEN"))
        environ.update(env or {})
        self.args = [sys.executable, "-m", "taskmesh", "dashboard", "--url", url,
                     "--namespace", namespace, "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(self.args, cwd=REPO_ROOT, env=environ, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/static/dashboard.css", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"dashboard did not start:\n{self.log()}")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **kwargs)

    def log(self) -> str:
        self._log.flush()
        return self.logpath.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def __enter__(self) -> "DashboardProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parses a text/event-stream response into {"id", "event", "data"} dicts
    (comments and the retry field are skipped)."""
    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in message:
                message["data"] = json.loads(message["data"])
                yield message
            message = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field in ("id", "event"):
            message[field] = value
        elif field == "data":
            message["data"] = message.get("data", "") + value
