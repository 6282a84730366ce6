"""Result waiters (waiters.py): the outcome a ``done:<id>`` message carries
is what a wait returns, verified like a stored result; a large outcome is
read from the record; one listener per namespace serves every wait."""

from __future__ import annotations

import asyncio

import pytest

from taskmesh import SignatureError, TaskFailedError, TaskManager, TaskStatus
from taskmesh.serialization import Codec
from taskmesh.waiters import parse_done
from tests import tasks

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
