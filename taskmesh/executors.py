"""How a claimed task's function is run: one strategy object per executor_type.

* ``async``       coroutine functions run as asyncio tasks on the worker loop;
                  a plain function given to ``async`` runs in the thread pool
                  so it never blocks the loop.
* ``thread_pool`` the worker's thread pool (``--threads``).
* ``sequential``  one at a time, in claim order: a FIFO lane that is held
                  until the function really returns, even past its timeout.
* ``process``     a child process of the worker's pool (``--processes``),
                  see :mod:`taskmesh.process_pool`: its timeout and cancel
                  are hard (the child is killed), and the child encodes the
                  outcome itself (an :class:`EncodedOutcome`).

Every strategy produces an asyncio future for "the function finished" and
hands it to :func:`supervise`, which applies the timeout: an async function
is cancelled at the deadline; a thread cannot be killed, so its task is
failed at the deadline, ``current_task().cancelled`` is set, and the future
is left to finish (the worker keeps the slot until it does).

Plain functions run on :class:`TaskThreads`, not on a ThreadPoolExecutor
through ``run_in_executor``: see that class for why.

A plain function without a timeout needs no supervision and no runner
coroutine: :meth:`Executor.start` queues it on the threads with a callback
(``then``) that gets its outcome on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import threading
import time
import types
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

from .context import TaskContext, _current
from .exceptions import TaskTimeoutError
from .models import ExecutorType
from .serialization import Codec, resolve_import
from .store import ClaimedTask

if TYPE_CHECKING:
    from .process_pool import ProcessPool

log = logging.getLogger(__name__)

LANE_WAIT_REPORT_MS = 5  # shorter local waits are not worth a correction


SEQUENTIAL_LANE = 2  # one running + at most one waiting (README *Workers*)
PROCESS_LANE_PER_CHILD = 2  # likewise, per process-executor child


class Job:
    """A claimed task on its way through this worker: the one owner of its
    attempt on the worker side. Only the Job (and the executors running it)
    changes its state, and only through the Job does anything reach the
    attempt's :class:`TaskContext`."""

    __slots__ = ("claimed", "id", "timeout", "context", "func", "args", "kwargs", "codec", "is_coroutine",
                 "started", "inline", "in_thread", "runner", "execution", "cancel_reason", "slot_freed",
                 "claimed_at", "executed_at", "returned_at", "error_pickle")

    def __init__(self, claimed: ClaimedTask, context: TaskContext):
        self.claimed = claimed
        self.id = claimed.id
        self.timeout = claimed.timeout
        self.context = context
        self.func: Callable[..., Any] | None = None
        self.args: list[Any] = []
        self.kwargs: dict[str, Any] = {}
        self.codec: Any = None  # the Codec its outcome is encoded with (Codec.outcome_codec)
        self.is_coroutine = False  # known once the function is resolved (set_function)
        self.started = False
        # The coroutine runs inside the runner task itself (no timeout, async
        # executor): cancelling it means cancelling the runner.
        self.inline = False
        # The function runs on a task thread (TaskThreads): its future is
        # never cancelled, it resolves when the function has really returned.
        self.in_thread = False
        self.runner: asyncio.Task[None] | None = None  # the worker's coroutine driving this job
        self.execution: asyncio.Future[Any] | None = None  # the function itself
        self.cancel_reason: str | None = None  # "cancel" (user) or "shutdown"
        self.slot_freed = False
        self.claimed_at = time.monotonic()
        self.executed_at: float | None = None  # monotonic time the function started
        self.returned_at: float | None = None  # monotonic time it returned (stamped where it ran)
        self.error_pickle: bytes | None = None  # the task's exception, pickled (taskmesh.remote)

    def set_function(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                     codec: Any) -> None:
        self.func, self.args, self.kwargs, self.codec = func, args, kwargs, codec
        self.is_coroutine = is_coroutine_callable(func)

    @property
    def queued_locally_ms(self) -> int:
        """How long the claimed task waited here before its function started
        (only a sequential lane makes this more than a few ms)."""
        if self.executed_at is None:
            return 0
        waited = int((self.executed_at - self.claimed_at) * 1000)
        return waited if waited >= LANE_WAIT_REPORT_MS else 0

    @property
    def runs_in_child(self) -> bool:
        """A process task: decoded and run in a child, stopped by killing it."""
        return self.claimed.executor == ExecutorType.PROCESS

    def fresh_context(self) -> contextvars.Context:
        """A copy of the current context with current_task() set to this
        attempt (already so when called from the job's runner: no ``set``)."""
        ctx = contextvars.copy_context()
        if ctx.get(_current) is not self.context:
            ctx.run(_current.set, self.context)
        return ctx

    def request_cancel(self) -> None:
        """User cancellation: asyncio cancel for coroutines and process tasks
        (whose executor kills the child), a flag for threads."""
        self.cancel_reason = self.cancel_reason or "cancel"
        self._stop_function()

    def request_shutdown(self) -> None:
        """The worker stops: the function is cancelled like a user
        cancellation, but the attempt is handed back, not reported."""
        self.cancel_reason = "shutdown"
        self._stop_function()

    def _stop_function(self) -> None:
        self.context.signal_cancel()
        if self.inline:
            if self.returned_at is None and self.runner is not None:
                self.runner.cancel()
        elif not self.in_thread and self.execution is not None:
            self.execution.cancel()

    def timed_out(self) -> TaskTimeoutError:
        """The attempt passed its deadline: the function is told (a thread
        cannot be stopped) and the error to report is returned."""
        self.context.signal_cancel()
        return TaskTimeoutError(f"attempt exceeded its timeout of {self.timeout:g} s")


