"""rediss:// (TLS) end to end: producer, worker and events over a private
TLS-only redis-server with a CA made for the test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import redis

from taskmesh import EventType, TaskManager
from tests.conftest import _free_port
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


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
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(d)],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.crt'}"
    try:
        def answers():
            if proc.poll() is not None:
                pytest.skip("this redis-server cannot serve TLS")
            try:
                return redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            except redis.RedisError:
                return False

        wait_until(answers, timeout=10, what="TLS redis-server")
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)


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
