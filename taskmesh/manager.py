"""TaskManager: the producer API (README *Usage*).

Sync methods run on a redis-py client; async methods on an asyncio client
bound to the caller's event loop; the ``*_sync`` twins run the async
implementation on a private portal loop. Every state change is a Call from
:mod:`taskmesh.store`, so each rule exists once whichever way it is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import weakref
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import redis.exceptions

from . import scripts
from .connection import (
    CONNECTION_ERRORS,
    async_client,
    is_memory,
    note_memory_namespace,
    raises_taskmesh_connection_errors,
    resolve_namespace,
    resolve_url,
    sync_client,
)
from . import flow, metrics, periodic
from .context import validate_progress
from .events import (
    EventStream,
    EventTypes,
    Handler,
    Hub,
    Subscription,
    acquire_hub,
    decode_entry,
    subscribe,
)
from .exceptions import SignatureError, TaskCancelledError, TaskFailedError, TaskNotFoundError
from .keys import Keys, validate_namespace, validate_queue_name
from .listing import PageReader, build_query
from .models import (
    Event, ExecutorType, TaskError, TaskInfo, TaskPage, TaskPriority, TaskStatus,
)
from .periodic import PeriodicInfo
from .replication import REFRESH_S, check_min_replicas, run_replicated
from .sharding import (
    ShardSet,
    combine_metrics,
    drain_outboxes,
    event_id,
    link_dependencies,
    read_events,
    shards_call,
    validate_shards,
)
from .portal import Portal
from .registration import (
    Blueprint, NewTask, TaskOptions, blueprint, build_retry, build_task, check_priority,
    check_task_id, new_task_ids,
)
from .remote import bind
from .serialization import codec_for
from .scripts import Call, Cmd
from .store import REGISTER_CHUNK, Commands, Fields, decode_error, register_batches, unbatched
from .waiters import OUTCOME_FIELDS, DoneWaiter, Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

REGISTER_BATCH = 1000
BLUEPRINTS_KEPT = 256  # distinct option sets of register_task remembered per manager
_UNSET: Any = object()


class InProcessWorker(Protocol):
    """A worker running on a thread of this process (taskmesh.worker.WorkerHandle)."""

    @property
    def id(self) -> str: ...

    def is_alive(self) -> bool: ...

    def stop(self, timeout: float | None = None) -> bool: ...


class WorkerHost(Protocol):
    """Runs workers inside this process. The producer does not import the
    worker: :mod:`taskmesh.embedded` (which depends on both) installs the
    host when the package is imported."""

    def start(self, manager: "TaskManager", options: dict[str, Any]) -> InProcessWorker: ...

    def ensure_embedded(self, manager: "TaskManager") -> None: ...

    def release_embedded(self, namespace: str) -> None: ...


_worker_host: WorkerHost | None = None


def install_worker_host(host: WorkerHost) -> None:
    """Called once by :mod:`taskmesh.embedded` at import: the hook that keeps
    this module free of any import of the worker."""
    global _worker_host
    _worker_host = host


def worker_host() -> WorkerHost:
    """The installed host; RuntimeError if only taskmesh.manager was imported."""
    if _worker_host is None:  # only if taskmesh.embedded was never imported
        raise RuntimeError("no in-process worker host: import taskmesh (not only taskmesh.manager)")
    return _worker_host


# Connections one event loop's async API may hold at once. Waiting is pub/sub
# driven (the process's one subscription, events.Hub); each waiter only
# borrows a connection for its short status reads, so thousands of waiters
# queue for these few.
LOOP_MAX_CONNECTIONS = 64


class _LoopState:
    """One event loop's client; its waits park on the process-wide ``waiter``."""

    def __init__(self, url: str, waiter: DoneWaiter):
        self.client = async_client(url, max_connections=LOOP_MAX_CONNECTIONS)
        self.waiter = waiter

    async def close(self) -> None:
        await self.client.aclose()


