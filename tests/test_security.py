"""Security (SPEC §7, §10 Security): HMAC-signed payloads and results,
``--no-pickle`` workers, and Redis AUTH/ACL through the URL.

"Nothing was unpickled" is proven with :class:`tests.bad_tasks.TouchOnUnpickle`:
merely loading it creates a marker file. Each refusal test also has a positive
control where the same kind of payload IS loaded and the marker appears.
"""

from __future__ import annotations

import datetime
import functools
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgpack
import pytest
import redis

from taskmesh import SignatureError, TaskError, TaskManager, TaskStatus
from taskmesh.keys import Keys
from taskmesh.serialization import Codec
from tests import bad_tasks, tasks
from tests.conftest import REPO_ROOT, RedisServer, child_env, stop_process
from tests.helpers import wait_until

WAIT = 20.0
SECRET = "s3"


def task_key(namespace: str, task_id: str) -> str:
    return Keys(namespace).task(task_id)


def wait_end(tm: TaskManager, task_id: str, worker) -> TaskStatus:
    """Waits until the task is terminal, failing fast if the worker died."""
    wait_until(lambda: worker.poll() is not None or tm.get_task_status(task_id).is_terminal,
               timeout=WAIT, what=f"task {task_id} to end")
    assert worker.poll() is None, f"worker died (rc={worker.poll()})"
    return tm.get_task_status(task_id)


def expect_failed(tm: TaskManager, task_id: str, worker, error_type: str) -> TaskError:
    assert wait_end(tm, task_id, worker) is TaskStatus.FAILED
    error = tm.get_task_error(task_id)
    assert error is not None and error.type == error_type, error
    return error


def proc(worker):
    """The Popen of a conftest WorkerProcess (or a Popen itself)."""
    return getattr(worker, "proc", worker)


def envelope(raw: bytes) -> list:
    outer = msgpack.unpackb(raw, raw=False)
    assert isinstance(outer, list) and len(outer) == 3
    return outer


# ---- signed payloads --------------------------------------------------------------------

def test_signed_tasks_run_and_results_are_signed(redis_server, rds, namespace, worker_factory,
                                                 tmp_path):
    marker = tmp_path / "unpickled"
    worker = worker_factory("--secret", SECRET)
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm:
        ids = [tm.register_task(tasks.add, 2, 3),
               tm.register_task("tests.tasks:add", 4, 5),
               tm.register_task(tasks.async_add, 6, 7),
               tm.register_task("tests.tasks:echo", bad_tasks.TouchOnUnpickle(marker), (1, 2))]
        payload = rds.hget(task_key(namespace, ids[0]), "payload")
        assert len(envelope(payload)[2]) == 32  # HMAC-SHA256 signature
        assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [
            5, 9, 13, ((str(marker), (1, 2)), {})]
        assert marker.exists()  # positive control: a signed pickle IS loaded
        result = rds.hget(task_key(namespace, ids[0]), "result")
        assert len(envelope(result)[2]) == 32  # results are signed too
        assert proc(worker).poll() is None


def test_producer_refuses_forged_result(redis_server, rds, namespace, worker_factory):
    worker = worker_factory("--secret", SECRET)
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm:
        task_id = tm.register_task(tasks.add, 20, 22)
        assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 42
        key = task_key(namespace, task_id)
        rds.hset(key, "result", Codec().encode_result(666))  # unsigned forgery
        with pytest.raises(SignatureError):
            tm.get_task_result(task_id)
        rds.hset(key, "result", Codec(secret=b"other").encode_result(666))  # wrong key
        with pytest.raises(SignatureError):
            tm.get_task_result(task_id)
        assert proc(worker).poll() is None


def test_secret_worker_refuses_unsigned_payload(redis_server, namespace, worker_factory,
                                                tmp_path):
    marker = tmp_path / "unpickled"
    worker = proc(worker_factory("--secret", SECRET))
    with TaskManager(redis_server.url, namespace=namespace) as plain, \
            TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as signed:
        unsigned = plain.register_task(tasks.echo, bad_tasks.TouchOnUnpickle(marker))
        error = expect_failed(plain, unsigned, worker, "SignatureError")
        assert "not signed" in error.message
        as_string = plain.register_task("tests.tasks:add", 1, 2)  # no pickle at all: still refused
        expect_failed(plain, as_string, worker, "SignatureError")
        assert not marker.exists(), "an unsigned payload was unpickled"
        # the worker goes on with signed work
        good = signed.register_task("tests.tasks:worker_pid")
        assert signed.wait_for_task_sync(good, timeout=WAIT) == worker.pid


def _tamper_body(payload: bytes) -> bytes:
    """Changes an argument inside the signed body, keeping the framing valid."""
    assert payload.count(b"hello") == 1
    return payload.replace(b"hello", b"jello")


