"""rediss:// (TLS) end to end: producer, worker and events over a private
TLS-only redis-server with a CA made for the test."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from taskmesh import EventType, TaskManager
from taskmesh.server import RedisServer, RedisServerError, free_port
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class TLSRedisServer(RedisServer):
    """The launcher's server, TLS only (``--port 0``: no plain listener) on
    its port; its readiness probe and ``client()`` speak TLS."""

    def __init__(self, ca: Path, extra_args: list[str]) -> None:
        port = free_port()
        super().__init__(port, extra_args=["--port", "0", "--tls-port", str(port), *extra_args])
        self.ca = ca

    def client(self, **kwargs) -> redis.Redis:
        return super().client(ssl=True, ssl_ca_certs=str(self.ca), **kwargs)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=taskmesh-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    server = TLSRedisServer(d / "ca.crt", extra_args=[
        "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
        "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no"])
    try:
        server.start()
    except RedisServerError:
        server.cleanup()
        pytest.skip("this redis-server cannot serve TLS")
    try:
        yield f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={server.ca}"
    finally:
        server.cleanup()


def test_rediss_round_trip_with_worker_and_events(tls_server, worker_factory):
    seen = []
    with TaskManager(tls_server, namespace="tls") as tm:
        sub = tm.subscribe(EventType.TASK_COMPLETED, seen.append)
        task = tm.register_task("tests.tasks:add", 2, 3)
        worker_factory("--burst", url=tls_server, namespace="tls")
        assert tm.wait_for_task_sync(task, timeout=20) == 5
        wait_until(lambda: seen, timeout=5, what="TASK_COMPLETED over TLS")
        sub.close()
    assert seen[0].task_id == task


def test_rediss_without_the_ca_is_refused(tls_server):
    untrusted = tls_server.split("?")[0]
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        TaskManager(untrusted, namespace="tls").get_task_status("x")
    assert time.monotonic() - started < 10
