"""The process executor's pool: N long-lived child processes per worker.

Why processes: a Python thread cannot be killed, so a runaway thread task
keeps its slot until it returns, and CPU-bound work shares one GIL. A child
process can be killed at once, which gives ``executor_type="process"`` its
hard timeout and hard cancel (README *Process executor*).

Design:

* Lazy: nothing starts until the first process task arrives, so a worker
  that never runs one pays nothing. Then ``size`` children are started and
  kept at that number: a child that is killed or dies is replaced at once.
* Fork-safe: the worker has threads (lease keeper, thread pool), and
  forking a threaded process can copy a held lock. Children come from the
  ``forkserver`` start method (a single-threaded server process, started
  once, with taskmesh preloaded, so a replacement child takes milliseconds)
  or ``spawn`` where there is no forkserver.
* The child decodes the payload bytes itself with the worker's Codec and
  sends back the encoded result or the error record (see
  :mod:`taskmesh.process_child` for the frames), so the worker never
  unpickles anything a task controls and outcomes look exactly like the
  other executors'.
* One reader thread per child turns its frames into loop callbacks. It also
  watches the child's sentinel, so a death (segfault, ``os._exit``, kill -9)
  is seen at once and fails the attempt with :class:`ProcessCrashedError`.
* Deadlines are armed when the child reports that the function starts;
  at the deadline the child gets SIGKILL, the attempt fails with
  TaskTimeoutError and the worker slot is free at once (the attempt's
  future is settled without waiting for the child to go).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .exceptions import ProcessCrashedError
from .executors import EncodedOutcome
from .process_child import pack, serve, unpack
from .serialization import Codec

if TYPE_CHECKING:
    from .executors import Job

log = logging.getLogger(__name__)

INLINE_SEND_BYTES = 256 * 1024  # larger "run" frames are written off the loop
SPAWN_RETRY_S = 1.0
SPAWN_RETRY_MAX_S = 30.0
READY_TIMEOUT_S = 30.0
CLOSE_WAIT_S = 1.0
SEND_ATTEMPTS = 3
CHILD_NAME = "taskmesh-process-child"


def _mp_context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["taskmesh.process_child"])
        return ctx
    return multiprocessing.get_context("spawn")


_POOLS: "weakref.WeakSet[ProcessPool]" = weakref.WeakSet()


@functools.cache
def _kill_children_at_exit() -> None:
    """Children ignore SIGTERM, so multiprocessing's own exit handler (which
    terminates daemonic children, then joins them) would wait for them
    forever if one outlived its pool (an embedded worker still running at
    exit, or a replacement that was starting when the worker's loop ended).
    Registered after multiprocessing's, this runs first: it tells the pools
    not to replace anyone, then SIGKILLs the children."""
    def kill() -> None:
        for pool in list(_POOLS):
            pool._closing = True
        for proc in multiprocessing.active_children():
            if proc.name == CHILD_NAME:
                proc.kill()

    atexit.register(kill)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the child process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the child process was killed by {name}"
    return f"the child process exited with code {code}"


class _Attempt:
    """One task on one child: settled by a frame, a deadline, or the child's death."""

    def __init__(self, job: "Job", child: "Child", loop: asyncio.AbstractEventLoop):
        self.job = job
        self.child = child
        self.done: asyncio.Future[EncodedOutcome] = loop.create_future()
        self.deadline: asyncio.TimerHandle | None = None

    def settle(self, result: EncodedOutcome | None = None,
               error: BaseException | None = None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        if self.done.done():
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(result)  # type: ignore[arg-type]

    def abandon(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.done.cancel()  # no-op once settled


class Child:
    """One child process, its pipe, and the thread reading that pipe."""

    def __init__(self, pool: "ProcessPool", proc: Any, conn: Any):
        self.pool = pool
        self.proc = proc
        self.conn = conn
        self.attempt: _Attempt | None = None
        self.retired = False
        self.reader = threading.Thread(target=self._read, daemon=True,
                                       name=f"taskmesh-proc-{proc.pid}")
        self.reader.start()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def kill(self) -> None:
        try:
            self.proc.kill()
        except (OSError, ValueError, AttributeError):
            pass  # already gone (or already closed)

    def stop(self) -> None:
        """Asks an idle child to exit. (Closing our end would not do: the
        reader thread polls it, which keeps the socket open.)"""
        try:
            self.conn.send_bytes(pack("stop"))
        except (OSError, ValueError):
            self.kill()

    # ---- reader thread -------------------------------------------------------
    def _read(self) -> None:
        while True:
            try:
                ready = multiprocessing.connection.wait([self.conn, self.proc.sentinel])
                if self.conn not in ready:
                    break  # sentinel only: the child is gone, nothing left to read
                frame = unpack(self.conn.recv_bytes())
            except (EOFError, OSError, ValueError):
                break
            except Exception:
                log.exception("process child %d sent an unreadable frame; killing it", self.pid)
                self.kill()
                break
            self._dispatch(frame)
        try:
            self.proc.join(CLOSE_WAIT_S)
            code = self.proc.exitcode
        except (OSError, ValueError, AssertionError):
            code = None
        self.conn.close()  # only here: this thread is the one polling it
        self.pool.call_soon(self.pool.on_exit, self, code)

    @staticmethod
    def _forward(attempt: Any, frame: list[Any], final: bool) -> None:
        try:
            attempt.job.context.forward(frame[1], frame[2], final)
        except Exception as exc:
            log.debug("task %s: progress update dropped: %s", attempt.job.id, exc)

    def _dispatch(self, frame: list[Any]) -> None:
        attempt = self.attempt
        if attempt is None:
            return
        kind = frame[0]
        if kind == "started":
            self.pool.call_soon(self.pool.on_started, attempt)
        elif kind == "progress" and len(frame) == 3:
            # Throttled by the child's own context already; best effort,
            # never fails the task.
            self._forward(attempt, frame, final=False)
        elif kind == "final" and len(frame) == 3:
            # The child's last coalesced value (always published). It is
            # queued before the "done" frame is, so it lands before the outcome.
            self._forward(attempt, frame, final=True)
        elif kind == "done" and len(frame) >= 4:
            pickled = frame[4] if len(frame) > 4 and isinstance(frame[4], bytes) else None
            outcome = EncodedOutcome(str(frame[1]), frame[2], bool(frame[3]), pickled)
            self.pool.call_soon(attempt.settle, outcome)


class ProcessPool:
    """Keeps ``size`` children and lends one to each running process task."""

    def __init__(self, size: int, codec: Codec):
        if size < 1:
            raise ValueError("processes must be >= 1")
        self.size = size
        self.codec = codec
        self._children: set[Child] = set()
        self._starting = 0
        self._spawns: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Queue[Child] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._draining = False  # the worker is stopping: replace no child
        self._spawn_delay = SPAWN_RETRY_S
        _POOLS.add(self)

    def call_soon(self, callback: Any, *args: Any) -> None:
        """From a reader thread onto the worker's loop (a no-op once it closed)."""
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the worker's loop is closed: it has stopped

    # ---- running one task ------------------------------------------------------
    async def run(self, job: "Job") -> EncodedOutcome:
        """Runs the job on a child; raises TaskTimeoutError at its deadline,
        ProcessCrashedError if the child dies, CancelledError when cancelled
        (the child is killed in all three cases)."""
        loop = asyncio.get_running_loop()
        for tries in range(SEND_ATTEMPTS):
            child = await self._acquire_for(job)
            attempt = _Attempt(job, child, loop)
            child.attempt = attempt
            frame = pack("run", job.id, job.claimed.attempt, job.claimed.name,
                         job.claimed.metadata, job.claimed.payload)
            try:
                if len(frame) > INLINE_SEND_BYTES:
                    await asyncio.to_thread(child.conn.send_bytes, frame)
                else:
                    child.conn.send_bytes(frame)
            except (OSError, ValueError):
                # It died while idle; the task never reached it: use another.
                child.attempt = None
                self._retire(child)
                if tries == SEND_ATTEMPTS - 1:
                    raise ProcessCrashedError("could not hand the task to a child process")
                continue
            return await self._await(child, attempt)
        raise AssertionError("unreachable")

    async def _await(self, child: Child, attempt: _Attempt) -> EncodedOutcome:
        job = attempt.job
        job.execution = attempt.done  # cancel and slot accounting go through it
        if job.cancel_reason is not None:  # cancelled while a large frame was sent
            attempt.done.cancel()
        healthy = False
        try:
            outcome = await attempt.done
            healthy = True
            return outcome
        finally:
            child.attempt = None
            attempt.abandon()
            if healthy and not child.retired:
                self._release(child)
            else:  # timed out, cancelled, crashed: the child may be mid-task
                self._retire(child)

    def on_started(self, attempt: _Attempt) -> None:
        job = attempt.job
        job.started = True
        job.executed_at = time.monotonic()
        if job.timeout is not None and not attempt.done.done():
            attempt.deadline = asyncio.get_running_loop().call_later(
                job.timeout, self._expire, attempt)

    def _expire(self, attempt: _Attempt) -> None:
        if attempt.child.attempt is attempt:
            attempt.child.kill()  # at once: the function may be stuck in C code
        attempt.settle(error=attempt.job.timed_out())

    def on_exit(self, child: Child, code: int | None) -> None:
        attempt = child.attempt
        if attempt is not None:
            why = _describe_exit(code)
            attempt.settle(error=ProcessCrashedError(f"{why} while running task {attempt.job.id}"))
        if not child.retired and not self._closing:
            log.warning("process child %d died (%s); starting a replacement", child.pid,
                        _describe_exit(code))
        self._retire(child)

    async def _acquire_for(self, job: "Job") -> Child:
        """Waits for an idle child. Until one is free, ``job.execution`` is
        a gate that Job.request_cancel cancels, so a task cancelled while it
        waits ends at once instead of when some child frees up."""
        if job.cancel_reason is not None:
            raise asyncio.CancelledError
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        job.execution = gate
        getter = asyncio.ensure_future(self._acquire())
        try:
            waiting: set[asyncio.Future[Any]] = {getter, gate}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the runner was cancelled (shutdown)
            gate.cancel()
            raise
        finally:
            if not getter.done():
                getter.cancel()  # a cancelled Queue.get leaves the child queued
            elif gate.done() and not getter.cancelled() and getter.exception() is None:
                self._release(getter.result())  # got one, but no longer wanted
        if gate.done():
            raise asyncio.CancelledError
        return getter.result()

    # ---- children ----------------------------------------------------------------
    async def _acquire(self) -> Child:
        if self._idle is None:
            self._loop = asyncio.get_running_loop()
            self._idle = asyncio.Queue()
            log.info("starting %d process-executor child(ren)", self.size)
            self._top_up()
        while True:
            child = await self._idle.get()
            if not child.retired:
                return child

    def _release(self, child: Child) -> None:
        if child.retired or self._idle is None:
            return
        if self._closing:
            child.stop()
        else:
            self._idle.put_nowait(child)

    def _retire(self, child: Child) -> None:
        """Kills (if needed) and forgets a child; a replacement starts at once."""
        if child.retired:
            return
        child.retired = True
        child.kill()  # its reader thread sees the death and closes the pipe
        self._children.discard(child)
        self._top_up()

    def _top_up(self) -> None:
        while (not self._closing and not self._draining
               and len(self._children) + self._starting < self.size):
            self._starting += 1
            task = asyncio.get_running_loop().create_task(self._spawn(), name="taskmesh-proc-spawn")
            self._spawns.add(task)
            task.add_done_callback(self._spawns.discard)

    async def _spawn(self) -> None:
        try:
            child = await asyncio.to_thread(self._start_child)
        except Exception:
            log.exception("could not start a process-executor child; retrying in %.0f s",
                          self._spawn_delay)
            await asyncio.sleep(self._spawn_delay)
            self._spawn_delay = min(self._spawn_delay * 2, SPAWN_RETRY_MAX_S)
            self._starting -= 1
            self._top_up()
            return
        self._spawn_delay = SPAWN_RETRY_S
        self._starting -= 1
        if self._closing:
            child.stop()
            return
        self._children.add(child)
        assert self._idle is not None
        self._idle.put_nowait(child)

    def _start_child(self) -> Child:
        _kill_children_at_exit()
        ctx = _mp_context()
        ours, theirs = ctx.Pipe(duplex=True)
        # daemon: multiprocessing kills it if the interpreter exits without close().
        proc = ctx.Process(target=serve, args=(theirs, self.codec), daemon=True,
                           name=CHILD_NAME)
        try:
            proc.start()
        finally:
            theirs.close()  # only the child holds its end: its death reads as EOF
        try:
            ready = ours.poll(READY_TIMEOUT_S) and unpack(ours.recv_bytes()) == ["ready"]
        except (EOFError, OSError, ValueError):
            ready = False
        if not ready:
            proc.kill()
            ours.close()
            # The usual cause: multiprocessing re-imports the main script in
            # the child, and an unguarded script starts a worker there again.
            raise RuntimeError(
                f"process-executor child did not start within {READY_TIMEOUT_S:g} s (exit code "
                f"{proc.exitcode}); a script that runs an embedded worker must guard its top "
                "level with `if __name__ == '__main__':`")
        return Child(self, proc, ours)

    def drain(self) -> None:
        """The worker stops claiming: children that end now are not replaced
        (the tasks still waiting for one are handed back after the grace)."""
        self._draining = True

    async def close(self) -> None:
        """Stops every child: idle ones exit when their pipe closes, anything
        still running is killed (its task was already handed back)."""
        self._closing = True
        if self._spawns:  # a child still starting is stopped as soon as it is up
            await asyncio.wait(set(self._spawns), timeout=READY_TIMEOUT_S)
        children = list(self._children)
        for child in children:
            if child.attempt is not None:
                child.kill()
            else:
                child.stop()
        if children:
            await asyncio.to_thread(self._join, children)
        for child in children:
            self._retire(child)

    @staticmethod
    def _join(children: list[Child]) -> None:
        for child in children:
            child.proc.join(CLOSE_WAIT_S)
            if child.proc.is_alive():
                child.kill()
                child.proc.join(CLOSE_WAIT_S)
