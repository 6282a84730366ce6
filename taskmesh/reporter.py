"""Sends workers' outcome reports to Redis in pipelined batches.

Under load many tasks finish within one loop iteration; their report
scripts go out in one pipeline (one round trip), which is most of the
worker's throughput. When Redis is unreachable the batch is retried with
backoff until it goes through: a report is never dropped by the worker.
Re-sending is safe because report.lua is fenced by the claim token: a
report that did run once answers 'stale' the second time.

The reports of a batch travel as few script calls as possible: with a
``merge`` function (the worker passes ``Commands.report_many``) up to
REPORTS_PER_CALL of them (MERGE_MAX_BYTES of results at most; a larger one
goes alone) go in one report_many.lua call, which applies each exactly as
its own report.lua call would. That call is what most of a
no-op task's Redis and worker time went into (see benchmarks/PROFILE.md).
A merged call that fails as a whole is resent as single reports, so each
report still gets its own reply (or its own refusal).

Progress updates travel the same way (:meth:`Reporter.post`): queued
without waiting for a reply, and sent ahead of the reports batched with
them, so a task's last progress value lands before its outcome. They are
fenced by the claim token like reports, so a resend is harmless too.

A report Redis refuses outright (a result over its ``proto-max-bulk-len``:
Redis answers a protocol error and drops the connection) must not hold up
the reports batched with it. A batch that holds a report large enough to
be refused (REFUSABLE_BYTES) and loses its connection while Redis still
answers PING is resent one report at a time; that large report, if still
dropped, gets :class:`ReportRefusedError` (the worker then fails that task
with a small error report), the others go through. A smaller report is
never taken for refused, however often its connection drops: during a
cluster failover the node owning its slot is gone while the others answer
PING, and such a report must wait for the new master, not fail its task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import redis.asyncio
import redis.exceptions

from . import scripts
from .connection import CONNECTION_ERRORS
from .exceptions import ServerBusyError, StoreError
from .held import HeldConnection
from .scripts import Call

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 256
REPORTS_PER_CALL = 64  # bounds how long one report_many call holds Redis
# The least Redis accepts for proto-max-bulk-len and client-query-buffer-limit
# (both 1mb at their minimum): a call with fewer bytes than this is never refused.
REFUSABLE_BYTES = 1 << 20
MERGE_MAX_BYTES = REFUSABLE_BYTES // 2  # so a merged call is never refused either
PING_TIMEOUT_S = 2.0


class ReportRefusedError(StoreError):
    """Redis refused this one report (and dropped the connection over it)."""


def _is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ResponseError) and (
        "protocol error" in str(exc).lower())


def _size(call: Call[Any]) -> int:
    size = 0
    for arg in call.args:  # a loop, not a list per report
        if type(arg) is bytes or type(arg) is str:
            size += len(arg)
    return size


def _groups(calls: list[Call[Any]], indexes: list[int]) -> list[list[int]]:
    """Consecutive runs of at most REPORTS_PER_CALL reports and MERGE_MAX_BYTES
    of arguments (a merged call is one command, which Redis buffers whole:
    large results go on their own)."""
    groups: list[list[int]] = []
    size = 0
    for i in indexes:
        n = _size(calls[i])
        if not groups or len(groups[-1]) >= REPORTS_PER_CALL or size + n > MERGE_MAX_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return groups


def _deliver_reply(waiter: asyncio.Future[Any] | Callable[[Any], None], result: Any) -> None:
    if isinstance(waiter, asyncio.Future):
        if waiter.done():
            return
        if isinstance(result, Exception):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)
        return
    try:
        waiter(result)
    except Exception:  # a bug in a callback must not stop the reporter
        log.exception("a report's reply handler failed")


class Reporter:
    def __init__(self, client: Any,
                 merge: Callable[[Sequence[Call[Any]]], Call[list[Any]]] | None = None,
                 replicated: Callable[[list[Call[Any]]], Awaitable[list[Any] | None]] | None = None,
                 claims_first: asyncio.Event | None = None):
        self.client = client
        self._held = HeldConnection(client)  # the reporter sends one batch at a time
        # Set while the worker has no claim in flight: reports wait for it.
        # A claim's reply is what the worker waits for, idle, while Redis
        # runs the reports sent with it; sent after it instead, those run
        # while the worker runs the tasks that claim brought.
        self.claims_first = claims_first
        self.merge = merge
        # min_replicas (replication.py): sends the batch itself when the
        # namespace asks for replicas, else answers None.
        self.replicated = replicated
        # (call, what takes its reply: a future, a callback, or None for a
        # posted call nobody waits for).
        self._pending: list[tuple[Call[Any], asyncio.Future[Any] | Callable[[Any], None] | None]] = []
        # Calls posted from other threads (a task thread's progress), in the
        # order they were made; moved onto _pending ahead of any later call
        # queued on the loop (see post_threadsafe).
        self._from_threads: list[Call[Any]] = []
        self._from_threads_lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the worker's, from start()
        self._busy = False
        self._server_busy = False  # Redis answered OOM/BUSY: logged once until it passes

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="taskmesh-reporter")

    async def submit(self, call: Call[T]) -> T:
        fut: asyncio.Future[T] = (self._loop or asyncio.get_running_loop()).create_future()
        self._take_from_threads()
        self._pending.append((call, fut))
        self._wakeup.set()
        return await fut

    def send(self, call: Call[T], on_reply: Callable[[T | Exception], None]) -> None:
        """Queues ``call``; ``on_reply`` gets its parsed reply or the
        exception :meth:`submit` would raise, on the loop, as soon as the
        batch's reply is read. The worker's per-task path: no future, and
        no coroutine resumed to read the reply (~10 us a report)."""
        self._take_from_threads()
        self._pending.append((call, on_reply))
        self._wakeup.set()

    def post(self, call: Call[Any]) -> None:
        """Queues ``call`` (a progress update) without waiting for its reply:
        it is retried like a report, and its answer is dropped."""
        self._take_from_threads()
        self._pending.append((call, None))
        self._wakeup.set()

    def post_threadsafe(self, call: Call[Any]) -> None:
        """:meth:`post` from another thread. Order matters: a task thread's
        progress must reach Redis before the task's last value and its
        report, which the loop queues after the function has returned. A
        ``call_soon_threadsafe`` per update does not promise that (the loop
        may take the task's outcome in a delivery scheduled earlier, ahead of
        the callbacks), so these calls wait here and every loop-side queueing
        takes them first; one callback per burst moves them otherwise."""
        with self._from_threads_lock:
            first = not self._from_threads
            self._from_threads.append(call)
        if first and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._take_from_threads)
            except RuntimeError:
                pass  # the worker's loop is closed: progress is telemetry

    def _take_from_threads(self) -> None:
        if not self._from_threads:  # (unlocked peek: an append schedules a take anyway)
            return
        with self._from_threads_lock:
            calls, self._from_threads = self._from_threads, []
        self._pending.extend((call, None) for call in calls)
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._busy = True
            while self._pending:
                if self.claims_first is not None:
                    await self.claims_first.wait()
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                results = await self._send([call for call, _ in batch])
                for (_, waiter), result in zip(batch, results):
                    if waiter is not None:
                        _deliver_reply(waiter, result)
            self._busy = False

    async def _send(self, calls: list[Call[Any]]) -> list[Any]:
        """Results in call order. Calls answered OOM/BUSY (transient server
        states) are resent after a backoff until Redis takes them."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        delay = 0.1
        while True:
            busy: list[int] = []
            refusal: ServerBusyError | None = None
            for i, result in zip(todo, await self._send_once([calls[i] for i in todo])):
                if isinstance(result, ServerBusyError):
                    busy.append(i)
                    refusal = result
                else:
                    results[i] = result
            if not busy:
                if self._server_busy:
                    log.info("Redis accepts reports again")
                    self._server_busy = False
                return results
            if not self._server_busy:
                log.warning("cannot report %d outcome(s): %s; retrying until it can",
                            len(busy), refusal)
                self._server_busy = True
            todo = busy
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _send_once(self, calls: list[Call[Any]]) -> list[Any]:
        delay = 0.1
        strikes = 0
        while True:
            try:
                results = await self._deliver(calls)
            except ServerBusyError as exc:
                return [exc] * len(calls)
            except CONNECTION_ERRORS as exc:
                large = [c for c in calls if _size(c) >= REFUSABLE_BYTES]
                if large and await self._reachable(large[0]):
                    # Redis is up, yet dropped this batch: its large report
                    # may be refused. Find it by sending them one at a time;
                    # one dropped twice while Redis answers is refused (a
                    # single drop may just have been a restart).
                    if len(calls) > 1:
                        return [r for call in calls for r in await self._send_once([call])]
                    strikes += 1
                    if strikes >= 2:
                        return [ReportRefusedError(f"Redis refused the report: {exc}")]
                    continue
                log.warning("cannot report %d outcome(s) to Redis (%s); retrying", len(calls), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)  # results flow soon after Redis is back
                continue
            return [ReportRefusedError(f"Redis refused the report: {r}") if _is_refusal(r) else r
                    for r in results]

    async def _deliver(self, calls: list[Call[Any]]) -> list[Any]:
        """One reply per call; several calls go as merged script calls."""
        if self.replicated is not None:
            replies = await self.replicated(calls)
            if replies is not None:
                return replies
        if len(calls) == 1:
            return await self._run_calls(calls)
        if not calls:
            return []
        # One merged call touches one slot: reports of different shards of a
        # sharded namespace (their prefix, args[0], differs) go in separate ones.
        by_prefix: dict[Any, list[int]] = {}
        others: list[int] = []
        for i, call in enumerate(calls):
            if call.script.name == "report":
                by_prefix.setdefault(call.args[0], []).append(i)
            else:
                others.append(i)
        results: list[Any] = [None] * len(calls)
        if others:
            # Progress goes first, in a pipeline of its own: a pipeline resends
            # the calls Redis answered NOSCRIPT after the others ran, which
            # would land a task's last progress after its outcome.
            for i, reply in zip(others, await self._run_calls([calls[i] for i in others])):
                results[i] = reply
        if not by_prefix:
            return results
        merge = self.merge
        groups = ([g for idx in by_prefix.values() for g in _groups(calls, idx)]
                  if merge is not None else [[i] for idx in by_prefix.values() for i in idx])
        sends = [calls[g[0]] if len(g) == 1 else merge([calls[i] for i in g])  # type: ignore[misc]
                 for g in groups]
        replies = await self._run_calls(sends)
        for group, reply in zip(groups, replies):
            if len(group) == 1:
                results[group[0]] = reply
                continue
            if isinstance(reply, ServerBusyError):  # OOM/BUSY: for every report in it
                reply = [reply] * len(group)
            elif isinstance(reply, Exception):  # e.g. a refused result: find it one by one
                reply = await self._run_calls([calls[i] for i in group])
            for i, result in zip(group, reply):
                results[i] = result
        return results

    async def _run_calls(self, calls: list[Call[Any]]) -> list[Any]:
        """Parsed replies in call order, an error reply in its place (as
        ``scripts.arun_batch`` gives them): on the reporter's held
        connection (held.py), else through the client."""
        raws = await self._held.raw(calls)
        if raws is not None:
            return [raw if isinstance(raw, Exception) else call.parse(raw)
                    for call, raw in zip(calls, raws)]
        if len(calls) == 1:
            # A lone report (an idle worker's one task: the round trip's
            # path) as one command: a pipeline of one costs ~50 us more CPU.
            try:
                return [await scripts.arun(self.client, calls[0])]
            except (ServerBusyError, redis.exceptions.ResponseError) as exc:
                return [exc]  # in place, as a pipeline answers it
        return await scripts.arun_batch(self.client, calls)

    async def _reachable(self, call: Call[Any]) -> bool:
        """Whether the Redis that dropped ``call`` answers PING: in a
        cluster the node that owns its slot (another node answering says
        nothing of one being failed over)."""
        client = self.client
        try:
            if isinstance(client, redis.asyncio.RedisCluster) and call.keys:
                ping = client.execute_command(
                    "PING", target_nodes=client.get_node_from_key(call.keys[0]))
            else:
                ping = client.ping()
            return bool(await asyncio.wait_for(ping, PING_TIMEOUT_S))
        except (TimeoutError, redis.exceptions.ResponseError, *CONNECTION_ERRORS):
            return False  # a BUSY reply is no sign of a refused report either

    @property
    def pending(self) -> int:
        return len(self._pending) + (1 if self._busy else 0)

    async def close(self, timeout: float) -> bool:
        """Flushes what is pending (for at most ``timeout`` s), then stops.
        Returns False if reports had to be abandoned (Redis unreachable)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._pending or self._busy) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        flushed = not (self._pending or self._busy)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._held.close()
        return flushed
