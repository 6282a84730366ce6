"""The worker: claims tasks, runs them with the executors, reports outcomes.

Life of one task here: ``claim.lua`` makes it RUNNING under a lease (in
batches of up to the free slots) -> the payload is decoded and the function
resolved -> an executor runs it -> the outcome goes to ``report.lua`` through
the pipelined :class:`Reporter`. The :class:`LeaseKeeper` thread keeps the
leases alive meanwhile; a control subscription delivers cancel requests.
A :class:`PeriodicTicker` thread fires the namespace's due periodic ticks.

Idle workers block on the queues' wake lists (BLPOP) instead of polling; a
producer pushes a token with every enqueue, and a claim that leaves work
behind pushes one more, so idle workers wake each other in a chain. Due
times of SCHEDULED tasks are kept by a local alarm (see :mod:`taskmesh.idle`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import importlib
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import redis.asyncio
import redis.exceptions

from . import scripts
from .scripts import Call
from .background import stop_all
from .connection import (
    CONNECTION_ERRORS,
    async_client,
    resolve_namespace,
    resolve_url,
    sync_client,
)
from .context import TaskContext
from .exceptions import (
    PayloadTooLargeError,
    SerializationError,
    ServerBusyError,
    StoreError,
    TaskTimeoutError,
)
from .executors import (
    EncodedOutcome,
    EscapedExit,
    Job,
    build_executors,
    lane_slots,
    open_payload,
)
from .idle import IDLE_MAX_S, IdleWaiter
from .keys import Keys, validate_namespace, validate_queue_name
from .held import HeldConnection
from .lease import LeaseKeeper
from .models import TERMINAL_ORDER, ExecutorType
from .periodic import PeriodicTicker
from .process_pool import ProcessPool
from .pubsub import messages, stop_listener
from .remote import pickle_exception
from .retry_policy import exception_names
from .reporter import ReportRefusedError, Reporter
from .serialization import codec_for, safe_str
from .replication import reports_replicated
from .sharding import ShardSet, TaskRouter, channel_patterns
from .shardwork import ShardedWork
from .store import ClaimedTask, ClaimResult, Commands

log = logging.getLogger(__name__)
STOP_RING_S = 2.0  # how long a stop waits for a rung idle BLPOP before cancelling it

CLAIM_BATCH = 100
FLUSH_ON_STOP_S = 5.0  # how long a stopping worker keeps retrying reports
# How long a stopping worker tries to remove its own registration. Without a
# bound, a frozen Redis holds the stop for the client's retries (4 x the 5 s
# socket timeout); the entry expires with its heartbeat anyway.
UNREGISTER_ON_STOP_S = 2.0


@dataclass
class WorkerOptions:
    """A worker's settings, one field per ``taskmesh worker`` flag (snake_case,
    ``--import`` as ``imports``, same defaults), so the CLI,
    ``Worker(**options)`` and ``start_worker(**options)`` validate them in
    one place."""

    url: str | None = None
    namespace: str | None = None
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 10
    threads: int | None = None
    # Seconds, like every duration here; the names are the flags' own
    # (``--lease-timeout``, ``--grace-period``), public, so they carry no
    # unit suffix. Inside, the lease is ``lease_timeout_s`` / ``_ms``.
    lease_timeout: float = 30.0
    grace_period: float = 25.0
    burst: bool = False
    name: str | None = None
    imports: list[str] = field(default_factory=list)
    secret: str | None = None
    no_pickle: bool = False
    # Results are held to the same bound as payloads (TaskManager's default).
    max_payload_bytes: int = 16 * 1024 * 1024
    processes: int | None = None  # process-executor children; None: os.cpu_count()

    def __post_init__(self) -> None:
        self.url = resolve_url(self.url)
        self.namespace = validate_namespace(resolve_namespace(self.namespace))
        if isinstance(self.queues, str):
            self.queues = [q.strip() for q in self.queues.split(",") if q.strip()]
        self.queues = [validate_queue_name(q) for q in self.queues] or ["default"]
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
        if self.processes is None:
            self.processes = os.cpu_count() or 1
        if isinstance(self.processes, bool) or not isinstance(self.processes, int):
            raise TypeError("processes must be an int")
        if self.processes < 1:
            raise ValueError("processes must be >= 1")
        if self.lease_timeout <= 0 or self.grace_period < 0:
            raise ValueError("lease_timeout must be > 0 and grace_period >= 0")
        if self.secret is None:
            self.secret = os.environ.get("TASKMESH_SECRET") or None


_INTERNAL_DIRS: tuple[str, ...] = tuple(
    os.path.dirname(path) for path in (asyncio.__file__, concurrent.futures.__file__, __file__)
    if path
)


MAX_ERROR_TEXT = 64 * 1024  # an error report must stay small enough for Redis to take


def _error_json(exc: BaseException, attempt: int) -> str:
    """The TaskError record: the traceback starts at the task's own frames.
    Message and traceback are capped (a huge exception message would make
    the report itself too large to store)."""
    if isinstance(exc, EscapedExit):
        exc = exc.original
    message = safe_str(exc)
    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frames = frames.tb_next
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, frames or exc.__traceback__))
    except BaseException:  # traceback calls the exception's __str__, which may raise SystemExit
        tb = "".join(traceback.format_tb(frames or exc.__traceback__))
        tb += f"{type(exc).__name__}: {message}\n"
    # "types" (the exception's classes) is what retry_on is matched against.
    return json.dumps({"type": type(exc).__name__, "message": _cap(message),
                       "traceback": _cap(tb), "attempt": attempt,
                       "types": exception_names(exc)})


def _cap(text: str) -> str:
    if len(text) <= MAX_ERROR_TEXT:
        return text
    return f"{text[:MAX_ERROR_TEXT]}... [{len(text) - MAX_ERROR_TEXT} more characters cut]"


def _finishes(job: Job) -> asyncio.Future[Any] | None:
    """What is done once the job is (reported or abandoned): its runner, or,
    for a job started without one (Worker._start_direct), its function's
    future, which is resolved just before its outcome is handled."""
    return job.runner if job.runner is not None else job.execution


class Worker:
    """Claims tasks of its namespace's queues from Redis and runs them, at
    most ``concurrency`` at a time, with the executor each task asks for.

    A worker owns nothing but leases: a claimed task carries a fencing token
    and a lease the worker renews with its heartbeat, so a worker that dies
    (or stalls past ``lease_timeout``) loses its tasks to the others, and a
    report it sends too late is refused. Outcomes go back in pipelined
    batches (reporter.py) that are retried until Redis takes them. Run it
    with ``taskmesh worker``, ``await Worker(...).run()`` or
    ``TaskManager.start_worker()``.
    """

    def __init__(self, options: WorkerOptions | None = None, **kwargs: Any):
        self.options = options or WorkerOptions(**kwargs)
        opts = self.options
        for module in opts.imports:
            importlib.import_module(module)
        self.id = opts.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = Keys(opts.namespace)  # type: ignore[arg-type]  # shard 0
        self.commands = Commands(self.keys)
        # The namespace's shards, re-read at every heartbeat (README *Sharded namespaces*); more
        # than one brings in the ShardedWork helper (shardwork.py).
        self.shardset = ShardSet(opts.namespace, 1)  # type: ignore[arg-type]
        self._sharded: ShardedWork | None = None
        self.min_replicas = 0  # the namespace's setting, re-read at every heartbeat
        self.codec = codec_for(
            opts.url,  # type: ignore[arg-type]
            secret=opts.secret.encode() if opts.secret else None, allow_pickle=not opts.no_pickle,
            namespace=opts.namespace or "",
            max_payload_bytes=opts.max_payload_bytes,
        )
        self.lease_timeout_ms = int(opts.lease_timeout * 1000)
        # Starts no process until the first process task (process_pool.py).
        self.process_pool = ProcessPool(opts.processes or 1, self.codec)
        self.started_at = time.time()
        self.processed = 0
        self.failed = 0
        self._active: dict[str, Job] = {}
        self._held: dict[str, str] = {}  # task id -> claim token; read by the lease thread
        self._held_lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0  # the thread running the worker's loop (run())
        self._slot_freed: asyncio.Event | None = None
        self._idle_wait: asyncio.Future[Any] | None = None
        self._idle_claim = False  # the idle wait has a claim behind it (idle.py)
        self._idle_seq = 0  # counts idle waits (a late stop abort names the one it meant)
        self._idle_aborted = False
        self._reports_in_flight = 0
        self._busy_reason: str | None = None  # set while Redis answers OOM/BUSY

    # ---- state shared with the lease thread --------------------------------
    def _held_snapshot(self) -> dict[str, str]:
        with self._held_lock:
            return dict(self._held)

    def _info(self) -> dict[str, Any]:
        o = self.options
        return {
            "id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": ",".join(o.queues), "concurrency": o.concurrency,
            "running": len(self._active), "processed": self.processed, "failed": self.failed,
            "started_at": f"{self.started_at:.3f}",
        }

    def _on_renewed(self, lost: list[str], cancel: list[str]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_renewal, lost, cancel)

    def _apply_renewal(self, lost: list[str], cancel: list[str]) -> None:
        for task_id in lost:
            if task_id in self._active:
                log.warning("task %s: lease lost (taken over); its outcome will be discarded", task_id)
        for task_id in cancel:
            self._cancel_local(task_id)

    def _cancel_local(self, task_id: str) -> None:
        job = self._active.get(task_id)
        if job is not None and job.cancel_reason is None:
            log.info("task %s: cancellation requested", task_id)
            job.request_cancel()

    # ---- main ---------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop claiming; running tasks get the grace period (thread-safe)."""
        if self._loop is not None and not self._stopping:
            try:
                self._loop.call_soon_threadsafe(self._begin_stop)
            except RuntimeError:
                pass  # its loop is closed: the worker has already stopped

    def _begin_stop(self) -> None:
        if not self._stopping:
            log.info("worker %s stopping: no new claims, %d running", self.id, len(self._active))
            self._stopping = True
            self.process_pool.drain()
            if self._slot_freed is not None:
                self._slot_freed.set()
            if self._idle_wait is not None:
                # An idle worker stops at once. A claim queued behind its
                # BLPOP is not cancelled (its tasks would stay claimed with
                # nobody to read the reply): the ring ends the BLPOP, the
                # claim runs, and what it took is handed back.
                if self._idle_claim:
                    self._loop.create_task(self._idle.ring())  # type: ignore[union-attr]
                    # Redis unreachable (no ring, no claim ran): stop anyway.
                    self._loop.call_later(  # type: ignore[union-attr]
                        STOP_RING_S, self._abort_idle_wait, self._idle_seq)
                else:
                    self._idle_wait.cancel()

    def _abort_idle_wait(self, seq: int) -> None:
        """Ends an idle wait whose stop ring did not land (Redis unreachable),
        if it is still that same wait (``seq``): it runs in the claim loop's
        task, so a late call must not cancel whatever that task awaits by then."""
        if self._idle_wait is not None and self._idle_claim and self._idle_seq == seq:
            self._idle_aborted = True
            self._idle_wait.cancel()

    async def run(self) -> None:
        """Works until stopped (a signal in the CLI, :meth:`request_stop`, or
        nothing left to do in burst mode), then drains: running tasks get
        ``grace_period`` seconds and pending reports are flushed."""
        opts = self.options
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._slot_freed = asyncio.Event()
        self.client = async_client(opts.url)  # type: ignore[arg-type]
        self.sync_client = sync_client(opts.url)  # type: ignore[arg-type]
        self._direct = HeldConnection(self.client)  # the claim loop's own (held.py)
        # Its BLPOP (with the next claim behind it) goes on that same connection.
        self._idle = IdleWaiter(self.client, self.keys, self.id, opts.queues, held=self._direct)
        # Set while no claim is in flight: the reporter sends only then
        # (Reporter.claims_first).
        self._no_claim = asyncio.Event()
        self._no_claim.set()
        self.executors = build_executors(opts.threads or opts.concurrency, self.process_pool)
        await self._check_credentials()
        self.reporter = Reporter(  # merged per shard (the reporter groups by prefix)
            self.client, merge=lambda calls: self.shardset.for_task(calls[0].args[1])
            .report_many(calls), replicated=self._replicated_reports, claims_first=self._no_claim)
        self.reporter.start()
        keeper = LeaseKeeper(self.sync_client, self.commands, self.id, opts.lease_timeout,
                             self._held_snapshot, self._info, self._on_renewed,
                             shards=lambda: self.shardset, on_shards=self._on_shards)
        await asyncio.to_thread(keeper.beat)  # registers the worker before claiming
        keeper.start()
        ticker = PeriodicTicker(self.sync_client, self.keys,  # a tick's task goes to its shard
                                TaskRouter(lambda: self.shardset, self.sync_client), self.id)  # type: ignore[arg-type]
        ticker.start()
        self._control_stop = asyncio.Event()
        control = asyncio.create_task(self._listen_control(), name="taskmesh-control")
        log.info("worker %s started: queues=%s concurrency=%d", self.id,
                 ",".join(opts.queues), opts.concurrency)
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            await stop_listener(control, self._control_stop)
            # Off the loop: the reporter may still be flushing meanwhile.
            await asyncio.to_thread(stop_all, (keeper, ticker))
            if not await self.reporter.close(timeout=FLUSH_ON_STOP_S):
                log.warning("worker %s: Redis unreachable, %d report(s) abandoned; those tasks "
                            "are recovered by another worker when their lease expires",
                            self.id, self.reporter.pending)
            await self._direct.close()
            await self._unregister()
            if self._sharded is not None:
                await self._sharded.close()
            await self.process_pool.close()
            self.executors[ExecutorType.THREAD_POOL].shutdown()  # type: ignore[attr-defined]
            self.executors[ExecutorType.SEQUENTIAL].shutdown()  # type: ignore[attr-defined]
            await self.client.aclose()
            self.sync_client.close()
            self._stopped.set()
            log.info("worker %s stopped (processed %d, failed %d)", self.id,
                     self.processed, self.failed)

    async def _check_credentials(self) -> None:
        """Wrong credentials will not fix themselves: fail at start instead of
        retrying forever. (Redis merely being down is waited out.)"""
        try:
            await self.client.ping()
        except redis.exceptions.AuthenticationError:
            await self.client.aclose()
            self.sync_client.close()
            raise
        except (*CONNECTION_ERRORS, ServerBusyError, redis.exceptions.ResponseError) as exc:
            log.warning("worker %s: Redis not reachable yet (%s); will keep trying", self.id, exc)

    @property
    def busy_threads(self) -> bool:
        """A function still runs on a thread (or child) of this worker: a
        timed-out or cancelled thread cannot be killed, so stopping waits on it."""
        return any(j.execution is not None and not j.execution.done() for j in self._active.values())

    async def _claim_loop(self) -> None:
        delay = 0.1
        claim_id = os.urandom(16).hex()
        sent = False  # claim_id may have reached Redis: a claim with it is a resend
        ahead: ClaimResult | None = None  # the claim that ran behind the idle BLPOP
        while not self._stopping:
            free = self._free_slots()
            if free <= 0:
                await self._wait_slot(None)
                continue
            want = self._claim_size(free)
            # A report landing during the claim may have queued a retry or a
            # dependent the claim did not see: a burst worker must look again.
            busy_before = bool(self._active or self._reports_in_flight)
            seq_slots, process_slots = lane_slots(self._active.values(),
                                                  self.options.processes or 1)
            try:
                if ahead is not None:
                    res, ahead = ahead, None
                elif self._sharded is not None:
                    res = await self._sharded.claim(want, self.lease_timeout_ms, seq_slots,
                                                    process_slots, claim_id)
                else:
                    call = self.commands.claim(
                        self.id, self.options.queues, want, self.lease_timeout_ms,
                        seq_slots, process_slots, claim_id, fresh=not sent)
                    sent = True
                    res = await self._claim(call)
            except ServerBusyError as exc:
                self._note_busy(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except CONNECTION_ERRORS as exc:
                log.warning("worker %s lost Redis (%s); retrying in %.1fs", self.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            # The reply arrived: the next claim is a new request. Until then a
            # resend keeps the id, and claim.lua replays what it claimed.
            claim_id, sent = os.urandom(16).hex(), False
            self._note_not_busy()
            try:
                for claimed in res.tasks:
                    self._start(claimed)
            finally:
                # The reports wait until the tasks claimed have started
                # (their first steps run ahead of the reporter's).
                self._no_claim.set()
            if len(res.tasks) >= want:
                continue
            if res.more_queued and (res.capped or res.lane_full):
                await self._wait_slot(0.1)
            elif res.tasks and (res.more_queued or self.options.burst):
                continue
            elif self.options.burst and not res.more_queued and res.next_due_ms < 0:
                # A report still in flight may promote dependents: not done yet.
                if not busy_before and not self._active and not self._reports_in_flight:
                    # Outcomes still in outboxes may make dependents runnable.
                    if self._sharded is None or not await self._sharded.settle():
                        log.info("worker %s: burst finished, nothing left to run", self.id)
                        return
                    continue
                await self._wait_slot(0.2)
            else:
                # Took what was there and the queue is empty: block on the wake
                # list, the next claim queued behind it (idle.py), rather than
                # claim again at once: an immediate second claim found nothing
                # and reached Redis just ahead of the report of the task it had
                # claimed. Every enqueue and every promotion pushes a wake token
                # after its task is queued, so what arrives meanwhile wakes it.
                if res.tasks:
                    # One loop turn first: the tasks just started run, and a
                    # report they queued is written ahead of the BLPOP and its
                    # claim (the round trip waits on that report, not on them).
                    await asyncio.sleep(0)
                ahead = await self._wait_for_work(res.next_due_ms, claim_id, not sent)
                sent = True  # (the claim behind the wait may have run)
        if ahead is not None and ahead.tasks:  # claimed as the stop began: never started
            await self._handback([(t.id, t.token, False) for t in ahead.tasks])

    async def _claim(self, call: Call[ClaimResult]) -> ClaimResult:
        """claim.lua on the claim loop's held connection, else through the
        client (whose retries then apply): raises as ``scripts.arun`` does.
        Reports wait meanwhile (Reporter.claims_first); on success the
        claim loop lets them go once it has started the tasks claimed."""
        self._no_claim.clear()
        try:
            raws = await self._direct.raw([call])
            if raws is None:
                return await scripts.arun(self.client, call)
            if isinstance(raws[0], Exception):
                raise raws[0]
            return call.parse(raws[0])
        except BaseException:
            self._no_claim.set()
            raise

    def _claim_size(self, free: int) -> int:
        """How many tasks one claim asks for: every free slot. (Claiming in
        halves, so that one half's claim is in flight while the other half
        runs, was measured slower at concurrency 10: twice the script calls
        and round trips cost Redis ~22% and the worker ~38% more CPU per
        task, more than the overlap gave back; benchmarks/PROFILE.md.)"""
        return min(free, CLAIM_BATCH)

    def _free_slots(self) -> int:
        # Reports in flight beyond one round of slots hold claiming back,
        # so a slow Redis cannot make the worker run ahead of its reports.
        backlog = max(self._reports_in_flight - self.options.concurrency, 0)
        return self.options.concurrency - len(self._active) - backlog

    def _next_claim(self, claim_id: str, fresh: bool = False) -> Call[ClaimResult] | None:
        """The claim an idle single-shard worker sends behind its BLPOP (None
        in burst mode, whose exit test needs a claim made after the wait)."""
        free = self._free_slots()
        if (self._sharded is not None or self.options.burst or free <= 0
                or type(self.client) is not redis.asyncio.Redis):  # memory://, cluster
            return None
        seq_slots, process_slots = lane_slots(self._active.values(), self.options.processes or 1)
        return self.commands.claim(self.id, self.options.queues, self._claim_size(free),
                                   self.lease_timeout_ms, seq_slots, process_slots, claim_id,
                                   fresh=fresh)

    async def _wait_slot(self, timeout: float | None) -> None:
        assert self._slot_freed is not None
        if timeout is None:
            await self._slot_freed.wait()
        else:
            try:
                await asyncio.wait_for(self._slot_freed.wait(), timeout)
            except TimeoutError:
                pass
        self._slot_freed.clear()

    async def _wait_for_work(self, next_due_ms: int, claim_id: str,
                             fresh: bool = False) -> ClaimResult | None:
        """Waits for a wake-up; returns the claim that ran behind it, if any."""
        max_s = 0.2 if self.options.burst else IDLE_MAX_S
        claim = self._next_claim(claim_id, fresh)
        if self._sharded is not None:
            wait: Any = self._sharded.wait(next_due_ms, max_s)
        else:
            wait = self._idle.wait(next_due_ms, max_s, claim)
        self._idle_claim = claim is not None
        # A wait with a claim behind it is never cancelled but by a stop whose
        # ring did not land (_abort_idle_wait): it runs in the claim loop's own
        # task (no Task of its own, two loop turns fewer per lone task).
        # Without one (sharded) a stop cancels it: a task of its own.
        own: asyncio.Future[Any] | None = None if self._idle_claim else asyncio.ensure_future(wait)
        self._idle_wait = own or asyncio.current_task()
        self._idle_seq += 1
        try:
            result: ClaimResult | None = await (own or wait)
            return result
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            if own is None:
                if not self._idle_aborted:
                    raise  # not our abort: whoever cancelled the claim loop meant it
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        except CONNECTION_ERRORS as exc:
            log.warning("worker %s lost Redis while idle (%s)", self.id, exc)
            await asyncio.sleep(0.5)
        except redis.exceptions.ResponseError as exc:
            busy = scripts.busy_error(exc)
            if busy is None:
                raise
            self._note_busy(busy)
            await asyncio.sleep(0.5)
        finally:
            self._idle_wait = None
            self._idle_claim = False
        return None

    def _note_busy(self, exc: ServerBusyError) -> None:
        """OOM and BUSY are transient server states: the worker backs off and
        goes on, logging once per episode (not once per retry)."""
        if self._busy_reason != exc.reason:
            log.warning("worker %s: %s; backing off until Redis accepts writes again "
                        "(running tasks go on, leases are kept)", self.id, exc)
            self._busy_reason = exc.reason

    def _note_not_busy(self) -> None:
        if self._busy_reason is not None:
            log.info("worker %s: Redis accepts commands again; resuming", self.id)
            self._busy_reason = None

    # ---- one task -------------------------------------------------------------
    def _start(self, claimed: ClaimedTask) -> None:
        job = Job(claimed, TaskContext(claimed.id, claimed.attempt, claimed.name,
                                       claimed.metadata, self._progress_sink(claimed)))
        with self._held_lock:
            self._held[claimed.id] = claimed.token
        self._active[claimed.id] = job
        if self._start_direct(job):
            return
        # The runner runs in the job's context (current_task() sees it): an
        # async function without a timeout runs right inside it (executors.py).
        job.runner = self._loop.create_task(  # type: ignore[union-attr]
            self._run_job(job), name=f"taskmesh-task-{claimed.id}", context=job.fresh_context())

    def _start_direct(self, job: Job) -> bool:
        """A plain function without a timeout goes straight to the task
        threads, with no runner task: its payload is opened here, and its
        return is handed to :meth:`_returned` on the loop by the threads'
        delivery callback (Executor.start). False: it needs a runner."""
        claimed = job.claimed
        if claimed.timeout is not None or claimed.defect or job.runs_in_child:
            return False
        executor = self.executors.get(claimed.executor) or self.executors[ExecutorType.ASYNC]
        if not executor.may_start:
            return False
        try:
            job.set_function(*open_payload(self.codec, job.id, claimed.payload))
        except BaseException:
            return False  # its runner opens it again and reports why it cannot
        return executor.start(job, self._returned)

    def _returned(self, job: Job, ok: bool, value: Any) -> None:
        """On the loop: a job started without a runner (_start_direct) has
        returned from its thread: what _run_job does after the function."""
        if job.cancel_reason == "shutdown":
            self._conclude(job, None, job.claimed_at)  # _drain hands it back: not reported
        else:
            self._conclude(job, lambda: self._outcome(job, value) if ok else self._failed(job, value),
                           job.claimed_at)

    def _conclude(self, job: Job,
                  outcome: tuple[str, Any, bool] | Callable[[], tuple[str, Any, bool]] | None,
                  began: float) -> None:
        """The one end of an attempt on this worker, with a runner or
        without: its last progress and its report queued, its slot freed
        either way. Without an outcome (a shutdown hand-back, a runner
        cancelled or broken), or when the report cannot be queued, the lease
        is let go of here."""
        reporting = False
        try:
            if outcome is not None:
                if callable(outcome):
                    outcome = outcome()
                job.context.flush_progress()  # queued ahead of the report
                # The function is done: its slot can take new work while the
                # report travels (the lease stays held until the report
                # lands, _report_landed). Nothing waits on the reply.
                self._free_slot(job)
                self._send_report(job, outcome, began)
                reporting = True
        except Exception:
            log.exception("task %s: could not report its outcome; its lease will expire", job.id)
        finally:
            self._free_slot(job)
            if not reporting:
                self._unhold(job)

    def _progress_sink(self, claimed: ClaimedTask) -> Callable[[float, str | None, bool], None]:
        """Where a task's progress goes (from its thread, its coroutine or its
        child's reader thread): progress.lua through the asynchronous reporter,
        fenced by the claim token. The context's token bucket is the one
        throttle, so every update sent is also published (force)."""
        def send(progress: float, message: str | None, final: bool) -> None:
            call = self.shardset.for_task(claimed.id).progress(
                claimed.id, progress, message, claimed.token, True)
            if threading.get_ident() == self._loop_thread:
                self.reporter.post(call)
            else:
                self.reporter.post_threadsafe(call)

        return send

    def _prepare(self, job: Job) -> None:
        if job.claimed.defect:
            raise StoreError(job.claimed.defect)
        if job.runs_in_child:
            return  # a process task's payload is decoded in its child (process_child.py)
        if job.func is not None:
            return  # opened already (_start_direct)
        job.set_function(*open_payload(self.codec, job.id, job.claimed.payload))

    async def _run_job(self, job: Job) -> None:
        began = time.monotonic()
        outcome: tuple[str, Any, bool] | None = None
        try:
            try:
                self._prepare(job)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # bad payload, import, signature: never retried
                outcome = ("failed", _error_json(exc, job.claimed.attempt), False)
            else:
                outcome = await self._execute(job)
        except asyncio.CancelledError:
            if job.cancel_reason != "shutdown":
                raise
        except Exception:
            log.exception("task %s: could not run to its outcome; its lease will expire", job.id)
        finally:
            self._conclude(job, outcome, began)  # the runner ends here

    async def _execute(self, job: Job) -> tuple[str, Any, bool]:
        attempt = job.claimed.attempt
        executor = self.executors.get(job.claimed.executor) or self.executors[ExecutorType.ASYNC]
        try:
            result = await executor.run(job)
        except asyncio.CancelledError:
            if job.cancel_reason == "cancel":
                return "cancelled", "", False
            raise
        except BaseException as exc:  # the task's own exception, SystemExit included
            return self._failed(job, exc)
        return self._outcome(job, result)

    def _failed(self, job: Job, exc: BaseException) -> tuple[str, Any, bool]:
        """The outcome of a function that raised (or timed out)."""
        attempt = job.claimed.attempt
        if not isinstance(exc, TaskTimeoutError):
            job.error_pickle = pickle_exception(
                (job.codec or self.codec).for_error(job.id, attempt),
                exc.original if isinstance(exc, EscapedExit) else exc)
        return "failed", _error_json(exc, attempt), True

    def _outcome(self, job: Job, result: Any) -> tuple[str, Any, bool]:
        """The outcome of a function that returned ``result``."""
        attempt = job.claimed.attempt
        if job.cancel_reason == "cancel":
            return "cancelled", "", False
        if isinstance(result, EncodedOutcome):  # encoded by a process child already
            job.error_pickle = result.error_pickle
            return result.kind, result.data, result.retryable
        try:
            codec = (job.codec or self.codec).for_result(job.id, attempt)
            return "completed", codec.encode_result(result), False
        except SerializationError as exc:
            return "failed", _error_json(exc, attempt), False

    def _send_report(self, job: Job, outcome: tuple[str, Any, bool], began: float) -> None:
        """Queues the outcome on the reporter; its reply is handled by
        :meth:`_report_landed` (a callback, not an awaited future: the
        per-task path resumes no coroutine for it)."""
        kind, data, retryable = outcome
        call = self.shardset.for_task(job.id).report(
            job.id, job.claimed.token, kind, data, retryable, job.queued_locally_ms,
            job.error_pickle)
        self._reports_in_flight += 1
        self.reporter.send(call, lambda reply: self._report_landed(job, kind, data, began, reply))

    def _report_landed(self, job: Job, kind: str, data: Any, began: float, reply: Any,
                       resent: bool = False) -> None:
        """A report's reply: counts the outcome, then stops renewing the
        lease. A report Redis refused (too large for it) is replaced by a
        small failure report instead of leaving the task RUNNING forever."""
        if isinstance(reply, ReportRefusedError) and kind != "cancelled" and not resent:
            part = "result" if kind == "completed" else "error"
            refused = PayloadTooLargeError(len(data), None, part)
            log.warning("task %s: Redis refused its %s (%d bytes)", job.id, part, len(data))
            error = _error_json(refused, job.claimed.attempt)
            call = self.shardset.for_task(job.id).report(
                job.id, job.claimed.token, "failed", error, False, job.queued_locally_ms)
            self.reporter.send(call, lambda again: self._report_landed(
                job, "failed", error, began, again, resent=True))
            return  # still in flight
        try:
            if isinstance(reply, Exception):
                log.error("task %s: could not report its outcome; its lease will expire",
                          job.id, exc_info=reply)
            else:
                self._count_outcome(job, kind, reply, began)
        finally:
            self._reports_in_flight -= 1
            self._slot_freed.set()  # type: ignore[union-attr]  # may unblock claiming
            self._unhold(job)

    def _count_outcome(self, job: Job, kind: str, status: str, began: float) -> None:
        if self._sharded is not None and status in TERMINAL_ORDER:
            self._sharded.drain_soon([self.shardset.of(job.id)])  # dependents elsewhere
        if status == "stale":
            log.warning("task %s: %s discarded, the claim is no longer ours (%.1f ms)",
                        job.id, kind, (time.monotonic() - began) * 1000)
            return
        if status == "completed":
            self.processed += 1
            # One grep-friendly line per outcome; successes at DEBUG so a busy
            # worker's log stays readable (and cheap), the rest at INFO.
            if not log.isEnabledFor(logging.DEBUG):
                return
            level = logging.DEBUG
        else:
            if status in ("failed", "scheduled"):
                self.failed += 1
            level = logging.INFO
        log.log(level, "task %s %s -> %s in %.1f ms (attempt %d)", job.id, job.claimed.name,
                status, (time.monotonic() - began) * 1000, job.claimed.attempt)

    def _unhold(self, job: Job) -> None:
        """Stops renewing the lease (a shut-down job keeps it until handed back)."""
        with self._held_lock:
            if self._held.get(job.id) == job.claimed.token and job.cancel_reason != "shutdown":
                del self._held[job.id]

    def _free_slot(self, job: Job) -> None:
        """Frees the slot once the function has really returned (a timed-out
        thread keeps its slot until then, README *Timeouts and threads*)."""
        if job.slot_freed:
            return
        job.slot_freed = True
        if job.execution is not None and not job.execution.done():
            job.execution.add_done_callback(lambda _: self._release_slot(job))
        else:
            self._release_slot(job)

    def _release_slot(self, job: Job) -> None:
        if self._active.get(job.id) is job:
            del self._active[job.id]
        if self._slot_freed is not None:
            self._slot_freed.set()

    # ---- control and shutdown ----------------------------------------------------
    async def _listen_control(self) -> None:
        stream = messages(self.client, channels=[self.keys.control_channel],
                          patterns=channel_patterns(self.keys.namespace, "control")[1:],
                          label=f"worker {self.id} control channel", stop=self._control_stop)
        async for _, data in stream:
            self._on_control(data)

    def _on_control(self, data: Any) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        action, task_id = msg.get("action"), msg.get("task_id")
        if action != "cancel" or task_id not in self._active:
            return
        expected = self.codec.control_signature(action, task_id)
        if expected is not None:
            given = msg.get("sig")
            if not isinstance(given, str) or not hmac.compare_digest(given, expected):
                # Unsigned (cancel.lua's own PUBLISH, or anyone allowed to
                # PUBLISH): not acted on. A real cancellation is also in the
                # record, and the next lease renewal delivers it.
                log.info("worker %s: ignored an unsigned control message for task %s",
                         self.id, task_id)
                return
        self._cancel_local(task_id)

    async def _drain(self) -> None:
        """Waits up to the grace period, then hands unfinished tasks back."""
        running = [w for j in self._active.values() if (w := _finishes(j)) is not None]
        if running:
            log.info("worker %s: waiting up to %.0fs for %d running task(s)", self.id,
                     self.options.grace_period, len(running))
            await asyncio.wait(running, timeout=self.options.grace_period)
        leftovers = [j for j in self._active.values()
                     if (w := _finishes(j)) is not None and not w.done()]
        runners = [j.runner for j in leftovers if j.runner is not None]
        for job in leftovers:
            job.request_shutdown()  # a job without a runner: its thread's return is not reported
        for runner in runners:
            runner.cancel()
        if leftovers:
            if runners:
                await asyncio.wait(runners, timeout=1.0)
            held = [(j.id, j.claimed.token, j.started) for j in leftovers]
            handed = await self._handback(held)
            with self._held_lock:
                for job in leftovers:
                    self._held.pop(job.id, None)
            if handed is None:
                log.warning("worker %s: Redis unreachable, could not hand back %d task(s); "
                            "they are recovered when their lease expires", self.id, len(leftovers))
            else:
                log.info("worker %s: handed %d unfinished task(s) back to the queue",
                         self.id, handed)

    async def _handback(self, held: list[tuple[str, str, bool]]) -> int | None:
        """handback.lua on each shard that holds some of ``held``."""
        by_shard: dict[int, list[tuple[str, str, bool]]] = {}
        for item in held:
            by_shard.setdefault(self.shardset.of(item[0]), []).append(item)
        total: int | None = 0
        for shard, items in by_shard.items():
            handed = await self._retrying(self.shardset.commands[shard].handback(items))
            total = None if handed is None or total is None else total + handed
        return total

    async def _replicated_reports(self, calls: list[Any]) -> list[Any] | None:
        """Reports under the namespace's min_replicas (None: not asked for)."""
        if not self.min_replicas:
            return None
        return await reports_replicated(self.sync_client, calls, lambda: self.min_replicas,
                                        lambda: self._stopping)

    def _on_shards(self, count: int) -> None:
        """From the lease thread, every heartbeat: the stored shard count (0:
        namespace unused); min_replicas is read here too."""
        try:
            raw = self.sync_client.hget(self.keys.config, "min_replicas")
            self.min_replicas = int(raw) if raw else 0
        except (*CONNECTION_ERRORS, ValueError):
            pass
        if self._loop is not None and max(count, 1) != self.shardset.count:
            self._loop.call_soon_threadsafe(self._adopt_shards, max(count, 1))
        elif self._sharded is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._sharded.drain_soon,
                                            range(self.shardset.count))

    def _adopt_shards(self, count: int) -> None:
        if count == self.shardset.count or count < self.shardset.count:
            return  # a count never changes once fixed; it only becomes known
        log.info("worker %s: namespace has %d shards", self.id, count)
        self.shardset = ShardSet(self.options.namespace, count)  # type: ignore[arg-type]
        self._sharded = ShardedWork(self, self.shardset)

    async def _retrying(self, call: Any, attempts: int = 6) -> Any:
        delay = 0.1
        for _ in range(attempts):
            try:
                return await scripts.arun(self.client, call)
            except (*CONNECTION_ERRORS, ServerBusyError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return None

    async def _unregister(self) -> None:
        """Best effort, bounded: a worker that could not say goodbye is
        dropped when its heartbeat lapses, as after a kill -9. (A MULTI cut
        short by the bound has run whole or not at all.)"""
        try:
            await asyncio.wait_for(
                scripts.arun_atomic(self.client, self.commands.unregister_worker(self.id)),
                UNREGISTER_ON_STOP_S)
        except (*CONNECTION_ERRORS, ServerBusyError, asyncio.TimeoutError):
            log.info("worker %s: could not unregister (Redis unreachable); its entry "
                     "expires with its heartbeat", self.id)


class WorkerHandle:
    """A worker running on a background thread of this process."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self._thread = threading.Thread(target=self._main, name=f"taskmesh-worker-{worker.id}",
                                        daemon=True)
        self._ready = threading.Event()
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self.worker.run())
        except Exception:
            log.exception("embedded worker %s crashed", self.worker.id)
        finally:
            self.worker._stopped.set()

    @property
    def id(self) -> str:
        """The worker's id, as heartbeats, metrics and task records name it."""
        return self.worker.id

    def is_alive(self) -> bool:
        """False once the worker's thread has ended (stopped, or crashed: logged)."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Asks the worker to stop and blocks until it has (True) or timeout (False)."""
        while self.worker._loop is None and self._thread.is_alive():
            time.sleep(0.01)
        if not self._thread.is_alive():
            return True
        self.worker.request_stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()
