"""Bad payloads never kill a worker (SPEC §7, §2 bad input).

Every case runs against a real worker process: the bad task ends FAILED with
a clear ``TaskError``, then a good task registered after it COMPLETES on the
very same worker process, which is still alive.

One worker process serves the whole module (starting one per case would
cost a second or two each). If a case kills it, that case fails and the next
one gets a fresh worker in a fresh namespace, so a poison task left RUNNING
by the dead worker cannot be recovered into (and kill) the next worker.
"""

from __future__ import annotations

import queue
import sys
import threading
import uuid
from pathlib import Path

import msgpack
import pytest

from taskmesh import (
    EventType,
    PayloadTooLargeError,
    SerializationError,
    TaskError,
    TaskManager,
    TaskStatus,
)
from taskmesh.keys import Keys
from tests import bad_tasks, tasks
from tests.conftest import WorkerProcess, namespace_snapshot
from tests.helpers import wait_until

WAIT = 20.0


class SharedWorker:
    """One worker process (and its namespace) for the module, replaced when it dies."""

    def __init__(self, url: str, logdir: Path):
        self.url = url
        self.logdir = logdir
        self.proc: WorkerProcess | None = None
        self.namespace = ""
        self.started = 0

    def ensure(self) -> WorkerProcess:
        if self.proc is None or self.proc.returncode is not None:
            if self.proc is not None:
                self.proc.stop()
            self.namespace = f"t{uuid.uuid4().hex[:16]}"
            self.started += 1
            self.proc = WorkerProcess(
                [sys.executable, "-m", "taskmesh", "worker", "--url", self.url,
                 "--namespace", self.namespace, "--lease-timeout", "3", "--grace-period", "2",
                 "--concurrency", "4"],
                self.logdir / f"worker-{self.started}.log")
        return self.proc

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
def shared(redis_server, tmp_path_factory):
    state = SharedWorker(redis_server.url, tmp_path_factory.mktemp("bad-payload-workers"))
    yield state
    state.close()


@pytest.fixture
def worker(shared, request) -> WorkerProcess:
    proc = shared.ensure()
    yield proc
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== worker {proc.pid} (rc={proc.returncode})\n{proc.log()[-6000:]}")


@pytest.fixture
def namespace(worker, shared) -> str:
    """Overrides conftest's: ``tm`` and ``rds`` work in the shared worker's namespace."""
    return shared.namespace


def task_key(namespace: str, task_id: str) -> str:
    return Keys(namespace).task(task_id)


def expect_failed(tm: TaskManager, worker: WorkerProcess, task_id: str,
                  error_type: str | tuple[str, ...], *, execute: bool = False) -> TaskError:
    """Waits for the task to end (failing fast if the worker dies meanwhile)
    and asserts it ended FAILED with ``error_type``."""
    if execute:
        tm.execute_task_sync(task_id)
    wait_until(lambda: worker.returncode is not None or tm.get_task_status(task_id).is_terminal,
               timeout=WAIT, what=f"task {task_id} to end")
    assert worker.returncode is None, (
        f"the worker died (rc={worker.returncode}) on task {task_id}; log tail:\n"
        f"{worker.log()[-3000:]}")
    assert tm.get_task_status(task_id) is TaskStatus.FAILED
    error = tm.get_task_error(task_id)
    assert error is not None
    assert error.type in ((error_type,) if isinstance(error_type, str) else error_type), error
    assert isinstance(error.message, str) and error.message
    assert error.attempt == 1
    return error


def assert_worker_goes_on(tm: TaskManager, worker: WorkerProcess) -> None:
    """A good task registered now completes on the same, still-running worker."""
    good = tm.register_task("tests.tasks:worker_pid")
    assert tm.wait_for_task_sync(good, timeout=WAIT) == worker.pid
    assert worker.returncode is None, worker.log()


# ---- payloads that do not decode ---------------------------------------------------

