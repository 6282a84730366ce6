"""Heartbeats, lease renewal and the reaper, on a thread of their own.

They run off the worker's event loop on purpose: a task that blocks the loop
(``time.sleep`` inside ``async def``) must not cost the worker its leases,
or another worker would re-run tasks that are still running here.

Every ``lease/3`` seconds (at most 2 s) the keeper renews the worker's heartbeat and the
leases of the tasks it holds (token-checked, see renew.lua), tells the
worker which of them it lost or which were asked to cancel, then runs one
pass of the reaper (recover.lua) for the whole namespace. Every worker runs
the reaper; the script is atomic, so two passes never recover a task twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from . import scripts
from .background import BackgroundThread
from .connection import CONNECTION_ERRORS
from .exceptions import ServerBusyError
from .sharding import ShardSet, shards_call
from .store import Commands, RenewResult

log = logging.getLogger(__name__)

HEARTBEAT_MAX_S = 2.0


class LeaseKeeper(BackgroundThread):
    def __init__(
        self,
        client: Any,
        commands: Commands,
        worker_id: str,
        lease_timeout_s: float,
        held: Callable[[], dict[str, str]],
        info: Callable[[], dict[str, Any]],
        on_renewed: Callable[[list[str], list[str]], None],
        shards: Callable[[], ShardSet] | None = None,
        on_shards: Callable[[int], None] | None = None,
    ):
        super().__init__(name=f"taskmesh-lease-{worker_id}")
        self.client = client
        self.commands = commands
        self.worker_id = worker_id
        self.lease_timeout_ms = int(lease_timeout_s * 1000)
        # At least every third of the lease (README *Workers*), and often enough that the
        # worker's counters in metrics are fresh.
        self.interval = min(lease_timeout_s / 3, HEARTBEAT_MAX_S)
        self.held = held
        self.info = info
        self.on_renewed = on_renewed
        self.shards = shards
        self.on_shards = on_shards
        self._redis_down = False
        self._reap_after = 0.0  # monotonic time before which this keeper does not reap

    def beat(self) -> bool:
        """One renewal + reaper pass. Returns False if Redis was unreachable."""
        try:
            shardset = self.shards() if self.shards is not None else None
            if shardset is None or shardset.count == 1:
                renewed = scripts.run(
                    self.client,
                    self.commands.renew(self.worker_id, self.lease_timeout_ms, self.held(), self.info()),
                )
                if time.monotonic() >= self._reap_after:
                    scripts.run(self.client, self.commands.recover())
            else:
                renewed = self._beat_shards(shardset)
            if self.on_shards is not None:  # read at every heartbeat (README *Sharded namespaces*)
                self.on_shards(scripts.run(self.client, shards_call(self.commands.keys)))
        except (*CONNECTION_ERRORS, ServerBusyError) as exc:
            # OOM/BUSY: renew.lua is refused, but so is every other worker's
            # recover.lua, so no lease is taken over meanwhile; afterwards the
            # same grace round as after an outage lets us renew first.
            if not self._redis_down:
                log.warning("worker %s cannot renew leases: %s", self.worker_id, exc)
            self._redis_down = True
            return False
        if self._redis_down:
            # After an outage every lease may have lapsed. Give live workers
            # one renewal round to reclaim theirs before this one reaps.
            log.info("worker %s reconnected to Redis", self.worker_id)
            self._redis_down = False
            self._reap_after = time.monotonic() + self.interval * 1.5
        if renewed.lost or renewed.cancel_requested:
            self.on_renewed(renewed.lost, renewed.cancel_requested)
        return True

    def _beat_shards(self, shardset: ShardSet) -> RenewResult:
        """Renews on shard 0 (the worker's registry entry) and on every shard
        holding one of its tasks, then reaps every shard: one pipeline each."""
        by_shard: dict[int, dict[str, str]] = {0: {}}
        for task_id, token in self.held().items():
            by_shard.setdefault(shardset.of(task_id), {})[task_id] = token
        info = self.info()
        calls = [shardset.commands[s].renew(self.worker_id, self.lease_timeout_ms, held,
                                            info if s == 0 else None)
                 for s, held in sorted(by_shard.items())]
        renewals = scripts.run_batch(self.client, calls)
        if time.monotonic() >= self._reap_after:
            for res in scripts.run_batch(self.client, [c.recover() for c in shardset.commands]):
                if isinstance(res, Exception):
                    raise res
        lost: list[str] = []
        cancels: list[str] = []
        for res in renewals:
            if isinstance(res, Exception):
                raise res
            lost += res.lost
            cancels += res.cancel_requested
        return RenewResult(lost, cancels)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.exception("lease keeper pass failed; retrying next beat")