def lane_slots(jobs: Iterable[Job], processes: int) -> tuple[int, int]:
    """The sequential-lane rule, as a claim asks for it: how many more
    sequential tasks and process tasks this worker may claim. One sequential
    task runs and at most one waits in the lane (more would wait here while
    another worker could run them); likewise two process tasks per child."""
    sequential = process = 0
    for job in jobs:
        executor = job.claimed.executor
        if executor == ExecutorType.SEQUENTIAL:
            sequential += 1
        elif executor == ExecutorType.PROCESS:
            process += 1
    return (max(SEQUENTIAL_LANE - sequential, 0),
            max(PROCESS_LANE_PER_CHILD * processes - process, 0))


def open_payload(codec: Codec, task_id: str,
                 payload: bytes) -> tuple[Callable[..., Any], list[Any], dict[str, Any], Codec]:
    """A claimed task's function, arguments, and the codec its outcome is
    encoded with: the one rule for the worker and a process child alike."""
    payload_codec = codec.for_payload(task_id)
    func, args, kwargs = payload_codec.decode_task(payload)
    target = resolve_import(func) if isinstance(func, str) else func
    return target, args, kwargs, payload_codec.outcome_codec(payload)


def is_coroutine_callable(func: Any) -> bool:
    # Also async callable objects (an instance with ``async def __call__``).
    # Plain functions (what tasks nearly always are) are answered from the
    # code flags directly: inspect's general path costs a few µs per task.
    if type(func) is types.FunctionType and not hasattr(func, "_is_coroutine_marker"):
        return bool(func.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


class EncodedOutcome(NamedTuple):
    """An outcome already encoded where the function ran (a process child):
    ``kind`` is "completed" (``data`` the result envelope) or "failed"
    (``data`` the TaskError JSON; ``error_pickle`` the exception as
    :mod:`taskmesh.remote` stores it)."""

    kind: str
    data: bytes | str
    retryable: bool
    error_pickle: bytes | None = None


def _begin(job: Job, execution: asyncio.Future[Any]) -> float:
    """The function has been handed to its executor: the job says so."""
    job.execution = execution
    job.started = True
    job.executed_at = started = time.monotonic()
    return started


async def supervise(job: Job, execution: asyncio.Future[Any]) -> Any:
    started = _begin(job, execution)
    if job.timeout is None:
        return await execution
    try:
        result = await asyncio.wait_for(asyncio.shield(execution), job.timeout)
    except TimeoutError:
        if not job.in_thread:  # a thread runs on; its future tells when it returned
            execution.cancel()
        raise job.timed_out() from None
    # While the loop was blocked (by another task) the deadline timer could
    # not fire; a function that ran past its timeout meanwhile still failed it.
    if job.returned_at is not None and job.returned_at - started > job.timeout:
        raise job.timed_out()
    return result


def run_coroutine(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return asyncio.run(func(*args, **kwargs))


class EscapedExit(Exception):
    """Carries a SystemExit/KeyboardInterrupt raised by a coroutine task.

    asyncio re-raises those two out of the event loop, which would end the
    worker; wrapped, they fail only the task (recorded under their own name).
    Also a StopIteration from a thread task, which an asyncio future refuses.
    """

    def __init__(self, original: BaseException):
        super().__init__(repr(original))
        self.original = original


async def _contained(coro: Any, job: Job) -> Any:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise EscapedExit(exc) from exc
    finally:
        job.returned_at = time.monotonic()


# What a task thread's return is handed to, on the loop, when the job was
# started without a runner (Executor.start): the job, whether the function
# returned (True, its result) or raised (False, its exception).
Returned = Callable[[Job, bool, Any], None]


class Executor:
    # Whether start() may take a job (the worker decodes the payload first
    # only then): the executors that run plain functions on the task threads.
    may_start = False

    async def run(self, job: Job) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def start(self, job: Job, then: Returned) -> bool:
        """Runs a job without a runner coroutine when nothing needs one (a
        plain function on the task threads, no timeout): ``then`` gets its
        outcome on the loop, called straight from the threads' delivery (no
        future awaited, no task woken). False: use :meth:`run` instead."""
        return False


class _Work(NamedTuple):
    """One function call queued for a task thread; ``then`` (if any) is
    called on the loop with its outcome once ``future`` is resolved."""

    job: Job
    context: contextvars.Context
    target: Callable[..., Any]
    future: asyncio.Future[Any]
    then: Returned | None


class TaskThreads:
    """The worker's threads for plain functions: at most ``size`` long-lived
    threads (started as work first needs them) taking calls from one queue.

    Why not a ThreadPoolExecutor through ``run_in_executor``: that costs,
    per task, a futex wake-up of a pool thread (and a GIL hand-off to it), a
    concurrent future with an asyncio future chained to it, and one
    ``call_soon_threadsafe`` (a write to the loop's self-pipe and one more
    GIL hand-off) to resolve it: ~55 µs of worker CPU per no-op task, more
    than the whole rest of its life here. Instead:

    * a thread that finishes a function takes the next queued call without
      sleeping; a sleeping thread is woken only when no awake thread is
      between calls (a thread that takes a call while more are queued wakes
      the next one, so blocking functions still get a thread each, up to
      ``size``, as before);
    * a call's outcome is appended to one list, and the loop is woken once
      per burst of outcomes (only when the list was empty), by one callback
      that resolves them all;
    * a call submitted with ``then`` (a job without a runner, Executor.start)
      has ``then`` called right there with its outcome: no coroutine is
      resumed per task.
    """

    def __init__(self, size: int, name_prefix: str):
        self.size = size
        self.name_prefix = name_prefix
        self._lock = threading.Lock()  # guards everything below
        self._queue: collections.deque[_Work] = collections.deque()
        self._sleeping: list[threading.Lock] = []  # gates of idle threads; released to wake one
        self._spare = 0  # threads awake and not in a function: they look at the queue next
        self._threads: list[threading.Thread] = []
        # Outcomes the loop has not taken yet: (call, ok, result or exception).
        self._outcomes: list[tuple[_Work, bool, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def submit(self, job: Job, target: Callable[..., Any],
               then: Returned | None = None) -> asyncio.Future[Any]:
        """Queues ``target(*job.args, **job.kwargs)`` in the job's context;
        the future resolves on the loop once the function has returned (and
        then ``then`` is called with the outcome)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        work = _Work(job, job.fresh_context(), target, future, then)
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker's task threads are shut down")
            self._loop = loop
            self._queue.append(work)
            if not self._spare:
                self._wake()
        return future

    def shutdown(self) -> None:
        """Drops the calls not started (their futures are cancelled; call
        this on the loop) and lets every thread end once its function returns."""
        with self._lock:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            while self._sleeping:
                self._spare += 1
                self._sleeping.pop().release()
        for work in dropped:
            work.future.cancel()

    def _wake(self) -> None:
        """Gets one more thread to look at the queue (lock held)."""
        if self._sleeping:
            self._spare += 1
            self._sleeping.pop().release()
        elif len(self._threads) < self.size:
            self._spare += 1
            thread = threading.Thread(target=self._serve, daemon=True,
                                      name=f"{self.name_prefix}_{len(self._threads)}")
            self._threads.append(thread)
            thread.start()

    def _serve(self) -> None:
        gate = threading.Lock()
        gate.acquire()
        lock = self._lock
        done: tuple[_Work, bool, Any] | None = None  # the last call's outcome
        while True:
            with lock:  # one lock hold per call: the last outcome in, the next call out
                notify = stop = False
                if done is not None:
                    self._spare += 1
                    notify = not self._outcomes
                    self._outcomes.append(done)
                    done = None
                if self._queue:
                    work: _Work | None = self._queue.popleft()
                    self._spare -= 1
                    if self._queue and not self._spare:
                        self._wake()  # the next queued call gets a thread too
                elif self._closed:
                    self._spare -= 1
                    work, stop = None, True
                else:
                    self._spare -= 1
                    self._sleeping.append(gate)
                    work = None
                loop = self._loop
            if notify and loop is not None:
                # Before the next call, which may block: the loop must not
                # wait on it to see this outcome.
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:
                    pass  # the worker's loop is closed: nobody waits for the outcome
            if work is not None:
                job = work.job
                try:
                    done = (work, True, work.context.run(work.target, *job.args, **job.kwargs))
                except BaseException as exc:  # SystemExit and KeyboardInterrupt fail only the task
                    done = (work, False, exc)
                job.returned_at = time.monotonic()  # the loop may see the outcome much later
            elif stop:
                return
            else:
                gate.acquire()  # until a _wake (which counted this thread spare)

    def _deliver(self) -> None:
        """On the loop: resolves every outcome that arrived since the last call."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        for work, ok, value in outcomes:
            future = work.future
            if future.cancelled():
                continue  # a dropped call (shutdown) or its runner gave up
            if ok:
                future.set_result(value)
            elif isinstance(value, StopIteration):  # which a future cannot carry
                future.set_exception(EscapedExit(value))
            else:
                future.set_exception(value)
            if work.then is not None:
                try:
                    work.then(work.job, ok, value)
                except Exception:  # must not keep the other outcomes from the loop
                    log.exception("task %s: handling its outcome failed", work.job.id)


class ThreadExecutor(Executor):
    may_start = True

    def __init__(self, threads: TaskThreads):
        self.threads = threads

    def submit(self, job: Job, then: Returned | None = None) -> asyncio.Future[Any]:
        target = job.func
        assert target is not None, "job submitted before its function was resolved"
        if job.is_coroutine:  # a coroutine function sent to the pool gets a loop of its own
            target = functools.partial(run_coroutine, target)
        job.in_thread = True
        return self.threads.submit(job, target, then)

    def start(self, job: Job, then: Returned) -> bool:
        if job.timeout is not None:  # supervised: by its runner (run)
            return False
        target = job.func
        assert target is not None, "job started before its function was resolved"
        if job.is_coroutine:
            target = functools.partial(run_coroutine, target)
        job.in_thread = True
        _begin(job, self.threads.submit(job, target, then))
        return True

    async def run(self, job: Job) -> Any:
        execution = self.submit(job)
        if job.timeout is None:  # nothing to supervise: one coroutine less per task
            _begin(job, execution)
            return await execution
        return await supervise(job, execution)

    def shutdown(self) -> None:
        self.threads.shutdown()


class AsyncExecutor(Executor):
    may_start = True  # its plain functions (on the task threads)

    def __init__(self, threads: ThreadExecutor):
        self.threads = threads

    def start(self, job: Job, then: Returned) -> bool:
        # A coroutine without a timeout runs inside its runner task (run).
        return not job.is_coroutine and self.threads.start(job, then)

    async def run(self, job: Job) -> Any:
        if job.timeout is None and job.is_coroutine:
            # Nothing to supervise: the coroutine runs in the job's runner
            # task (created in the job's context), not in a task of its own.
            job.inline = job.started = True
            job.executed_at = time.monotonic()
            try:
                # _contained's body, written out: one coroutine less per task.
                try:
                    return await job.func(*job.args, **job.kwargs)  # type: ignore[misc]
                except (SystemExit, KeyboardInterrupt) as exc:
                    raise EscapedExit(exc) from exc
                finally:
                    job.returned_at = time.monotonic()
            except asyncio.CancelledError:
                if job.cancel_reason == "cancel":
                    # The user's cancel was for the function, not the runner,
                    # which goes on to report it: its task is not cancelling.
                    runner = asyncio.current_task()
                    if runner is not None:
                        runner.uncancel()
                raise
        execution = self.submit(job)
        if job.timeout is None:  # a plain function in a thread: nothing to supervise
            _begin(job, execution)
            return await execution
        return await supervise(job, execution)

    def submit(self, job: Job) -> asyncio.Future[Any]:
        if not job.is_coroutine:
            return self.threads.submit(job)
        coro = _contained(job.func(*job.args, **job.kwargs), job)  # type: ignore[misc]
        return asyncio.get_running_loop().create_task(coro, context=job.fresh_context())


class SequentialExecutor(Executor):
    def __init__(self, inner: AsyncExecutor):
        self.inner = inner
        self.lane = asyncio.Lock()  # FIFO: waiters acquire in arrival order
        self.lane_threads = ThreadExecutor(TaskThreads(1, "taskmesh-seq"))

    async def run(self, job: Job) -> Any:
        await self.lane.acquire()
        try:
            if job.is_coroutine:
                execution = self.inner.submit(job)
            else:
                execution = self.lane_threads.submit(job)
        except BaseException:
            self.lane.release()
            raise
        # The lane frees when the function returns, not when we stop waiting.
        execution.add_done_callback(lambda _: self.lane.release())
        return await supervise(job, execution)

    def shutdown(self) -> None:
        self.lane_threads.shutdown()


class ProcessExecutor(Executor):
    """Runs the task in a child process of the pool; the outcome comes back
    already encoded (an :class:`EncodedOutcome`)."""

    def __init__(self, pool: "ProcessPool"):
        self.pool = pool

    async def run(self, job: Job) -> EncodedOutcome:
        return await self.pool.run(job)


def build_executors(threads_n: int,
                    processes: "ProcessPool | None" = None) -> dict[str, Executor]:
    """One executor per executor_type; ``threads_n`` task threads (``--threads``)."""
    threads = ThreadExecutor(TaskThreads(threads_n, "taskmesh-task"))
    async_ = AsyncExecutor(threads)
    executors: dict[str, Executor] = {
        ExecutorType.THREAD_POOL: threads, ExecutorType.ASYNC: async_,
        ExecutorType.SEQUENTIAL: SequentialExecutor(async_)}
    if processes is not None:
        executors[ExecutorType.PROCESS] = ProcessExecutor(processes)
    return executors
