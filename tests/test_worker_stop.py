"""What a stopping worker leaves behind in Redis, against the suite's private
redis-server (an in-process worker, so that its background threads can be
held at the moment that matters)."""

from __future__ import annotations

import threading
from typing import Any

from taskmesh import TaskManager
from taskmesh.lease import LeaseKeeper
from taskmesh.worker import Worker, WorkerHandle
from tests.helpers import wait_until

WAIT = 20.0


def test_a_renewal_in_flight_at_stop_does_not_bring_the_worker_back(redis_server, namespace,
                                                                     monkeypatch):
    """The lease keeper's pass may be under way when the worker stops. The
    stop waits for it before unregistering: its renewal (which re-adds the
    worker to the live set) landing after the unregister would list the
    stopped worker in ``get_metrics()["workers"]`` until its heartbeat
    lapsed. Here one pass is held until the unregister has run (or 1 s,
    within the stop's wait for it), so on a stop that does not wait the
    renewal lands after the unregister."""
    armed, held, unregistered = threading.Event(), threading.Event(), threading.Event()
    real_beat, real_unregister = LeaseKeeper.beat, Worker._unregister

    def beat_held_once(self: LeaseKeeper) -> bool:
        if armed.is_set() and not held.is_set():
            held.set()
            unregistered.wait(1.0)
        return real_beat(self)

    async def unregister_and_say_so(self: Worker) -> Any:
        await real_unregister(self)
        unregistered.set()

    monkeypatch.setattr(LeaseKeeper, "beat", beat_held_once)
    monkeypatch.setattr(Worker, "_unregister", unregister_and_say_so)
    with TaskManager(redis_server.url, namespace=namespace) as tm:
        # lease 1.5 s: the keeper beats every 0.5 s
        handle = WorkerHandle(Worker(url=redis_server.url, namespace=namespace,
                                     lease_timeout=1.5))
        try:
            assert wait_until(lambda: [w["id"] for w in tm.get_metrics()["workers"]]
                              == [handle.id], WAIT)
            armed.set()
            assert held.wait(WAIT), "the lease keeper never beat"
            assert handle.stop(timeout=WAIT), "the worker did not stop"
            assert unregistered.is_set()
            assert tm.get_metrics()["workers"] == []
        finally:
            handle.stop(timeout=WAIT)