GARBAGE = {
    "random-bytes": b"\xc1\x00garbage\xff\xfe not msgpack",
    "empty": b"",
    "msgpack-not-envelope": msgpack.packb({"f": "tests.tasks:add"}),
    "wrong-version": msgpack.packb([99, msgpack.packb({"f": "tests.tasks:add"}), None]),
    "body-not-msgpack": msgpack.packb([1, b"\xc1\xc1\xc1", None]),
    "body-not-a-task": msgpack.packb([1, msgpack.packb([1, 2, 3]), None]),
    "body-no-function": msgpack.packb([1, msgpack.packb({"a": [1], "k": {}}), None]),
    "function-is-an-int": msgpack.packb([1, msgpack.packb({"f": 7, "a": [], "k": {}}), None]),
    "args-not-a-list": msgpack.packb(
        [1, msgpack.packb({"f": "tests.tasks:add", "a": "xy", "k": {}}), None]),
    "unknown-ext-type": msgpack.packb(
        [1, msgpack.packb({"f": msgpack.ExtType(99, b"??"), "a": [], "k": {}}), None]),
    "truncated-pickle": msgpack.packb(
        [1, msgpack.packb({"f": msgpack.ExtType(2, b"\x80\x05\x95"), "a": [], "k": {}}), None]),
}


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
def test_undecodable_payload_fails_task_worker_goes_on(tm, rds, namespace, worker, garbage):
    task_id = tm.register_task(tasks.add, 1, 2, defer=True)
    rds.hset(task_key(namespace, task_id), "payload", garbage)
    error = expect_failed(tm, worker, task_id, "PayloadDecodeError", execute=True)
    assert "payload" in error.message
    assert_worker_goes_on(tm, worker)


def test_missing_payload_field_fails_task(tm, rds, namespace, worker):
    task_id = tm.register_task(tasks.add, 1, 2, defer=True)
    assert rds.hdel(task_key(namespace, task_id), "payload") == 1
    expect_failed(tm, worker, task_id, "PayloadDecodeError", execute=True)
    assert_worker_goes_on(tm, worker)


def test_payload_whose_unpickling_raises_fails_task(tm, worker):
    task_id = tm.register_task(tasks.echo, bad_tasks.RaiseOnUnpickle())
    error = expect_failed(tm, worker, task_id, "PayloadDecodeError")
    assert "not a number" in error.message
    assert_worker_goes_on(tm, worker)


def test_payload_whose_unpickling_calls_sys_exit_does_not_kill_worker(tm, worker):
    """A pickled argument whose loading raises SystemExit is a bad payload
    like any other: the task fails, the worker lives."""
    task_id = tm.register_task(tasks.echo, bad_tasks.ExitOnUnpickle())
    expect_failed(tm, worker, task_id, ("PayloadDecodeError", "SystemExit"))
    assert_worker_goes_on(tm, worker)


def test_deeply_nested_tuple_argument_does_not_kill_worker(tm, worker):
    """A legitimate value the producer encodes without complaint (a tuple
    nested 200 deep, about 1 KB) must not crash the worker decoding it."""
    nested: tuple = ()
    for _ in range(200):
        nested = (nested, 1)
    task_id = tm.register_task("tests.bad_tasks:first_arg_type", nested)
    wait_until(lambda: worker.returncode is not None or tm.get_task_status(task_id).is_terminal,
               timeout=WAIT, what=f"task {task_id} to end")
    assert worker.returncode is None, (
        f"the worker died (rc={worker.returncode}) decoding a nested tuple; log tail:\n"
        f"{worker.log()[-3000:]}")
    if tm.get_task_status(task_id) is TaskStatus.COMPLETED:
        assert tm.get_task_result(task_id) == "tuple"
    else:
        expect_failed(tm, worker, task_id, "PayloadDecodeError")
    assert_worker_goes_on(tm, worker)


# ---- imports that fail ---------------------------------------------------------------

def test_missing_module_fails_task(tm, worker):
    task_id = tm.register_task("tests.no_such_module:f")
    error = expect_failed(tm, worker, task_id, "ModuleNotFoundError")
    assert "tests.no_such_module" in error.message
    assert_worker_goes_on(tm, worker)


def test_missing_attribute_fails_task(tm, worker):
    task_id = tm.register_task("tests.bad_tasks:missing_attr")
    error = expect_failed(tm, worker, task_id, "ImportError")
    assert "tests.bad_tasks" in error.message and "missing_attr" in error.message
    assert_worker_goes_on(tm, worker)


def test_import_string_to_non_callable_fails_task(tm, worker):
    task_id = tm.register_task("tests.bad_tasks:threading")  # a module, not a callable
    error = expect_failed(tm, worker, task_id, "TypeError")
    assert "not a callable" in error.message
    assert_worker_goes_on(tm, worker)


# ---- results that cannot be serialized -------------------------------------------------

@pytest.mark.parametrize("func", ["tests.bad_tasks:return_lock", "tests.bad_tasks:return_generator",
                                  bad_tasks.return_lock])
