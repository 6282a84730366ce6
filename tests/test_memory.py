"""``memory://``: the SPEC §2 seed example in one process, no Redis server."""

from __future__ import annotations

import asyncio

import pytest

from taskmesh import (
    TaskCancelledError,
    TaskFailedError,
    TaskManager,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    current_task,
)
from tests import tasks

WAIT = 20.0


def test_seed_example(namespace):
    async def main():
        async with TaskManager("memory://", namespace=namespace, max_concurrent_tasks=10) as tm:
            other_task_id = tm.register_task(tasks.add, 1, 2, name="other")
            task_id = tm.register_task(
                tasks.my_function, 1, 2,
                name="My Task",
                kwargs={"param1": 1},
                priority=TaskPriority.HIGH,
                dependencies=[other_task_id],
                max_retries=3, retry_delay=1.0, timeout=60.0,
                description="...", tags=["a"], metadata={"k": "v"},
                executor_type="async",
            )
            result = await tm.execute_task(task_id, wait=True, timeout=WAIT)
            assert result == 4
            assert tm.get_task_result(task_id) == 4
            assert tm.get_task_result(other_task_id) == 3
            assert tm.get_task_status(task_id) is TaskStatus.COMPLETED
            assert tm.get_task_error(task_id) is None
            progress, message = tm.get_task_progress(task_id)
            assert (progress, message) == (0.5, "Halfway done")
            info = tm.get_task(task_id)
            assert info.name == "My Task" and info.tags == ["a"] and info.metadata == {"k": "v"}
            assert info.priority == TaskPriority.HIGH and info.dependencies == [other_task_id]

            # execute_task(wait=False) on a deferred task, then wait for it
            deferred = tm.register_task(tasks.async_add, 20, 22, defer=True)
            assert tm.get_task_status(deferred) is TaskStatus.PENDING
            assert await tm.execute_task(deferred, wait=False) is None
            assert await tm.wait_for_task(deferred, timeout=WAIT) == 42

            # progress from the producer, on a task that has not run
            to_cancel = tm.register_task(tasks.add, 0, 0, defer=True)
            assert tm.update_task_progress(to_cancel, progress=0.5, message="Halfway done")
            assert tm.get_task_progress(to_cancel) == (0.5, "Halfway done")
            # cancel a deferred task: CANCELLED at once, never runs
            assert await tm.cancel_task(to_cancel) is True
            assert tm.get_task_status(to_cancel) is TaskStatus.CANCELLED
            assert await tm.cancel_task(to_cancel) is False
            with pytest.raises(TaskCancelledError):
                await tm.execute_task(to_cancel, wait=True, timeout=WAIT)
            assert tm.get_task(to_cancel).attempts == 0

            # a failing task: the error is recorded and raised to the waiter
            failing = tm.register_task(tasks.fail, "bad input")
            with pytest.raises(TaskFailedError) as excinfo:
                await tm.wait_for_task(failing, timeout=WAIT)
            assert excinfo.value.error.type == "ValueError"
            error = tm.get_task_error(failing)
            assert error.type == "ValueError" and error.message == "bad input"
            assert tm.get_task_status(failing) is TaskStatus.FAILED

    asyncio.run(main())


def test_memory_sync_api_and_local_functions(namespace):
    """Closures and lambdas work in-process (cloudpickle by value)."""
    offset = 100

    def local(x):
        ctx = current_task()
        ctx.update_progress(1.0, "done")
        return x + offset

    async def local_async(x):
        await asyncio.sleep(0)
        return x * 2

    with TaskManager("memory://", namespace=namespace) as tm:
        ids = [tm.register_task(local, 1, executor_type="thread_pool"),
               tm.register_task(local_async, 21),
               tm.register_task(lambda: "lambda", executor_type="sequential")]
        assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [101, 42, "lambda"]
        assert tm.get_task_progress(ids[0]) == (1.0, "done")
        deferred = tm.register_task(tasks.add, 2, 3, defer=True)
        assert tm.execute_task_sync(deferred, wait=True, timeout=WAIT) == 5
        pending = tm.register_task(tasks.add, 2, 3, defer=True)
        assert tm.cancel_task_sync(pending) is True
        with pytest.raises(TaskNotFoundError):
            tm.get_task_status("unknown")


