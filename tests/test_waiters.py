"""Result waiters (waiters.py): the outcome a ``done:<id>`` message carries
is what a wait returns, verified like a stored result; a large outcome is
read from the record; one listener per namespace serves every wait."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from taskmesh import (
    EventType, SignatureError, TaskCancelledError, TaskFailedError, TaskManager, TaskStatus,
    subscribe,
)
from taskmesh.serialization import Codec
from taskmesh.waiters import RECENT_DONE, RECHECK_S, parse_done
from tests import tasks
from tests.helpers import wait_until

pytestmark = pytest.mark.all_backends
WAIT = 20.0
SECRET = "s3"


def done_message(status: str, attempts: bytes, result: bytes = b"", error: bytes = b"",
                 exc: bytes = b"") -> bytes:
    """The shape prelude.lua's done_message publishes."""
    head = b"|".join([status.encode(), attempts, *(str(len(v)).encode()
                                                 for v in (result, error, exc))])
    return head + b"|" + result + error + exc


def test_parse_done_reads_the_inline_shape_and_refuses_the_rest():
    assert parse_done(done_message("completed", b"1", b"\x93|x")) == [
        TaskStatus.COMPLETED, b"\x93|x", b"1", None, None]
    assert parse_done(done_message("failed", b"2", error=b'{"a": "|"}', exc=b"\0|")) == [
        TaskStatus.FAILED, None, b"2", b'{"a": "|"}', b"\0|"]
    assert parse_done(b"completed") is None  # the status alone: over the size cap
    assert parse_done(b"running|1|0|0|0|") is None  # not terminal
    assert parse_done(b"completed|1|5|0|0|abc") is None  # sizes do not add up
    assert parse_done(b"completed|1|x|0|0|") is None


def _publish_while_waiting(tm: TaskManager, task_id: str, message: bytes) -> object:
    """Parks an async wait on a PENDING task, publishes ``message`` on its
    done channel once the wait is subscribed, and returns what the wait gave."""

    async def main() -> object:
        wait = asyncio.ensure_future(tm.wait_for_task(task_id, timeout=WAIT))
        waiter = tm._state().waiter
        while waiter.waiting() < 1 and not wait.done():
            await asyncio.sleep(0)  # yields until the wait is parked
        commands = await tm._acmds(task_id)
        await tm._state().client.publish(commands.keys.done_channel(task_id), message)
        return await wait

    return asyncio.run(main())


def test_an_outcome_in_the_done_message_is_returned_without_a_read(backend, namespace):
    """The record stays PENDING: what the wait returns came from the message,
    and only a result signed for this task and attempt is accepted."""
    with backend.manager(namespace, secret=SECRET) as tm:
        task_id = tm.register_task(tasks.add, 1, 2, defer=True)
        signed = Codec(secret=SECRET.encode(), namespace=namespace).for_result(task_id, 1)
        message = done_message("completed", b"1", signed.encode_result(42))
        assert _publish_while_waiting(tm, task_id, message) == 42
        assert tm.get_task_status(task_id) is TaskStatus.PENDING

        other = Codec(secret=SECRET.encode(), namespace=namespace).for_result("other", 1)
        for forged in (done_message("completed", b"1", other.encode_result(666)),
                       done_message("completed", b"2", signed.encode_result(666)),
                       done_message("completed", b"1", Codec().encode_result(666))):
            with pytest.raises(SignatureError):
                _publish_while_waiting(tm, task_id, forged)


def test_a_status_only_message_makes_the_wait_read_the_record(tm, namespace):
    task_id = tm.register_task(tasks.add, 1, 2, defer=True)
    with pytest.raises(TimeoutError):  # woken, read PENDING, waited on
        asyncio.run(asyncio.wait_for(_timeout_after_publish(tm, task_id), WAIT))


async def _timeout_after_publish(tm: TaskManager, task_id: str) -> object:
    wait = asyncio.ensure_future(tm.wait_for_task(task_id, timeout=1.0))
    waiter = tm._state().waiter
    while waiter.waiting() < 1 and not wait.done():
        await asyncio.sleep(0)
    commands = await tm._acmds(task_id)
    await tm._state().client.publish(commands.keys.done_channel(task_id), b"completed")
    return await wait