def _flip_signature(payload: bytes) -> bytes:
    return payload[:-1] + bytes([payload[-1] ^ 0x01])


def _strip_signature(payload: bytes) -> bytes:
    version, body, _ = envelope(payload)
    return msgpack.packb([version, body, None], use_bin_type=True)


def _resign_with_other_key(payload: bytes) -> bytes:
    return Codec(secret=b"not-the-secret").encode_task(
        "tests.tasks:echo", ("hello", bad_tasks.TouchOnUnpickle("/nonexistent")), {})


@pytest.mark.parametrize("tamper", [_tamper_body, _flip_signature, _strip_signature,
                                    _resign_with_other_key],
                         ids=["body", "signature", "stripped", "other-key"])
def test_secret_worker_refuses_tampered_payload(redis_server, rds, namespace, worker_factory,
                                                tmp_path, tamper):
    marker = tmp_path / "unpickled"
    worker = proc(worker_factory("--secret", SECRET))
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as tm:
        task_id = tm.register_task(tasks.echo, "hello", bad_tasks.TouchOnUnpickle(marker),
                                   defer=True)
        key = task_key(namespace, task_id)
        rds.hset(key, "payload", tamper(rds.hget(key, "payload")))
        tm.execute_task_sync(task_id)
        expect_failed(tm, task_id, worker, "SignatureError")
        assert not marker.exists(), "a tampered payload was unpickled"
        # control: the same task, untampered, runs and does load the pickle
        same = tm.register_task(tasks.echo, "hello", bad_tasks.TouchOnUnpickle(marker))
        assert tm.wait_for_task_sync(same, timeout=WAIT) == (("hello", str(marker)), {})
        assert marker.exists()
        assert worker.poll() is None