@raises_taskmesh_connection_errors
class TaskManager:
    """The producer's handle on one namespace: registers, reads, waits for,
    cancels and watches tasks that workers (other processes, or
    :meth:`start_worker` threads) run.

    It holds no task state of its own: every record lives in Redis and every
    state change is one Lua script, so any number of managers and workers,
    in any processes, see the same tasks. The async methods share one
    pub/sub-driven waiter per event loop; the ``*_sync`` and plain reading
    methods run on a private loop thread (the portal), so the same object
    serves sync and async code. Close it (or use it as a context manager) to
    release its connections and stop the workers it started.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str | None = None,
        max_concurrent_tasks: int | None = None,
        result_ttl: int | None = 86400,
        secret: str | None = None,
        max_payload_bytes: int = 16 * 1024 * 1024,
        events_maxlen: int | None = None,
        priority_aging_s: float | None = None,
        shards: int | None = None,
        min_replicas: int | None = None,
    ):
        self.url = resolve_url(url)
        self._requested_shards = validate_shards(shards)
        replicas = None if min_replicas is None else check_min_replicas(min_replicas)
        self._replicas: tuple[float, int] = (0.0, 0)  # (read at, value) of min_replicas
        self.namespace = validate_namespace(resolve_namespace(namespace))
        if result_ttl is not None and (isinstance(result_ttl, bool) or result_ttl < 0):
            raise ValueError("result_ttl must be >= 0 seconds or None")
        if max_payload_bytes is not None and max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
        aging = flow.check_priority_aging(priority_aging_s)
        self.result_ttl = None if result_ttl is None else int(result_ttl)
        secret = secret or os.environ.get("TASKMESH_SECRET") or None
        self.secret = secret
        self.codec = codec_for(
            self.url, secret=secret.encode() if secret else None, namespace=self.namespace,
            max_payload_bytes=max_payload_bytes,
        )
        self.keys = Keys(self.namespace)  # shard 0 (the only one, unless sharded)
        self.commands = Commands(self.keys)
        self._shardset: ShardSet | None = None  # set once the stored count is known
        self._sync_client = sync_client(self.url)
        self._loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]" = (
            weakref.WeakKeyDictionary()
        )
        self._portal = Portal()
        self._listener: Hub | None = None  # the process's listener, held once used
        self._listener_lock = threading.Lock()
        self._workers: list[InProcessWorker] = []
        self._blueprints: dict[tuple[Any, ...], Blueprint] = {}
        if max_concurrent_tasks is not None:
            check_concurrency_cap(max_concurrent_tasks)
        if events_maxlen is not None and (isinstance(events_maxlen, bool) or events_maxlen < 1):
            raise ValueError("events_maxlen must be >= 1")
        # Nothing touches Redis before the first use (see _client): the
        # namespace settings given here are written then.
        settings: list[Callable[[], Any]] = []
        if max_concurrent_tasks is not None:
            settings.append(lambda: self.set_max_concurrent_tasks(max_concurrent_tasks))
        if aging is not None:  # None leaves the stored setting (like the cap)
            settings.append(lambda: self._set_aging(aging))
        if events_maxlen is not None:
            settings.append(lambda: [  # each shard's scripts read their own config
                self._sync_client.hset(keys.config, "events_maxlen", int(events_maxlen))
                for keys in self._shards(fix=True).keys])
        if is_memory(self.url):
            note_memory_namespace(self.namespace)  # in-process only: subscribe() finds it
        if replicas is not None:  # a namespace setting like the cap (last writer wins)
            settings.append(lambda: self.set_min_replicas(replicas))
        self._setup: list[Callable[[], Any]] | None = settings
        self._setup_lock = threading.Lock()
        if self._requested_shards is not None:
            try:  # a count that differs from the stored one is an error here already
                self._shards()
            except CONNECTION_ERRORS:
                pass  # checked again at first use

    # ---- plumbing ---------------------------------------------------------------
    @property
    def _client(self) -> Any:
        """The sync client. Its first use (or the first async call) applies
        the constructor's namespace settings and, for memory://, starts the
        embedded worker: a manager touches Redis only once it is used."""
        if self._setup is not None:
            self._first_use()
        return self._sync_client

    def _first_use(self) -> None:
        with self._setup_lock:
            if self._setup is None:
                return
            settings, self._setup = self._setup, None
            for apply in settings:
                apply()
            if is_memory(self.url):
                worker_host().ensure_embedded(self)

    def _run(self, call: Call[T] | Cmd[T]) -> T:
        return scripts.run(self._client, call)

    def _shards(self, fix: bool = False) -> ShardSet:
        """The namespace's shards. ``fix`` (first registration or settings
        write) stores the count if nothing is stored yet; otherwise an unused
        namespace reads as the requested count (or 1) without fixing it."""
        if self._shardset is None:
            wanted = (self._requested_shards or 1) if fix else 0
            self._adopt_shards(self._run(shards_call(self.keys, wanted)))
        return self._shardset or ShardSet(self.namespace, self._requested_shards or 1)

    async def _ashards(self) -> ShardSet:
        if self._shardset is None:
            self._adopt_shards(await self._arun(shards_call(self.keys, 0)))
        return self._shardset or ShardSet(self.namespace, self._requested_shards or 1)

    def _refuse_unknown_dependencies_before_first_use(self, tasks: list[NewTask]) -> None:
        """Bad input stores nothing, the shard count included: while no count
        is stored the namespace reads as one shard (a new namespace, or one
        written before shards existed), so its tasks live under shard 0's
        keys, and an unknown dependency is refused before the count is fixed."""
        self._shards()  # adopts a stored count if there is one
        if self._shardset is not None:
            return
        deps = list(dict.fromkeys(d for t in tasks for d in t.dependencies))
        if not deps:
            return
        pipe = self._client.pipeline(transaction=False)
        for dep in deps:
            pipe.exists(self.keys.task(dep))
        for dep, found in zip(deps, pipe.execute()):
            if not found:
                raise TaskNotFoundError(dep)

    def _adopt_shards(self, stored: int) -> None:
        if stored and self._requested_shards is not None and stored != self._requested_shards:
            raise ValueError(
                f"namespace {self.namespace!r} has {stored} shard(s); it was created with that "
                f"count and cannot be opened with shards={self._requested_shards}")
        if stored:
            self._shardset = ShardSet(self.namespace, stored)

    def _cmds(self, task_id: str) -> Commands:
        return self._shards().for_task(task_id)

    async def _acmds(self, task_id: str) -> Commands:
        return (await self._ashards()).for_task(task_id)

    def _state(self) -> _LoopState:
        if self._setup is not None:
            self._first_use()  # once per manager: a short blocking write
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.url, self._hub().waiter)
        return state

    def _hub(self) -> Hub:
        """The process's listener for this URL and namespace (events.Hub),
        held from the first use until :meth:`close`."""
        with self._listener_lock:
            if self._listener is None:
                self._listener = acquire_hub(self.url, self.namespace)
            return self._listener

    async def _arun(self, call: Call[T] | Cmd[T]) -> T:
        return await scripts.arun(self._state().client, call)

    # ---- registration -------------------------------------------------------------
    def register_task(
        self,
        func: Callable[..., Any] | str | None = None,
        *positional: Any,
        args: Sequence[Any] | None = None,
        name: str | None = None,
        kwargs: dict[str, Any] | None = None,
        priority: int = TaskPriority.NORMAL,
        dependencies: Sequence[str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        description: str = "",
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        executor_type: ExecutorType | str = "async",
        queue: str = "default",
        task_id: str | None = None,
        defer: bool = False,
        delay: float | None = None,
        eta: datetime | float | None = None,
        rate_key: str | None = None,
        retry_on: Any = None,
        retry_jitter: bool = False,
    ) -> str:
        """Stores a task and enqueues it (or WAITING/PENDING, or SCHEDULED
        until ``delay`` seconds / the ``eta`` have passed); returns its id."""
        if func is None:
            raise TypeError("register_task() needs func (a callable or 'package.module:function')")
        if positional and args is not None:
            raise TypeError("pass positional arguments as *args or as args=(...), not both")
        if args is not None and (isinstance(args, (str, bytes, dict)) or not hasattr(args, "__iter__")):
            raise TypeError("args must be a tuple or list")
        if dependencies is None and tags is None and metadata is None and delay is None \
                and eta is None:
            # The options every call of a loop repeats: checked once per
            # distinct set (the key carries the numbers' types, so True
            # never passes for the 1 checked earlier).
            key: tuple[Any, ...] = (func, name, priority, type(priority), max_retries, type(max_retries),
                   retry_delay, type(retry_delay), retry_backoff, type(retry_backoff), timeout,
                   type(timeout), description, executor_type, queue, defer, rate_key, retry_on,
                   retry_jitter, type(retry_jitter))
            try:
                plan = self._blueprints.get(key)
            except TypeError:  # an unhashable option (a list of retry_on, a func): not kept
                plan, key = None, ()
            if plan is None:
                plan = blueprint(self.codec, func, TaskOptions(
                    name=name, priority=priority, max_retries=max_retries,
                    retry_delay=retry_delay, retry_backoff=retry_backoff, timeout=timeout,
                    description=description, executor_type=executor_type, queue=queue,
                    defer=defer, rate_key=rate_key, retry_on=retry_on,
                    retry_jitter=retry_jitter), self.result_ttl, keep_encoder=False)
                if key:
                    if len(self._blueprints) >= BLUEPRINTS_KEPT:
                        self._blueprints.clear()
                    self._blueprints[key] = plan
            check_task_id(task_id)
            task = plan.task(positional if args is None else args, kwargs, task_id, self.codec)
            return self._register_one(task, new_id=task_id is None)
        opts = TaskOptions(
            name=name, priority=priority, dependencies=dependencies, max_retries=max_retries,
            retry_delay=retry_delay, retry_backoff=retry_backoff, timeout=timeout,
            description=description, tags=tags, metadata=metadata, executor_type=executor_type,
            queue=queue, task_id=task_id, defer=defer, delay=delay, eta=eta, rate_key=rate_key,
            retry_on=retry_on, retry_jitter=retry_jitter,
        )
        task = build_task(self.codec, func, tuple(args if args is not None else positional),
                          kwargs, opts, self.result_ttl)
        return self._register_one(task, new_id=task_id is None)

    def register_many(self, func: Callable[..., Any] | str, iterable: Iterable[Any],
                      **options: Any) -> list[str]:
        """One task per item (a tuple item is unpacked as positional args),
        validated first, then written in batches of REGISTER_BATCH: one
        pipeline of register_many.lua calls (a call per shard and 100 tasks,
        store.register_batches), each task's registration atomic on its own."""
        for bad in ("args", "task_id"):
            if bad in options:
                raise TypeError(f"register_many() does not take {bad}=")
        kwargs = options.pop("kwargs", None)
        # Checked and encoded once for all items: the function is pickled
        # once per call (every task of it carries the same bytes).
        plan = blueprint(self.codec, func, TaskOptions(**options), self.result_ttl)
        items = [item if type(item) is tuple else (item,) for item in iterable]
        if not plan.deps:
            ids = new_task_ids(len(items))
            payloads = plan.payloads(ids, items, kwargs)  # every item's, before any write
            if not self._min_replicas():
                self._stream(plan, ids, payloads)
                return ids
            tasks = [plan.task_of(i, p) for i, p in zip(ids, payloads)]
        else:
            tasks = [plan.task(item, kwargs) for item in items]
        ids = []
        for start in range(0, len(tasks), REGISTER_BATCH):
            ids += self._store(tasks[start:start + REGISTER_BATCH])
        return ids

    def _stream(self, plan: Blueprint, ids: list[str], payloads: list[bytes]) -> None:
        """register_many's writes without dependencies: one register_many.lua
        call per shard and REGISTER_CHUNK tasks, each call packed and sent
        while Redis runs the ones before it (scripts.run_pipelined), so the
        client's packing and Redis's work overlap."""
        shardset = self._shards(fix=True)
        if shardset.count == 1:
            groups = [(self.commands, ids, payloads)]
        else:
            by_shard: dict[int, tuple[list[str], list[bytes]]] = {}
            for task_id, payload in zip(ids, payloads):
                group = by_shard.setdefault(shardset.of(task_id), ([], []))
                group[0].append(task_id)
                group[1].append(payload)
            groups = [(shardset.commands[i], g[0], g[1]) for i, g in by_shard.items()]

        def calls() -> Iterator[Call[list[Any]]]:
            for commands, group_ids, group_payloads in groups:
                for start in range(0, len(group_ids), REGISTER_CHUNK):
                    end = start + REGISTER_CHUNK
                    yield commands.register_chunk(plan.head, plan.tail, plan.defer,
                                                  group_ids[start:end], group_payloads[start:end])

        for result in unbatched(scripts.run_pipelined(self._client, calls())):
            if isinstance(result, Exception):
                raise result

    def _register_one(self, task: NewTask, new_id: bool) -> str:
        """Stores one task. An id made here (``new_id``) without dependencies
        is created after the done reader's mark, so a wait on it may skip its
        first read (waiters.py, fresh tasks)."""
        listener = self._listener
        if listener is None or not new_id or task.dependencies:
            return self._store_one(task)
        mark = listener.waiter.mark()
        stored = self._store_one(task)
        if mark is not None:
            listener.waiter.expect(stored, mark)
        return stored

    def _store_one(self, task: NewTask) -> str:
        """A lone registration without dependencies: its one script call,
        straight (the shard count known, no WAIT); else :meth:`_store`."""
        shardset = self._shardset
        if shardset is None or task.dependencies or self._min_replicas():
            return self._store([task])[0]
        commands = self.commands if shardset.count == 1 else shardset.for_task(task.id)
        result = scripts.run(self._client, commands.register(task.id, task.fields, (), task.defer))
        if result[0] == "missing":  # (no dependency was given)
            raise TaskNotFoundError(result[1] or "")
        return task.id

    def _store(self, tasks: list[NewTask]) -> list[str]:
        self._refuse_unknown_dependencies_before_first_use(tasks)
        shardset = self._shards(fix=True)
        links = link_dependencies(self._client, shardset, tasks)
        calls = [shardset.for_task(t.id).register(
            t.id, t.fields, [d for d in t.dependencies if shardset.of(d) == shardset.of(t.id)],
            t.defer, links.get(t.id, ())) for t in tasks]
        sends: Sequence[Call[Any]] = calls
        if len(calls) > 1:  # register_many: one script call per shard and chunk
            sends = register_batches([(shardset.for_task(t.id), c) for t, c in zip(tasks, calls)])
        replicas = self._min_replicas()
        if replicas:
            results = run_replicated(self._client, sends, replicas)
        else:
            results = scripts.run_batch(self._client, sends) if len(sends) > 1 else [
                self._run(sends[0])]
        for result in unbatched(results):
            if isinstance(result, Exception):
                raise result
            if result[0] == "missing":
                raise TaskNotFoundError(result[1] or "")
        return [t.id for t in tasks]

    # ---- execution and waiting ---------------------------------------------------------
    async def execute_task(self, task_id: str, wait: bool = False,
                           timeout: float | None = None) -> Any:
        """Enqueues a PENDING task (no-op otherwise); with wait=True returns its result."""
        await self._write((await self._acmds(task_id)).execute(task_id))
        if wait:
            return await self.wait_for_task(task_id, timeout)
        return None

    async def wait_for_task(self, task_id: str, timeout: float | None = None) -> Any:
        """Waits (push-based) for the task to end: its result, or TaskFailedError /
        TaskCancelledError; TimeoutError if ``timeout`` seconds pass first."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0")
        state = self._state()
        commands = await self._acmds(task_id)

        # Each look at the record reads the outcome's fields with its status
        # (empty until it ends), so the read that sees it finished is the last;
        # a small outcome comes with the done message itself (waiters.py).
        read = commands.read_fields(task_id, *OUTCOME_FIELDS)

        async def read_outcome() -> Outcome:
            raw: Outcome = await scripts.arun(state.client, read)
            if raw[0] is TaskStatus.WAITING and await self._finish_cascades(commands):
                raw = await scripts.arun(state.client, read)
            return raw

        return self._outcome(task_id, await state.waiter.wait(task_id, read_outcome, timeout))

    def _outcome(self, task_id: str, raw: Outcome) -> Any:
        status, result, attempts, error, pickled = raw
        if status is TaskStatus.COMPLETED:
            return self._result(task_id, result, attempts)
        if status is TaskStatus.FAILED:
            raise TaskFailedError(task_id, self._error(task_id, error, pickled)
                                  or TaskError("Unknown", ""))
        raise TaskCancelledError(task_id, self._error(task_id, error, pickled))

    def _result(self, task_id: str, raw: Any, attempts: Any, preview: bool = False) -> Any:
        """A COMPLETED task's result. With a secret only a result signed for
        this task and the attempt that completed it is accepted: another
        task's result copied in, or a record set to completed with no result
        at all, is a SignatureError, never an unverified value."""
        if not raw:
            if self.codec.secret:
                raise SignatureError(f"task {task_id} is completed but holds no signed result")
            return None
        attempt = Fields(f"task {task_id}", {"attempts": attempts}).number("attempts", int) or 0
        codec = self.codec.for_result(task_id, attempt)
        return codec.preview_result(raw) if preview else codec.decode_result(raw)

    def _error(self, task_id: str, raw: Any, pickled: Any = None) -> TaskError | None:
        """A stored error, able to rebuild its exception under this manager's
        secret policy (TaskError.exception())."""
        return self._bind_error(task_id, decode_error(raw, pickled))

    def _bind_error(self, task_id: str, error: TaskError | None) -> TaskError | None:
        # The pickled exception verifies only as this task's, of that attempt.
        return bind(error, self.codec.for_error(task_id, error.attempt if error else 0))

    async def cancel_task(self, task_id: str) -> bool:
        """Cancels now if not running; signals the worker if running. False if
        the task was already terminal."""
        shardset = await self._ashards()
        commands = shardset.for_task(task_id)
        outcome = await self._write(commands.cancel(task_id))
        cancelled = outcome > 0
        signature = self.codec.control_signature("cancel", task_id)
        if outcome == 2 and signature is not None:
            # Running: secret-holding workers act only on a signed signal.
            await self._state().client.publish(commands.keys.control_channel, json.dumps(
                {"action": "cancel", "task_id": task_id, "sig": signature}))
        await self._finish_cascades(commands)
        if cancelled and shardset.count > 1:
            # The cascade to dependents in other shards is in the outbox:
            # deliver it now (workers would, at their next heartbeat).
            await drain_outboxes(self._state().client, shardset, [shardset.of(task_id)])
        return cancelled

    async def _finish_cascades(self, commands: Commands) -> bool:
        """Runs the dependency resolution left on the ``resolve`` list (of
        the shard ``commands`` address) to the end (a cascade over thousands
        of dependents is cut into bounded script calls), so finishing one
        never waits for a worker to claim. True if there was any."""
        worked = False
        while (left := await self._arun(commands.resolve())) >= 0:
            worked = True
            if left == 0:
                break
        return worked

    def execute_task_sync(self, task_id: str, wait: bool = False,
                          timeout: float | None = None) -> Any:
        """:meth:`execute_task` for sync code (runs on the manager's own loop thread)."""
        return self._portal.call(self.execute_task(task_id, wait=wait, timeout=timeout))

    def wait_for_task_sync(self, task_id: str, timeout: float | None = None) -> Any:
        """:meth:`wait_for_task` for sync code: same result, same exceptions.
        It waits on the process's shared subscription but reads on this
        thread's sync connection (waiters.py, ``wait_blocking``): no hand-off
        to another thread and back per wait."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        commands = self._cmds(task_id)

        def read_outcome() -> Outcome:  # (a fresh task's wait often never reads)
            read = commands.read_fields(task_id, *OUTCOME_FIELDS)
            raw: Outcome = self._run(read)
            if raw[0] is TaskStatus.WAITING and self._portal.call(
                    self._finish_cascades(commands)):
                raw = self._run(read)
            return raw

        waiter = self._hub().waiter
        waiter.ensure_reader_blocking(timeout)
        return self._outcome(task_id, waiter.wait_blocking(task_id, read_outcome, timeout,
                                                           deadline))

    def cancel_task_sync(self, task_id: str) -> bool:
        """:meth:`cancel_task` for sync code."""
        return self._portal.call(self.cancel_task(task_id))

    # ---- reading ---------------------------------------------------------------------
    def get_task_status(self, task_id: str) -> TaskStatus:
        """One HMGET, no decoding: the cheap read for polling loops.
        TaskNotFoundError once the record has expired."""
        return self._run(self._cmds(task_id).read_status(task_id))

    def get_task_result(self, task_id: str, *, unpickle: bool = True) -> Any:
        """With ``unpickle=False`` pickled parts come back as ``<pickled, N
        bytes>`` placeholders: what operator tools use, as they must never
        run code read from Redis."""
        status, result, attempts = self._run(
            self._cmds(task_id).read_fields(task_id, "result", "attempts"))
        if status is TaskStatus.COMPLETED:
            return self._result(task_id, result, attempts, preview=not unpickle)
        return None

    def get_task_error(self, task_id: str) -> TaskError | None:
        """The error of a terminal task (None before it ends, or if it
        completed); its ``exception()`` rebuilds what the task raised."""
        status, error, pickled = self._run(
            self._cmds(task_id).read_fields(task_id, "error", "error_exc"))
        return self._error(task_id, error, pickled) if status.is_terminal else None

    def get_task_progress(self, task_id: str) -> tuple[float, str | None]:
        """``(progress, message)`` as the task last reported it; ``(0.0,
        None)`` before its first report."""
        _, progress, message = self._run(
            self._cmds(task_id).read_fields(task_id, "progress", "progress_message"))
        f = Fields(f"task {task_id}", {"progress": progress, "progress_message": message})
        return f.number("progress") or 0.0, f.text("progress_message") or None

    def get_task(self, task_id: str) -> TaskInfo:
        """Everything stored about one task, read in one call (so the fields
        are consistent with each other); the result is not included, as it
        may be large and need unpickling: see :meth:`get_task_result`."""
        info: TaskInfo = self._run(self._cmds(task_id).read_task(task_id))
        self._bind_error(task_id, info.error)
        return info

    def list_tasks(
        self,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        queue: str | None = None,
        tag: str | None = None,
        metadata: dict[str, Any] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks matching every filter given: QUEUED ones in claim
        order, then the other unfinished ones newest first, then finished ones
        most recently finished first (README *Finding tasks, retrying one*). Pass ``page.cursor``
        back for the next page; None means there is no more."""
        query = build_query(status, queue, tag, metadata, limit)
        reader = PageReader(self._shards().commands, self._run, self._run_many)
        tasks, next_cursor = reader.page(query, cursor)
        for info in tasks:
            self._bind_error(info.id, info.error)
        return TaskPage(tasks, next_cursor)

    def _run_many(self, cmds: Sequence[Any]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd.args)
        return list(pipe.execute())

    def retry_task(self, task_id: str, *, priority: int | None = None,
                   queue: str | None = None) -> str:
        """Registers a new task with the function, arguments and options of a
        FAILED or CANCELLED one (``metadata["retry_of"]`` = its id) and returns
        the new id; the old task is left as it is. ValueError for any other
        status."""
        if priority is not None:
            check_priority(priority)
        if queue is not None:
            validate_queue_name(queue)
        record = self._run(self._cmds(task_id).read_record(task_id))
        new = build_retry(task_id, record, priority, queue, self.result_ttl)
        # The copied payload is signed anew for the new id (verified first).
        new.fields["payload"] = self.codec.for_payload(task_id).rebind(
            record["payload"], self.codec.for_payload(new.id))
        return self._store([new])[0]

    def update_task_progress(self, task_id: str, progress: float,
                             message: str | None = None) -> bool:
        """Records progress and publishes TASK_PROGRESS. False if the task is terminal."""
        value = validate_progress(progress, message)
        call = self._cmds(task_id).progress(task_id, value, message)
        replicas = self._min_replicas()
        if replicas:
            result = run_replicated(self._client, [call], replicas)[0]
            if isinstance(result, Exception):
                raise result
            return bool(result)
        return self._run(call)

    # ---- watching -----------------------------------------------------------------------
    def get_metrics(self) -> metrics.Metrics:
        """Counts per status, queues by priority, workers, totals, throughput,
        runtimes and queue health (README *Metrics*)."""
        shardset = self._shards()
        raws: list[dict[str, Any]] = [{} for _ in shardset.keys]
        per_shard = [metrics.collect(self._client, keys, raw)
                     for keys, raw in zip(shardset.keys, raws)]
        if shardset.count == 1:
            return {**per_shard[0], "shards": [
                {"shard": 0, "tasks": per_shard[0]["tasks"], "totals": per_shard[0]["totals"]}]}
        return combine_metrics(per_shard, raws)

    def subscribe(self, event_type: EventTypes, handler: Handler) -> Subscription:
        """:func:`taskmesh.subscribe` bound to this manager's URL and
        namespace, so handlers hear this namespace whatever $TASKMESH_URL says."""
        return subscribe(event_type, handler, url=self.url, namespace=self.namespace)

    def events(self, types: EventTypes = None) -> EventStream:
        """Live events of this namespace as an async iterator (``async for``),
        fed by the process's one reader of them (events.Hub); ``await
        stream.subscribed()`` says when every later event will be delivered."""
        if self._setup is not None:
            self._first_use()
        return EventStream(self.url, self.namespace, types)

    def get_events(self, since: str | None = None, count: int = 100) -> list[Event]:
        """Replays recent events, oldest first: the ``count`` after event id
        ``since`` (``"<shard>:<stream id>"``: after that position in every
        shard), or the latest ``count`` when ``since`` is None. Shards merge
        by time, each shard's own order kept."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive int")
        entries = read_events(self._client, self._shards(), since, count)
        events = (decode_entry(event_id(shard, i), f) for shard, i, f in entries)
        return [e for e in events if e is not None]

    # ---- periodic tasks ------------------------------------------------------------------
    def add_periodic(self, name: str, func: Callable[..., Any] | str, *args: Any,
                     cron: str | None = None, every: int | None = None, tz: str = "UTC",
                     kwargs: dict[str, Any] | None = None,
                     **register_options: Any) -> PeriodicInfo:
        """Stores (or replaces) the schedule ``name``: exactly one of ``cron``
        (5 fields, in time zone ``tz``) or ``every`` (whole seconds >= 1).
        Any running worker registers one task per tick, with the id
        ``"periodic:<name>:<tick epoch seconds>"``; ``register_options`` are
        register_task's (priority, queue, timeout, retries, ...), encoded now."""
        return periodic.add(self._client, self.keys, self.codec, self.result_ttl, name, func,
                            args, cron=cron, every=every, tz=tz, kwargs=kwargs,
                            options=register_options,
                            # A schedule is a first use (README *Sharded namespaces*).
                            first_use=lambda: self._shards(fix=True))

    def remove_periodic(self, name: str) -> bool:
        """Deletes a schedule; False if there was none by that name. Tasks of
        ticks already fired are not touched."""
        return periodic.remove(self._client, self.keys, name)

    def list_periodic(self) -> list[PeriodicInfo]:
        """Every schedule of the namespace, by name."""
        return periodic.list_all(self._client, self.keys)

    # ---- settings --------------------------------------------------------------------------
    def set_max_concurrent_tasks(self, limit: int | None) -> None:
        """Cluster-wide cap on RUNNING tasks in this namespace; None removes it."""
        value = None if limit is None else check_concurrency_cap(limit)  # nothing written yet
        self._shards(fix=True)  # a settings write is a first use (README *Sharded namespaces*)
        if value is None:
            self._client.hdel(self.keys.config, "max_concurrent_tasks")
            return
        self._client.hset(self.keys.config, "max_concurrent_tasks", value)

    def set_min_replicas(self, replicas: int) -> None:
        """Every state change waits until this many replicas hold it (WAIT,
        2 s, else ReplicationError); 0 turns that off. A namespace setting:
        workers follow it, last writer wins."""
        value = check_min_replicas(replicas)
        self._shards(fix=True)
        if value:
            self._client.hset(self.keys.config, "min_replicas", value)
        else:
            self._client.hdel(self.keys.config, "min_replicas")
        self._replicas = (time.monotonic(), value)

    def _min_replicas(self) -> int:
        read_at, value = self._replicas
        if time.monotonic() - read_at > REFRESH_S:
            # BUSY/OOM here leaves typed, at the API's edge (connection.py)
            raw = self._client.hget(self.keys.config, "min_replicas")
            value = int(raw) if raw else 0
            self._replicas = (time.monotonic(), value)
        return value

    async def _write(self, call: Call[T]) -> T:
        """An async state change; with min_replicas it runs on the sync client
        in a thread, so the script and its WAIT share one connection."""
        replicas = await asyncio.to_thread(self._min_replicas)
        if not replicas:
            return await self._arun(call)
        result: T | Exception = (
            await asyncio.to_thread(run_replicated, self._client, [call], replicas))[0]
        if isinstance(result, Exception):
            raise result
        return result

    def set_priority_aging(self, seconds: float | None) -> None:
        """Anti-starvation for the whole namespace: a QUEUED task is ordered as
        if enqueued ``priority * seconds`` earlier; None restores strict
        priority order. Applies at once to tasks already queued."""
        self._set_aging(flow.check_priority_aging(seconds))

    def _set_aging(self, seconds: float | None) -> None:
        """Every shard's claims read their own shard's config: write them all."""
        for keys in self._shards(fix=True).keys:
            flow.set_priority_aging(self._client, keys, seconds)

    def set_rate_limit(self, key: str, per_second: float | None, *,
                       burst: int | None = None) -> None:
        """Tasks registered with ``rate_key=key`` start at most ``per_second``
        times per second across all workers (a token bucket of ``burst``
        tokens, default ``per_second``); None removes the limit."""
        limit = flow.check_rate_limit(key, per_second, burst)
        shardset = self._shards(fix=True)
        # Each shard's claims take tokens from their own shard's bucket: a
        # sharded namespace gives each shard an equal share of the rate and
        # of the bucket (at least one token), so the shards together never
        # start more than per_second a second (bursts: max(burst, shards)).
        n = shardset.count
        share = None if limit is None else (limit[0] / n, max(limit[1] / n, 1.0))
        for keys, commands in zip(shardset.keys, shardset.commands):
            flow.set_rate_limit(self._client, keys, commands, key, share)

    # ---- workers and lifecycle ---------------------------------------------------------------
    def start_worker(self, **options: Any) -> InProcessWorker:
        """Runs a worker on a background thread of this process. Options are
        the CLI flags in snake_case (``--import`` as ``imports``, ``import_``
        or ``**{"import": ...}``); see :mod:`taskmesh.embedded`."""
        handle = worker_host().start(self, options)
        self._workers.append(handle)
        return handle

    def close(self) -> None:
        """Stops the workers :meth:`start_worker` started (up to 30 s each),
        then closes the loop thread and connections. Tasks stay in Redis:
        another manager or worker carries on with them."""
        for handle in self._workers:
            handle.stop(timeout=30)
        self._workers.clear()
        if self._portal.running:
            portal_state = self._loops.pop(self._portal.loop, None)
            if portal_state is not None:
                self._portal.call(portal_state.close())
        self._portal.close()
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None and listener.release():
            listener.join()
        scripts.close_lane(self._sync_client)
        self._sync_client.close()

    def __enter__(self) -> "TaskManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "TaskManager":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.close()
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"TaskManager(url={self.url!r}, namespace={self.namespace!r})"


def check_concurrency_cap(limit: Any) -> int:
    """A namespace cap is a positive int; a bool (an int to Python) is refused
    as the mistake it almost always is."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError("max_concurrent_tasks must be an int or None")
    if limit < 1:
        raise ValueError(f"max_concurrent_tasks must be >= 1, got {limit}")
    return limit