@pytest.mark.parametrize("executor_type", ["async", "thread_pool", "sequential"])
def test_unserializable_result_fails_task(tm, worker, func, executor_type):
    task_id = tm.register_task(func, executor_type=executor_type)
    error = expect_failed(tm, worker, task_id, "SerializationError")
    assert "result" in error.message
    assert tm.get_task_result(task_id) is None
    assert_worker_goes_on(tm, worker)


# ---- exceptions that cannot be pickled, or printed ---------------------------------------

@pytest.mark.parametrize(
    "func, type_name, message",
    [
        (bad_tasks.raise_needs_args, "NeedsArgsError", "code 42: needs two args"),
        (bad_tasks.raise_lock_holding, "LockHoldingError", "holding a lock"),
        ("tests.bad_tasks:raise_lock_holding", "LockHoldingError", "holding a lock"),
        (bad_tasks.async_raise_lock_holding, "LockHoldingError", "holding a lock, async"),
    ],
    ids=["needs-args", "holds-lock", "holds-lock-import", "holds-lock-async"],
)
def test_unpicklable_exception_fails_task(tm, worker, func, type_name, message):
    task_id = tm.register_task(func)
    error = expect_failed(tm, worker, task_id, type_name)
    assert error.message == message
    assert type_name in error.traceback
    assert_worker_goes_on(tm, worker)


@pytest.mark.parametrize("executor_type", ["async", "thread_pool"])
def test_exception_whose_str_raises_fails_task(tm, worker, executor_type):
    task_id = tm.register_task(bad_tasks.raise_bad_str, executor_type=executor_type)
    error = expect_failed(tm, worker, task_id, "BadStrError")
    assert "BadStrError" in error.message  # e.g. "<unprintable BadStrError>"
    assert "raise_bad_str" in error.traceback
    assert_worker_goes_on(tm, worker)


# ---- interpreter-exit exceptions inside tasks ------------------------------------------

@pytest.mark.parametrize(
    "func, executor_type, type_name",
    [
        ("tests.bad_tasks:call_sys_exit", "thread_pool", "SystemExit"),
        ("tests.bad_tasks:call_sys_exit", "async", "SystemExit"),  # a sync func: thread
        ("tests.bad_tasks:call_sys_exit", "sequential", "SystemExit"),
        ("tests.bad_tasks:raise_system_exit", "thread_pool", "SystemExit"),
        ("tests.bad_tasks:raise_keyboard_interrupt", "thread_pool", "KeyboardInterrupt"),
        ("tests.bad_tasks:raise_keyboard_interrupt", "sequential", "KeyboardInterrupt"),
    ],
)
def test_exit_exceptions_in_thread_tasks_fail_task(tm, worker, func, executor_type, type_name):
    task_id = tm.register_task(func, executor_type=executor_type)
    expect_failed(tm, worker, task_id, type_name)
    assert_worker_goes_on(tm, worker)


@pytest.mark.parametrize(
    "func, type_name",
    [("tests.bad_tasks:async_sys_exit", "SystemExit"),
     ("tests.bad_tasks:async_keyboard_interrupt", "KeyboardInterrupt")],
)
def test_exit_exceptions_in_coroutine_tasks_fail_task(tm, worker, func, type_name):
    """The same in an ``async def`` task on the worker's loop: asyncio re-raises
    SystemExit/KeyboardInterrupt out of the loop unless the worker stops it."""
    task_id = tm.register_task(func)
    expect_failed(tm, worker, task_id, type_name)
    assert_worker_goes_on(tm, worker)


# ---- oversize payloads ------------------------------------------------------------------

def fresh_namespace() -> str:
    return f"t{uuid.uuid4().hex[:16]}"


def test_payload_over_limit_is_refused_at_registration(redis_server, rds):
    namespace = fresh_namespace()
    with TaskManager(redis_server.url, namespace=namespace, max_payload_bytes=2000) as tm:
        before = namespace_snapshot(rds, namespace)
        with pytest.raises(PayloadTooLargeError) as info:
            tm.register_task(tasks.echo, "x" * 5000)
        assert isinstance(info.value, SerializationError)
        assert "2000" in str(info.value)
        with pytest.raises(PayloadTooLargeError):
            tm.register_task("tests.tasks:echo", kwargs={"blob": b"\0" * 3000})
        with pytest.raises(PayloadTooLargeError):  # closure capturing a big value
            big = "y" * 5000
            tm.register_task(lambda: big)
        with pytest.raises(PayloadTooLargeError):  # one bad item: none stored
            tm.register_many(tasks.echo, ["small", "z" * 5000, "small"])
        assert namespace_snapshot(rds, namespace) == before
        # under the limit is fine
        task_id = tm.register_task(tasks.echo, "x" * 100)
        assert tm.get_task_status(task_id) is TaskStatus.QUEUED