def _start_worker_with_env(url: str, namespace: str, log: Path, **env_vars: str) -> subprocess.Popen:
    env = child_env(drop=[k for k in os.environ if k.startswith("TASKMESH_")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(env_vars)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskmesh", "worker", "--url", url, "--namespace", namespace,
             "--lease-timeout", "3", "--grace-period", "1"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_taskmesh_secret_env_var_works_like_flag(redis_server, namespace, tmp_path):
    marker = tmp_path / "unpickled"
    log = tmp_path / "worker.log"
    worker = _start_worker_with_env(redis_server.url, namespace, log, TASKMESH_SECRET=SECRET)
    try:
        with TaskManager(redis_server.url, namespace=namespace) as plain, \
                TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as signed:
            unsigned = plain.register_task(tasks.echo, bad_tasks.TouchOnUnpickle(marker))
            expect_failed(plain, unsigned, worker, "SignatureError")
            assert not marker.exists()
            good = signed.register_task(tasks.add, 1, 2)
            assert signed.wait_for_task_sync(good, timeout=WAIT) == 3
            assert worker.poll() is None
    except BaseException:
        print(log.read_text(errors="replace"))
        raise
    finally:
        stop_process(worker)


def test_worker_without_secret_runs_signed_payloads(redis_server, rds, namespace, worker_factory):
    worker = proc(worker_factory())
    marks = f"taskmesh-test:{namespace}:marks"
    with TaskManager(redis_server.url, namespace=namespace, secret=SECRET) as signed, \
            TaskManager(redis_server.url, namespace=namespace) as plain:
        task_id = signed.register_task(tasks.record, redis_server.url, marks, "ran")
        assert wait_end(signed, task_id, worker) is TaskStatus.COMPLETED
        assert rds.lrange(marks, 0, -1) == [b"ran"]
        # the worker has no secret, so its result is unsigned: a producer
        # without the secret reads it; one with the secret refuses it.
        assert plain.get_task_result(task_id) == "ran"
        assert envelope(rds.hget(task_key(namespace, task_id), "result"))[2] is None
        with pytest.raises(SignatureError):
            signed.get_task_result(task_id)
    rds.delete(marks)


# ---- --no-pickle --------------------------------------------------------------------------

def test_no_pickle_worker(redis_server, tm, worker_factory, tmp_path):
    worker = proc(worker_factory("--no-pickle"))
    marker = tmp_path / "unpickled"

    # pickled code is refused before it is loaded
    partial = functools.partial(tasks.echo, bad_tasks.TouchOnUnpickle(marker))
    for func in (partial, tasks.add, lambda: 1):
        task_id = tm.register_task(func, 1, 2) if func is tasks.add else tm.register_task(func)
        error = expect_failed(tm, task_id, worker, "UnsafePayloadError")
        assert "pickle" in error.message
    # so is a pickled argument to an import-string function
    for arg in (bad_tasks.TouchOnUnpickle(marker), datetime.datetime(2024, 1, 2), {1, 2}):
        task_id = tm.register_task("tests.tasks:echo", arg)
        expect_failed(tm, task_id, worker, "UnsafePayloadError")
    task_id = tm.register_task("tests.tasks:echo", kwargs={"when": datetime.date(2024, 1, 2)})
    expect_failed(tm, task_id, worker, "UnsafePayloadError")
    assert not marker.exists(), "a --no-pickle worker unpickled a payload"

    # import strings with msgpack-able arguments run; tuples arrive as lists
    args = (1, "a", (2, 3), [4, (5,)], {"k": b"v", "t": (6,)}, None, 1.5, True, -(2**63))
    task_id = tm.register_task("tests.tasks:echo", *args, kwargs={"t": (7, 8)})
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == [
        [1, "a", [2, 3], [4, [5]], {"k": b"v", "t": [6]}, None, 1.5, True, -(2**63)],
        {"t": [7, 8]},
    ]
    task_id = tm.register_task("tests.tasks:types_of", (1, 2), [3], kwargs={"x": (1,)})
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == [["list", "list"], {"x": "list"}]
    task_id = tm.register_task("tests.tasks:async_add", 40, 2)
    assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 42

    # a result msgpack cannot carry is a SerializationError naming the result
    task_id = tm.register_task("tests.bad_tasks:return_set")
    error = expect_failed(tm, task_id, worker, "SerializationError")
    assert "result" in error.message

    good = tm.register_task("tests.tasks:worker_pid")
    assert tm.wait_for_task_sync(good, timeout=WAIT) == worker.pid


# ---- Redis AUTH and ACL ----------------------------------------------------------------------

PASSWORD = "pw"
ACL_USER, ACL_PASSWORD = "app", "pw2"


class AuthRedisServer(RedisServer):
    """A private redis-server with ``requirepass``; its own readiness probe
    and ``client()`` authenticate."""

    def __init__(self) -> None:
        super().__init__(extra_args=["--requirepass", PASSWORD])

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("password", PASSWORD)
        return super().client(**kwargs)

    def url_for(self, user: str = "", password: str = PASSWORD) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def auth_server():
    server = AuthRedisServer()
    server.start()
    try:
        admin = server.client()
        admin.execute_command("ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}",
                              "~*", "&*", "+@all")
        admin.close()
        yield server
    finally:
        server.cleanup()


def _round_trip(url: str, worker_factory) -> None:
    namespace = f"t{uuid.uuid4().hex[:16]}"
    worker = proc(worker_factory(url=url, namespace=namespace))
    with TaskManager(url, namespace=namespace) as tm:
        got = []
        sub = tm.subscribe("TASK_COMPLETED", lambda e: got.append(e.task_id))
        try:
            ids = [tm.register_task(tasks.add, 1, 2), tm.register_task("tests.tasks:async_add", 3, 4)]
            assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [3, 7]
            wait_until(lambda: set(ids) <= set(got), timeout=WAIT, what="completion events")
        finally:
            sub.close()
        assert [w["pid"] for w in tm.get_metrics()["workers"]] == [worker.pid]


def test_redis_password_in_url(auth_server, worker_factory):
    _round_trip(auth_server.url_for(), worker_factory)


def test_redis_acl_user_in_url(auth_server, worker_factory):
    _round_trip(auth_server.url_for(ACL_USER, ACL_PASSWORD), worker_factory)


@pytest.mark.parametrize("url", [
    "redis://:wrong@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0",
    "redis://app:wrong@127.0.0.1:{port}/0",
    "redis://nobody:pw2@127.0.0.1:{port}/0",
], ids=["wrong-password", "no-password", "acl-wrong-password", "acl-unknown-user"])
def test_bad_credentials_fail_clearly_at_first_use(auth_server, url):
    url = url.format(port=auth_server.port)
    namespace = f"t{uuid.uuid4().hex[:16]}"
    tm = TaskManager(url, namespace=namespace)  # connects lazily
    try:
        started = time.monotonic()
        with pytest.raises(redis.AuthenticationError):
            tm.register_task(tasks.add, 1, 2)
        with pytest.raises(redis.AuthenticationError):
            tm.get_metrics()
        # Not retried (redis-py's AuthenticationError is a ConnectionError,
        # which its retry would try again: 3.5 s a call for a missing password).
        assert time.monotonic() - started < 2.0
    finally:
        tm.close()


def test_worker_with_wrong_password_says_so(auth_server, worker_factory):
    worker = worker_factory(url=f"redis://:wrong@127.0.0.1:{auth_server.port}/0")
    wait_until(lambda: worker.returncode is not None or any(
        s in worker.log().lower() for s in ("wrongpass", "invalid username-password",
                                            "authentication")),
               timeout=WAIT, what="the worker to report the authentication failure")
    assert any(s in worker.log().lower()
               for s in ("wrongpass", "invalid username-password", "authentication")), worker.log()
