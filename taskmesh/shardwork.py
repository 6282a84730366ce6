"""A worker's view of a sharded namespace (README *Sharded namespaces*): claiming, waiting and
delivering cross-shard outcomes over every shard.

A 1-shard namespace never comes here (the worker claims with one claim.lua
call as it always did). With N > 1 shards, each claim:

1. looks at up to :data:`PEEK_WINDOW` shards, starting one further each
   claim (a rotation), reading the head of each of the worker's queues there
   and asking shard 0 for room under the cap (reserve.lua), in parallel;
2. runs claim.lua on the shard whose head has the highest priority (ties go
   to the rotation order) for the room granted (less one task's worth for
   each other shard holding tasks parked for a rate-limit token, which
   claim.lua serves only when asked to claim), plus claim.lua with nothing
   to claim on the shards holding SCHEDULED tasks or pending resolutions,
   so their due tasks are promoted.

Priority order is exact within a shard. Across shards, a worker takes the
highest head among the shards it looks at; with N <= PEEK_WINDOW that is
every shard, so the only inversion is between tasks that become QUEUED
while a claim is under way. With more shards, a higher-priority head in a
shard outside the window waits at most ceil(N / PEEK_WINDOW) claims of each
worker.

Idle, the worker blocks on the wake lists of every looked-at shard at once
(one BLPOP per shard; the first token wins). Outcomes that cross shards sit
in the finishing shard's outbox: the worker drains the shard of each task it
finished, and every shard at each heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Sequence

from . import scripts
from .connection import CONNECTION_ERRORS
from .idle import IdleWaiter
from .keys import band_rank
from .scripts import Cmd
from .sharding import ShardSet, drain_outboxes, reserve_call
from .store import ClaimResult

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

PEEK_WINDOW = 8


class ShardedWork:
    def __init__(self, worker: "Worker", shardset: ShardSet):
        self.worker = worker
        self.shardset = shardset
        self.rotation = 0
        self._idle = [IdleWaiter(worker.client, k, worker.id, worker.options.queues)
                      for k in shardset.keys]
        self._drain_wanted: set[int] = set()
        self._drain_event = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self.applied = 0  # deliveries made by this worker (settle() compares)
        self._busy = False  # the background drainer is in a round
        self._settled_at = 0
        self._unconfirmed: set[int] = set()  # shards whose last claim reply was lost

    # ---- claiming -----------------------------------------------------------------
    def window(self) -> list[int]:
        n = self.shardset.count
        start = self.rotation
        self.rotation = (self.rotation + 1) % n
        return [(start + i) % n for i in range(min(n, PEEK_WINDOW))]

    async def claim(self, want: int, lease_timeout_ms: int, seq_slots: int,
                    process_slots: int, claim_id: str = "") -> ClaimResult:
        w = self.worker
        shards = self.window()
        keys = self.shardset.keys
        queues = w.options.queues
        peeks: list[Cmd[Any]] = []
        for s in shards:
            for q in queues:
                peeks.append(Cmd(("ZRANGE", keys[s].queue(q), 0, 0, "WITHSCORES")))
                peeks.append(Cmd(("ZCARD", keys[s].scheduled(q))))
                peeks.append(Cmd(("ZCARD", keys[s].parked(q))))  # waiting for a rate token
            peeks.append(Cmd(("LLEN", keys[s].resolve)))
        held = len(w._held_snapshot())
        grant_raw, peeked = await asyncio.gather(
            scripts.arun(w.client, reserve_call(keys[0], w.id, held, want)),
            _pipeline(w.client, peeks))
        grant = want if grant_raw < 0 else grant_raw
        capped = grant < want
        best: tuple[int, int] | None = None  # (priority rank, position in window)
        maintenance: list[int] = []
        parked: list[int] = []
        per = 3 * len(queues) + 1
        for pos, s in enumerate(shards):
            part = peeked[pos * per:(pos + 1) * per]
            heads = [part[3 * i] for i in range(len(queues))]
            for head in heads:
                if head:
                    rank = band_rank(float(head[0][1]))
                    if best is None or rank < best[0]:
                        best = (rank, pos)
            if any(int(part[3 * i + 2]) for i in range(len(queues))):
                parked.append(s)
            elif any(int(part[3 * i + 1]) for i in range(len(queues))) or int(part[-1]):
                maintenance.append(s)
        target = shards[best[1]] if best is not None else None
        # claim.lua hands parked tasks (rate limits) their tokens only when
        # asked to claim: a shard holding some gets room of its own, one
        # task's worth, out of the grant.
        wants: dict[int, int] = {}
        room = grant
        for s in parked:
            if s != target and room > 0:
                wants[s] = 1
                room -= 1
        if target is not None and room > 0:
            wants[target] = wants.get(target, 0) + room
        # A shard this claim id went to in an attempt whose replies did not
        # all arrive (_unconfirmed) gets it again as a resend: it replays what
        # it claimed then. Every other shard never saw the id: a first send,
        # which claim.lua need not look up (its `last_claim`).
        unconfirmed = self._unconfirmed
        calls = [self.shardset.commands[s].claim(
            w.id, queues, n, lease_timeout_ms, seq_slots if s == target else 0,
            process_slots if s == target else 0, claim_id, fresh=s not in unconfirmed)
            for s, n in wants.items()]
        called = list(wants)
        for s in maintenance + parked + sorted(unconfirmed):
            if s not in called:
                calls.append(self.shardset.commands[s].claim(
                    w.id, queues, 0, lease_timeout_ms, 0, 0, claim_id, fresh=s not in unconfirmed))
                called.append(s)
        # Unconfirmed until every reply has arrived: a batch that raises (its
        # reply lost) or answers an error for one call may have run the others.
        self._unconfirmed = set(called)
        results = await scripts.arun_batch(w.client, calls) if calls else []
        for res in results:
            if isinstance(res, Exception):
                raise res
        self._unconfirmed = set()
        tasks = [t for res in results for t in res.tasks]
        if grant_raw >= 0 and len(tasks) < grant:
            # Give back the room not used, or an idle worker would sit on it.
            await scripts.arun(w.client, reserve_call(keys[0], w.id, held + len(tasks), 0))
        dues = [res.next_due_ms for res in results if res.next_due_ms >= 0]
        return ClaimResult(
            tasks=tasks,
            capped=capped or any(res.capped for res in results),
            lane_full=any(res.lane_full for res in results),
            more_queued=best is not None or bool(parked)
            or any(res.more_queued for res in results),
            next_due_ms=min(dues) if dues else -1,
        )

    # ---- waiting ---------------------------------------------------------------------
    async def wait(self, next_due_ms: int, max_s: float) -> None:
        """Blocks on the wake lists of the next window of shards; returns at
        the first token (or due time, or ``max_s``)."""
        shards = [(self.rotation + i) % self.shardset.count
                  for i in range(min(self.shardset.count, PEEK_WINDOW))]
        waits = [asyncio.ensure_future(self._idle[s].wait(next_due_ms, max_s)) for s in shards]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                fut.result()  # a connection error reaches the worker's handler
        finally:
            for fut in waits:
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    # ---- outbox ----------------------------------------------------------------------
    def drain_soon(self, shards: Sequence[int]) -> None:
        """Asks the drainer to deliver what these shards' outboxes hold
        (called on the worker's loop)."""
        self._drain_wanted.update(shards)
        self._drain_event.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain_forever(), name="taskmesh-outbox")

    async def _drain_forever(self) -> None:
        while True:
            await self._drain_event.wait()
            self._drain_event.clear()
            shards, self._drain_wanted = self._drain_wanted, set()
            self._busy = True
            try:
                self.applied += await drain_outboxes(self.worker.client, self.shardset, shards)
            except CONNECTION_ERRORS as exc:
                log.warning("worker %s: outbox delivery failed (%s); retried at the next "
                            "heartbeat", self.worker.id, exc)
            except Exception:
                log.exception("worker %s: outbox delivery failed; retried at the next heartbeat",
                              self.worker.id)
            finally:
                self._busy = False

    async def settle(self) -> bool:
        """Delivers every shard's outbox now; True if anything was applied
        since the last settle(), here or by the background drainer (a burst
        worker then claims again instead of exiting)."""
        while self._busy or self._drain_event.is_set():  # the background round first
            if self._drainer is None or self._drainer.done():
                break
            await asyncio.sleep(0.01)
        self.applied += await drain_outboxes(self.worker.client, self.shardset,
                                             range(self.shardset.count))
        changed = self.applied != self._settled_at
        self._settled_at = self.applied
        return changed

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)


async def _pipeline(client: Any, cmds: Sequence[Cmd[Any]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for cmd in cmds:
        pipe.execute_command(*cmd.args)
    return list(await pipe.execute())