def test_memory_managers_share_one_store(namespace):
    with TaskManager("memory://", namespace=namespace) as a, \
            TaskManager("memory://", namespace=namespace) as b:
        task_id = a.register_task(tasks.add, 4, 4)
        assert b.wait_for_task_sync(task_id, timeout=WAIT) == 8
        assert a.get_task_result(task_id) == 8
    with TaskManager("memory://", namespace=namespace + "other") as c:
        with pytest.raises(TaskNotFoundError):
            c.get_task(task_id)


def test_module_subscribe_without_url_follows_the_manager(monkeypatch):
    """The seed example calls subscribe() with no URL after creating its
    manager; over memory:// the handler must see that manager's events."""
    import threading

    monkeypatch.delenv("TASKMESH_URL", raising=False)
    monkeypatch.delenv("TASKMESH_NAMESPACE", raising=False)
    from taskmesh import EventType, TaskManager, subscribe

    seen = threading.Event()
    tm = TaskManager("memory://", namespace="seed-subscribe")
    sub = subscribe(EventType.TASK_COMPLETED, lambda event: seen.set())
    try:
        tm.wait_for_task_sync(tm.register_task(len, "abc"), timeout=10)
        assert seen.wait(5)
    finally:
        sub.close()
        tm.close()


def test_in_process_workers_always_stop():
    """start_worker()/stop() in quick succession, burst or not, never hangs
    (a cancellation swallowed inside a fakeredis pub/sub read once did)."""
    from taskmesh import TaskManager

    tm = TaskManager("memory://", namespace="stop-often")
    try:
        for i in range(12):
            handle = tm.start_worker(queues="a,b", burst=i % 2 == 0, concurrency=2)
            assert handle.stop(timeout=10), f"worker {i} did not stop"
    finally:
        tm.close()


def _blocked_reads(loop=None) -> list:
    """The store's pending blocking reads (fakeredis wake-up callbacks): of
    ``loop``, or, without it, those whose loop is already closed."""
    from taskmesh.connection import memory_server

    found = []
    for db in memory_server().dbs.values():
        for callback in list(db._change_callbacks):
            loops = [c.cell_contents for c in callback.__closure__ or ()
                     if isinstance(c.cell_contents, asyncio.AbstractEventLoop)]
            if loops and (loops[0] is loop if loop is not None else loops[0].is_closed()):
                found.append(callback)
    return found


def test_closing_a_loop_ends_its_blocked_reads_first(namespace):
    """The portal's, the listener's and an in-process worker's loops cancel
    and await what is still blocked on them (BLPOP, XREAD BLOCK) before they
    close, so no read's
    wake-up callback outlives its loop (connection._tolerate_closed_loops is
    only the guard): checked before any write could have pruned one."""
    from taskmesh import subscribe
    from taskmesh.connection import async_client
    from tests.helpers import wait_until

    tm = TaskManager("memory://", namespace=namespace)
    sub = subscribe(None, lambda event: None, url="memory://", namespace=namespace)
    portal = tm._portal.loop
    listener = sub._hub.loop

    async def block_forever() -> None:
        await async_client("memory://").blpop(f"{namespace}:never", 0)

    portal.call_soon_threadsafe(lambda: asyncio.ensure_future(block_forever()))
    handle = tm.start_worker(queues=f"idle-{namespace}")
    wait_until(lambda: (_blocked_reads(portal) and _blocked_reads(listener)
                        and handle.worker._loop is not None
                        and _blocked_reads(handle.worker._loop)),
               timeout=WAIT, what="blocked reads on the portal, the listener and a worker")
    worker_loop = handle.worker._loop
    assert handle.stop(timeout=WAIT)
    assert worker_loop.is_closed() and not _blocked_reads()
    sub.close()
    tm.close()
    assert sub._hub.thread.join(WAIT) is None and not sub._hub.thread.is_alive()
    assert portal.is_closed() and listener.is_closed()
    assert not _blocked_reads()
