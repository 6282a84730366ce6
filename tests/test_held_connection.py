"""The worker's held connections (held.py) answer as the client would.

Claims and reports go on a connection the claim loop (or the reporter)
keeps for itself; what it cannot do (another kind of client, a connection
that failed) it hands back to the client's regular path, and error replies
stay in place like a pipeline's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from taskmesh.connection import async_client
from taskmesh import held as held_module
from taskmesh.held import HeldConnection
from taskmesh.scripts import Call, LuaScript


def _call(source: str, *args: Any) -> Call[Any]:
    return Call(LuaScript("probe", source), [], list(args))


def _run(redis_server, body) -> Any:
    async def main() -> Any:
        client = async_client(redis_server.url)
        held = HeldConnection(client)
        try:
            return await body(client, held)
        finally:
            await held.close()
            await client.aclose()

    return asyncio.run(main())


@pytest.fixture(params=["hiredis-read", "read_response"])
def read_path(request, monkeypatch):
    """Both ways a held connection reads replies: straight from redis-py's
    hiredis reader, and (when those internals are not what held.py knows,
    e.g. another redis-py) through ``read_response``."""
    if request.param == "read_response":
        monkeypatch.setattr(held_module, "_AsyncHiredisParser", type("Unknown", (), {}))
    return request.param


def test_replies_in_order_with_an_error_reply_in_its_place(redis_server, read_path):
    async def body(client, held):
        return await held.raw([_call("return ARGV[1]", "a"),
                               _call("return redis.error_reply('ERR nope')"),
                               _call("return ARGV[1] .. ARGV[2]", "b", "c")])

    first, error, last = _run(redis_server, body)
    assert first == b"a" and last == b"bc"
    assert isinstance(error, ResponseError) and "nope" in str(error)


def test_scripts_redis_forgot_are_loaded_and_only_those_resent(redis_server, read_path):
    """After SCRIPT FLUSH the calls answered NOSCRIPT are resent once
    loaded; a call that did run is not run again."""
    async def body(client, held):
        counter = _call("return redis.call('INCR', ARGV[1])", "held-test:counter")
        await client.delete("held-test:counter")
        assert await held.raw([counter]) == [1]
        await client.script_flush()
        replies = await held.raw([counter, _call("return 'fresh'"), counter])
        return replies, int(await client.get("held-test:counter"))

    replies, count = _run(redis_server, body)
    assert replies == [2, b"fresh", 3] and count == 3


def test_a_killed_connection_goes_the_regular_way_once_then_reconnects(redis_server):
    async def body(client, held):
        call = _call("return 'ok'")
        assert await held.raw([call]) == [b"ok"]
        conn = held._conn  # the held connection itself, killed from another one
        await conn.send_command("CLIENT", "ID")
        await client.execute_command("CLIENT", "KILL", "ID", await conn.read_response())
        first = await held.raw([call])
        return first, await held.raw([call])

    first, second = _run(redis_server, body)
    assert first is None  # the caller runs it through the client (its retries apply)
    assert second == [b"ok"]


def test_other_clients_always_go_the_regular_way():
    async def main() -> Any:
        client = fakeredis.FakeAsyncRedis()
        held = HeldConnection(client)
        try:
            return await held.raw([_call("return 1")])
        finally:
            await held.close()
            await client.aclose()

    assert asyncio.run(main()) is None

    async def blocking_pool() -> Any:  # async_client(max_connections=...): not this path
        client = redis.asyncio.Redis.from_pool(redis.asyncio.BlockingConnectionPool())
        try:
            return await HeldConnection(client).raw([_call("return 1")])
        finally:
            await client.aclose()

    assert asyncio.run(blocking_pool()) is None


def test_a_blocking_head_runs_ahead_of_the_calls_in_one_write(redis_server, read_path):
    """The idle worker's BLPOP goes ahead of its claim: the calls run once
    it returns (a token, or its own timeout), and only their replies come back."""
    async def body(client, held):
        await client.delete("held-test:wake", "held-test:order")
        call = _call("return redis.call('RPUSH', ARGV[1], 'claim')", "held-test:order")
        head = ("BLPOP", "held-test:wake", 5)
        waiting = asyncio.ensure_future(held.raw([call], head=head, head_block_s=5))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # blocked: the call behind it has not run
        assert await client.lrange("held-test:order", 0, -1) == []
        await client.rpush("held-test:wake", "1")
        woken = await asyncio.wait_for(waiting, 5)
        timed_out = await held.raw([call], head=("BLPOP", "held-test:wake", 0.05),
                                   head_block_s=0.05)
        return woken, timed_out, await client.llen("held-test:wake")

    woken, timed_out, left = _run(redis_server, body)
    assert woken == [1] and timed_out == [2] and left == 0


def test_an_idle_worker_whose_redis_froze_still_stops():
    """Its BLPOP (with the next claim behind it) is on the held connection
    and is not cancelled by a stop: the stop rings the alarm list. With
    Redis frozen (SIGSTOP) that ring never lands, so after STOP_RING_S the
    stop ends that wait itself, and the worker stops, without waiting out
    the client's retries on the way (its goodbye to Redis is bounded)."""
    import os
    import signal
    import time

    import redis as redis_sync

    from taskmesh.background import STOP_JOIN_S
    from taskmesh.server import RedisServer
    from taskmesh.worker import STOP_RING_S, UNREGISTER_ON_STOP_S, Worker, WorkerHandle

    server = RedisServer()
    server.start()
    try:
        handle = WorkerHandle(Worker(url=server.url, namespace="held-frozen"))
        probe = redis_sync.Redis.from_url(server.url)
        deadline = time.monotonic() + 15
        while not any(c.get("cmd") == "blpop" for c in probe.client_list()):  # idle, blocked
            assert time.monotonic() < deadline, "the worker never blocked on its wake lists"
            time.sleep(0.02)
        probe.close()
        os.kill(server.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            assert handle.stop(timeout=30), "the worker did not stop"
            took_s = time.monotonic() - began
            assert took_s >= STOP_RING_S * 0.9  # the ring had its chance
            # The ring, the bounded unregister and the background threads'
            # joint wait, plus slack; not the 4 x 5 s of the client's retries.
            assert took_s < STOP_RING_S + UNREGISTER_ON_STOP_S + STOP_JOIN_S + 4.0, took_s
        finally:
            os.kill(server.pid, signal.SIGCONT)
    finally:
        server.cleanup()
