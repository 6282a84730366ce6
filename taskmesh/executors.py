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
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
import types
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

from .context import TaskContext, _current
from .exceptions import TaskTimeoutError
from .models import ExecutorType
from .serialization import Codec, resolve_import
from .store import ClaimedTask

if TYPE_CHECKING:
    from .process_pool import ProcessPool

LANE_WAIT_REPORT_MS = 5  # shorter local waits are not worth a correction


SEQUENTIAL_LANE = 2  # one running + at most one waiting (README *Workers*)
PROCESS_LANE_PER_CHILD = 2  # likewise, per process-executor child


class Job:
    """A claimed task on its way through this worker: the one owner of its
    attempt on the worker side. Only the Job (and the executors running it)
    changes its state, and only through the Job does anything reach the
    attempt's :class:`TaskContext`."""

    __slots__ = ("claimed", "id", "timeout", "context", "func", "args", "kwargs", "codec", "is_coroutine",
                 "started", "inline", "runner", "execution", "cancel_reason", "slot_freed",
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
        ctx = contextvars.copy_context()
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
        elif (self.is_coroutine or self.runs_in_child) and self.execution is not None:
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


async def supervise(job: Job, execution: asyncio.Future[Any]) -> Any:
    job.execution = execution
    job.started = True
    job.executed_at = started = time.monotonic()
    if job.timeout is None:
        return await execution
    try:
        result = await asyncio.wait_for(asyncio.shield(execution), job.timeout)
    except TimeoutError:
        execution.cancel()  # effective for coroutines; a thread runs on
        raise job.timed_out() from None
    # While the loop was blocked (by another task) the deadline timer could
    # not fire; a function that ran past its timeout meanwhile still failed it.
    if job.returned_at is not None and job.returned_at - started > job.timeout:
        raise job.timed_out()
    return result


def _stamped(job: Job, call: Callable[[], Any]) -> Any:
    """Runs ``call`` in the pool thread, stamping when it returned: the loop
    may only see the result much later."""
    try:
        return call()
    finally:
        job.returned_at = time.monotonic()


def run_coroutine(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return asyncio.run(func(*args, **kwargs))


class EscapedExit(Exception):
    """Carries a SystemExit/KeyboardInterrupt raised by a coroutine task.

    asyncio re-raises those two out of the event loop, which would end the
    worker; wrapped, they fail only the task (recorded under their own name).
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


class Executor:
    async def run(self, job: Job) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class ThreadExecutor(Executor):
    def __init__(self, pool: ThreadPoolExecutor):
        self.pool = pool

    def submit(self, job: Job) -> asyncio.Future[Any]:
        target = job.func
        assert target is not None, "job submitted before its function was resolved"
        if job.is_coroutine:  # a coroutine function sent to the pool gets a loop of its own
            target = functools.partial(run_coroutine, target)
        call = functools.partial(job.fresh_context().run, target, *job.args, **job.kwargs)
        return asyncio.get_running_loop().run_in_executor(
            self.pool, functools.partial(_stamped, job, call))

    async def run(self, job: Job) -> Any:
        return await supervise(job, self.submit(job))


class AsyncExecutor(Executor):
    def __init__(self, threads: ThreadExecutor):
        self.threads = threads

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
        return await supervise(job, self.submit(job))

    def submit(self, job: Job) -> asyncio.Future[Any]:
        if not job.is_coroutine:
            return self.threads.submit(job)
        coro = _contained(job.func(*job.args, **job.kwargs), job)  # type: ignore[misc]
        return asyncio.get_running_loop().create_task(coro, context=job.fresh_context())


class SequentialExecutor(Executor):
    def __init__(self, inner: AsyncExecutor):
        self.inner = inner
        self.lane = asyncio.Lock()  # FIFO: waiters acquire in arrival order
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskmesh-seq")
        self.lane_threads = ThreadExecutor(self.pool)

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
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProcessExecutor(Executor):
    """Runs the task in a child process of the pool; the outcome comes back
    already encoded (an :class:`EncodedOutcome`)."""

    def __init__(self, pool: "ProcessPool"):
        self.pool = pool

    async def run(self, job: Job) -> EncodedOutcome:
        return await self.pool.run(job)


def build_executors(pool: ThreadPoolExecutor,
                    processes: "ProcessPool | None" = None) -> dict[str, Executor]:
    threads = ThreadExecutor(pool)
    async_ = AsyncExecutor(threads)
    executors: dict[str, Executor] = {
        ExecutorType.THREAD_POOL: threads, ExecutorType.ASYNC: async_,
        ExecutorType.SEQUENTIAL: SequentialExecutor(async_)}
    if processes is not None:
        executors[ExecutorType.PROCESS] = ProcessExecutor(processes)
    return executors