def test_large_and_small_outcomes_round_trip(tm, worker_factory):
    worker_factory()
    big = "x" * 10_000  # over the done message's cap: read from the record
    ids = [tm.register_task(tasks.echo, big), tm.register_task(tasks.add, 2, 3)]
    assert tm.wait_for_task_sync(ids[0], timeout=WAIT) == ((big,), {})
    assert tm.wait_for_task_sync(ids[1], timeout=WAIT) == 5
    assert asyncio.run(tm.wait_for_task(ids[0], timeout=WAIT)) == ((big,), {})
    failing = tm.register_task(tasks.fail, "boom")
    with pytest.raises(TaskFailedError) as info:
        tm.wait_for_task_sync(failing, timeout=WAIT)
    assert info.value.error.type == "ValueError" and "boom" in info.value.error.message


# ---- one listener per (url, namespace) in a process ------------------------------------

@pytest.mark.single_backend  # counts the server's clients
def test_one_listener_serves_every_wait_handler_and_stream(redis_server, rds, namespace):
    """Three managers, blocking waits on three threads, async waits on two
    loops, three subscriptions and two events() streams: one pub/sub
    connection and one XREAD reader in all, and each gets what it waits for."""
    def pubsub_clients() -> int:
        return len(rds.client_list(_type="pubsub"))

    def xread_clients() -> int:
        return sum(1 for c in rds.client_list() if c.get("cmd") == "xread")

    base_pubsub, base_xread = pubsub_clients(), xread_clients()
    managers = [TaskManager(redis_server.url, namespace=namespace) for _ in range(3)]
    deferred = [[m.register_task(tasks.add, i, j, defer=True) for j in range(20)]
                for i, m in enumerate(managers)]
    outcomes: list[str] = []
    created = [threading.Event() for _ in range(5)]

    def blocking_wait(m: TaskManager, task_id: str) -> None:
        try:
            m.wait_for_task_sync(task_id, timeout=WAIT)
        except TaskCancelledError:
            outcomes.append("cancelled")

    async def async_waits(m: TaskManager, ids: list[str]) -> None:
        for result in await asyncio.gather(*(m.wait_for_task(t, timeout=WAIT) for t in ids),
                                           return_exceptions=True):
            outcomes.append("cancelled" if isinstance(result, TaskCancelledError) else "?")

    async def streams(ready: threading.Event) -> None:
        pair = [managers[0].events(EventType.TASK_CREATED), managers[1].events()]
        for stream in pair:
            await stream.subscribed()
        ready.set()
        for stream, seen in zip(pair, created[3:]):
            while (await stream.__anext__()).task_id != probe_id[0]:
                pass
            seen.set()
            await stream.aclose()

    probe_id = [f"probe-{namespace}"]  # known before it is registered
    subs = [subscribe(EventType.TASK_CREATED, _on_probe(created[0], probe_id),
                      url=redis_server.url, namespace=namespace),
            managers[1].subscribe(None, _on_probe(created[1], probe_id)),
            managers[2].subscribe([EventType.TASK_CREATED], _on_probe(created[2], probe_id))]
    streams_ready = threading.Event()
    threads = [threading.Thread(target=blocking_wait, args=(m, ids[0]))
               for m, ids in zip(managers, deferred)]
    threads += [threading.Thread(target=asyncio.run, args=(async_waits(m, ids[1:]),))
                for m, ids in zip(managers[:2], deferred[:2])]
    threads.append(threading.Thread(target=asyncio.run, args=(streams(streams_ready),)))
    for thread in threads:
        thread.start()
    try:
        waiter = managers[0]._hub().waiter
        expected = 3 + 2 * 19
        wait_until(lambda: waiter.waiting() == expected and streams_ready.is_set(),
                   timeout=WAIT, what="every wait parked and both streams subscribed")
        assert pubsub_clients() - base_pubsub <= 1
        assert xread_clients() - base_xread <= 1
        managers[2].register_task(tasks.add, 0, 0, defer=True, task_id=probe_id[0])
        for seen in created:
            assert seen.wait(WAIT)
        for ids in deferred:
            for task_id in ids:
                assert managers[0].cancel_task_sync(task_id)
        for thread in threads:
            thread.join(WAIT)
        assert outcomes.count("cancelled") == expected
    finally:
        for sub in subs:
            sub.close()
        for m in managers:
            m.close()
    # The last user gone, the listener and its connections are too.
    assert not [t for t in threading.enumerate()
                if t.name in (f"taskmesh-events-{namespace}", f"taskmesh-done-{namespace}")]
    wait_until(lambda: pubsub_clients() <= base_pubsub, timeout=WAIT,
               what="the listener's pub/sub connection to close")