def test_default_limit_is_16_mib(redis_server, rds):
    namespace = fresh_namespace()
    with TaskManager(redis_server.url, namespace=namespace) as tm:
        with pytest.raises(PayloadTooLargeError):
            tm.register_task("tests.tasks:echo", b"\0" * (16 * 1024 * 1024 + 1))
        assert namespace_snapshot(rds, namespace) == {}


# ---- event handlers that raise ------------------------------------------------------------

def test_raising_event_handler_does_not_stop_others(tm, worker):
    got: queue.Queue[str] = queue.Queue()
    raised = threading.Event()

    def explode(event):
        raised.set()
        raise RuntimeError("handler failure")

    async def async_explode(event):
        raise RuntimeError("async handler failure")

    def good(event):
        got.put(event.task_id)

    subs = [tm.subscribe(EventType.TASK_COMPLETED, explode),
            tm.subscribe(EventType.TASK_COMPLETED, async_explode),
            tm.subscribe(EventType.TASK_COMPLETED, good)]
    def seen(task_id: str) -> None:
        while got.get(timeout=WAIT) != task_id:
            pass

    try:
        first = tm.register_task(tasks.add, 1, 1)
        assert tm.wait_for_task_sync(first, timeout=WAIT) == 2
        seen(first)
        assert raised.wait(WAIT)
        # later events still reach the good handler (and the raising one)
        raised.clear()
        second = tm.register_task(tasks.add, 2, 2)
        assert tm.wait_for_task_sync(second, timeout=WAIT) == 4
        seen(second)
        assert raised.wait(WAIT)
    finally:
        for sub in subs:
            sub.close()


# ---- corrupt task records --------------------------------------------------------------

def test_corrupt_timeout_field_does_not_kill_worker(tm, rds, namespace, worker):
    """A record whose stored ``timeout`` is not a number (written straight to
    Redis, like the garbage payloads above) must fail that task, not crash the
    worker's claim loop (and every worker that later recovers the task).
    The task has a timeout, so the record holds the field that goes bad (a
    record registered without options is marked ``plain`` and its options
    are never read: register.lua)."""
    task_id = tm.register_task(tasks.add, 1, 2, defer=True, timeout=30)
    rds.hset(task_key(namespace, task_id), "timeout", "not-a-number")
    expect_failed(tm, worker, task_id, ("PayloadDecodeError", "StoreError", "ValueError"),
                  execute=True)
    assert_worker_goes_on(tm, worker)


# ---- a task's own objects raising SystemExit / KeyboardInterrupt (issue 8 item 1) --------

@pytest.mark.parametrize(
    "func, executor_type",
    [("tests.bad_tasks:return_exit_on_pickle", "thread_pool"),
     ("tests.bad_tasks:return_exit_on_pickle", "sequential"),
     ("tests.bad_tasks:return_interrupt_on_pickle", "thread_pool"),
     ("tests.bad_tasks:async_return_exit_on_pickle", "async")],
)
def test_result_whose_reduce_raises_exit_fails_only_that_task(tm, worker, func, executor_type):
    """Serializing the result runs the result's ``__reduce__``: SystemExit or
    KeyboardInterrupt from it is a SerializationError for that task, never the
    end of the worker (else the task is a poison pill for the whole fleet)."""
    task_id = tm.register_task(func, executor_type=executor_type)
    error = expect_failed(tm, worker, task_id, "SerializationError")
    assert "result" in error.message
    assert ("SystemExit" in error.message) or ("KeyboardInterrupt" in error.message)
    assert_worker_goes_on(tm, worker)


@pytest.mark.parametrize("func", ["tests.bad_tasks:raise_exit_on_str",
                                  "tests.bad_tasks:async_raise_exit_on_str"])
def test_exception_whose_str_raises_exit_fails_only_that_task(tm, worker, func):
    task_id = tm.register_task(func)
    error = expect_failed(tm, worker, task_id, "ExitOnStrError")
    assert "unprintable" in error.message
    assert "ExitOnStrError" in error.traceback
    assert_worker_goes_on(tm, worker)
