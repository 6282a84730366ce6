"""A private, throw-away ``redis-server`` for one benchmark run.

Started from PATH on a free loopback port with persistence off, in a
temporary directory, and stopped by its own PID (never by name). Nothing
here touches any other Redis on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


class RedisServerError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``with RedisServer() as server: server.url(db)``"""

    def __init__(self, executable: str = "redis-server", extra_args: list[str] | None = None,
                 wrapper: list[str] | None = None, start_timeout_s: float = 10):
        """``wrapper`` runs the server under another program (valgrind, for
        benchmarks.profile --instructions)."""
        self.executable = shutil.which(executable) or executable
        self.extra_args = list(extra_args or [])
        self.wrapper = list(wrapper or [])
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def version(self) -> str:
        try:
            out = subprocess.run([self.executable, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return "?"
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return out.strip()

    def start(self) -> RedisServer:
        if not shutil.which(self.executable) and not os.path.exists(self.executable):
            raise RedisServerError(f"{self.executable!r} not found on PATH")
        self.dir = tempfile.mkdtemp(prefix="taskmesh-bench-redis-")
        last_error = ""
        for _ in range(5):  # the free port may be taken between probe and bind
            port = _free_port()
            log = open(os.path.join(self.dir, "redis.log"), "ab")
            proc = subprocess.Popen(
                [*self.wrapper, self.executable, "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", self.dir, "--databases", "16", "--protected-mode", "yes",
                 *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it
            )
            log.close()
            deadline = time.monotonic() + self.start_timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                if _ping(port):
                    self.port, self.proc = port, proc
                    return self
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                last_error = f.read()[-500:].decode(errors="replace")
        raise RedisServerError(f"redis-server did not start: {last_error}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