def _on_probe(seen: threading.Event, probe_id: list[str]):
    def handler(event) -> None:
        if event.task_id == probe_id[0]:
            seen.set()
    return handler


# ---- fresh tasks: registered while subscribed, waited on without a first read -----------

def test_a_fresh_task_skips_the_first_read_only_while_nothing_can_have_been_missed(tm):
    waiter = tm._hub().waiter
    waiter.ensure_reader_blocking(WAIT)
    mark = waiter.mark()
    assert mark is not None
    waiter.expect("fresh", mark)

    def look(first: bool = True) -> tuple:
        def wake(outcome) -> None:
            pass
        try:
            return waiter._watch("fresh", wake, first)
        finally:
            waiter._unwatch("fresh", wake)

    assert look(first=False) == (False, None)  # a later look of a wait reads
    assert look() == (True, None)
    assert look() == (False, None)  # used up by the first wait: another one reads
    waiter.expect("fresh", mark)
    waiter._seen += RECENT_DONE  # as many messages since as the reader keeps
    assert look() == (False, None)
    waiter._seen -= RECENT_DONE
    waiter.expect("fresh", mark)
    waiter._wake_all()  # a lost connection: messages may have been missed
    assert look() == (False, None)


def test_a_wait_parked_without_the_subscription_reads_again_when_it_stands(tm):
    """A wait that read while the listener was not subscribed (it began
    during a failed first attempt, or a loss woke it) may have read just
    before its task's message went out unheard: the (re)subscription wakes
    it to read once more, rather than leaving it to the RECHECK_S re-read."""
    waiter = tm._hub().waiter
    waiter.ensure_reader_blocking(WAIT)
    woken: list = []
    waiter._watch("parked", woken.append)
    try:
        waiter._mark_subscribed()  # what the reader calls once it has (re)subscribed
        assert woken == [None]  # None: no outcome given, read the record
    finally:
        waiter._unwatch("parked", woken.append)


def test_a_fresh_tasks_outcome_published_before_the_wait_is_kept_for_it(backend, namespace):
    """The message lands before the wait begins (the record stays PENDING):
    the wait returns what the reader kept, verified as any other."""
    with backend.manager(namespace, secret=SECRET) as tm:
        waiter = tm._hub().waiter
        waiter.ensure_reader_blocking(WAIT)
        task_id = tm.register_task(tasks.add, 1, 2, defer=True)
        assert task_id in waiter._fresh
        signed = Codec(secret=SECRET.encode(), namespace=namespace).for_result(task_id, 1)
        tm._client.publish(tm._cmds(task_id).keys.done_channel(task_id),
                           done_message("completed", b"1", signed.encode_result(3)))
        wait_until(lambda: task_id in waiter._recent, timeout=WAIT, what="the message read")
        assert tm.wait_for_task_sync(task_id, timeout=WAIT) == 3
        assert tm.get_task_status(task_id) is TaskStatus.PENDING
        with pytest.raises(TimeoutError):  # a fresh task with no message yet: waits on
            tm.wait_for_task_sync(tm.register_task(tasks.add, 1, 2, defer=True), timeout=0.2)


def test_fresh_tasks_round_trip_through_a_worker(tm, worker_factory):
    worker_factory()
    first = tm.register_task(tasks.add, 1, 1)
    assert tm.wait_for_task_sync(first, timeout=WAIT) == 2  # subscribes
    ids = [tm.register_task(tasks.add, i, i) for i in range(20)]  # fresh from here on
    assert all(i in tm._hub().waiter._fresh or i in tm._hub().waiter._recent for i in ids)
    assert [tm.wait_for_task_sync(i, timeout=WAIT) for i in ids] == [2 * i for i in range(20)]
    assert asyncio.run(_wait_all(tm, [tm.register_task(tasks.add, i, 1) for i in range(5)])) == [
        i + 1 for i in range(5)]


async def _wait_all(tm: TaskManager, ids: list[str]) -> list:
    return [await tm.wait_for_task(i, timeout=WAIT) for i in ids]


def test_a_handler_that_waits_for_a_result_is_not_its_own_obstacle(tm, worker_factory):
    """Handlers run on the listener's events thread; the done reader has its
    own, so a sync handler blocked in wait_for_task_sync gets its result
    pushed, before the first re-read (RECHECK_S) that would otherwise end it."""
    later = tm.register_task(tasks.add, 20, 22, defer=True)
    got: list = []
    finished = threading.Event()

    def handler(event) -> None:
        if event.task_id == first and not got:
            tm.execute_task_sync(later)
            started = time.monotonic()
            got.append(tm.wait_for_task_sync(later))
            got.append(time.monotonic() - started)
            finished.set()

    first = f"first-{later}"
    sub = tm.subscribe(EventType.TASK_COMPLETED, handler)
    try:
        worker_factory()
        tm.register_task(tasks.add, 1, 1, task_id=first)
        assert finished.wait(WAIT)
        assert got[0] == 42 and got[1] < RECHECK_S - 1, got
    finally:
        sub.close()


# ---- plain Redis: the socket read by the wait itself (waiters._SocketReader) -------------

@pytest.mark.single_backend  # kills the server's pub/sub client
def test_a_blocking_wait_reads_the_socket_itself_and_rides_out_a_lost_connection(
        redis_server, rds, namespace, worker_factory):
    """A lone blocking wait holds the reading role (nobody reads for it); a
    dropped subscription wakes it to re-read, the socket's thread
    resubscribes, and the result still comes pushed (before any re-read)."""
    with TaskManager(redis_server.url, namespace=namespace) as tm:
        waiter = tm._hub().waiter
        reader = waiter._socket
        assert reader is not None
        task_id = tm.register_task(tasks.add, 2, 3, defer=True)
        got: list = []
        thread = threading.Thread(target=lambda: got.append(tm.wait_for_task_sync(task_id, WAIT)))
        thread.start()
        wait_until(lambda: waiter.waiting() == 1 and reader.role.locked(), timeout=WAIT,
                   what="the wait parked, reading the socket")
        assert reader._passive == 0
        patterns = rds.pubsub_numpat()
        epoch = waiter._epoch
        rds.client_kill_filter(_type="pubsub")
        wait_until(lambda: waiter._epoch >= epoch + 2 and rds.pubsub_numpat() >= patterns,
                   timeout=WAIT, what="the reader to resubscribe")
        wait_until(lambda: waiter.waiting() == 1, timeout=WAIT, what="the wait parked again")
        worker_factory()
        started = time.monotonic()
        tm.execute_task_sync(task_id)
        thread.join(WAIT)
        assert got == [5] and time.monotonic() - started < RECHECK_S - 1


@pytest.mark.single_backend
def test_blocking_and_async_waits_together_on_the_socket(redis_server, namespace, worker_factory):
    """Blocking waits on several threads and async waits at once: one of
    them (or the socket's thread) reads, every one gets its own result."""
    worker_factory()
    with TaskManager(redis_server.url, namespace=namespace) as tm:
        ids = [tm.register_task(tasks.add, i, 1, defer=True) for i in range(12)]
        got: dict[str, object] = {}

        def blocking(task_id: str) -> None:
            got[task_id] = tm.wait_for_task_sync(task_id, timeout=WAIT)

        async def async_waits(some: list[str]) -> None:
            for task_id, result in zip(some, await asyncio.gather(
                    *(tm.wait_for_task(t, timeout=WAIT) for t in some))):
                got[task_id] = result

        threads = [threading.Thread(target=blocking, args=(t,)) for t in ids[:6]]
        threads.append(threading.Thread(target=asyncio.run, args=(async_waits(ids[6:]),)))
        for thread in threads:
            thread.start()
        wait_until(lambda: tm._hub().waiter.waiting() == len(ids), timeout=WAIT,
                   what="every wait parked")
        started = time.monotonic()
        for task_id in reversed(ids):
            tm.execute_task_sync(task_id)
        for thread in threads:
            thread.join(WAIT)
        assert got == {t: i + 1 for i, t in enumerate(ids)}
        assert time.monotonic() - started < RECHECK_S - 1
