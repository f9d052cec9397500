"""The request path's Redis caller (`router_server.state.batch`) against a real Redis:
calls coalesced into few pipelines on few connections, deadlines on the store's
clock, replies of callers that went handed on, and down meaning really down."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from router_server.state.batch import Deadline, Pipelined, RedisDown, _Call, calls_for
from router_server.state.redis import LuaScript, RedisClient

from tests.helpers.redis_server import RedisServer, redis_binary, redis_client

pytestmark = pytest.mark.anyio

# Returns the deadline it was given and the server's clock as it ran.
_ECHO = """
local time = redis.call('TIME')
return {ARGV[1], string.format('%.0f', tonumber(time[1]) * 1000000 + tonumber(time[2]))}
"""


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> bool:
    with anyio.move_on_after(timeout_s):
        while not await check():
            await anyio.sleep(0.05)
        return True
    return False


async def _connections(url: str, name: str) -> int:
    probe = redis_client(url)
    try:
        listed: list[dict[str, Any]] = await probe.client_list()
        return sum(1 for c in listed if c.get("name") == name)
    finally:
        await probe.aclose()


async def test_a_thousand_concurrent_calls_share_two_connections(redis_url: str) -> None:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    # Named, to count its connections: the router's client, as open_redis builds it.
    client = Redis.from_url(redis_url, client_name=name, retry=Retry(NoBackoff(), 0))
    calls = Pipelined(client, pipelines=2)
    key = f"count:{name}"
    try:
        replies = await asyncio.gather(*(calls.command("INCR", key) for _ in range(1000)))
        assert sorted(replies) == list(range(1, 1001))
        assert await client.get(key) == b"1000"
        status = calls.status()
        assert status["calls"] == 1000
        # Calls made while both pipelines were busy went together in the next.
        assert status["round_trips"] <= 50
        assert await _connections(redis_url, name) <= 2
    finally:
        await client.delete(key)
        await calls.aclose()
        await client.aclose()


async def test_an_error_reply_fails_its_own_call_only(redis_url: str) -> None:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url, client_name=name, retry=Retry(NoBackoff(), 0))
    calls = Pipelined(client, pipelines=1)
    other = redis_client(redis_url)
    text, count = f"text:{name}", f"count:{name}"
    try:
        await other.set(text, "not a number")
        replies = await asyncio.gather(
            calls.command("INCR", count),
            calls.command("INCR", text),
            calls.command("GET", text),
            return_exceptions=True,
        )
        assert replies[0] == 1
        # Redis' own error, as redis-py raises it; the calls around it answer.
        assert isinstance(replies[1], ResponseError)
        assert not isinstance(replies[1], RedisConnectionError)
        assert replies[2] == b"not a number"
        # The connection goes on: the next call uses it, and Redis is not down.
        assert await calls.command("INCR", count) == 2
        assert calls.status()["down"] is False
        assert await _connections(redis_url, name) == 1
    finally:
        await other.delete(text, count)
        await other.aclose()
        await calls.aclose()
        await client.aclose()


@contextlib.asynccontextmanager
async def _killable(redis_url: str) -> AsyncIterator[tuple[str, Pipelined, RedisClient]]:
    """A named batcher on one pipeline, and a probe client to kill its connection with."""
    name = f"batch-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url, client_name=name, retry=Retry(NoBackoff(), 0))
    calls = Pipelined(client, pipelines=1)
    probe = redis_client(redis_url)
    try:
        yield name, calls, probe
    finally:
        await calls.aclose()
        await probe.aclose()
        await client.aclose()


async def _kill_clients(probe: RedisClient) -> None:
    await probe.execute_command("CLIENT", "KILL", "SKIPME", "YES", "TYPE", "normal")


async def test_a_connection_redis_closes_while_idle_is_replaced_without_a_failure(
    redis_url: str,
) -> None:
    async with _killable(redis_url) as (name, calls, probe):
        assert await calls.command("PING") == b"PONG"
        assert calls.status()["connections"] == 1
        await _kill_clients(probe)  # as Redis' `timeout` or a restart does to an idle one

        async def forgotten() -> bool:
            return bool(calls.status()["connections"] == 0)

        assert await _eventually(forgotten)
        # The next call opens a new connection: nothing failed, Redis is not down.
        assert await calls.command("PING") == b"PONG"
        assert calls.status()["failures"] == 0
        assert calls.status()["down"] is False
        assert await _connections(redis_url, name) == 1


async def test_a_connection_lost_with_calls_in_flight_fails_them_and_the_next_reconnects(
    redis_url: str,
) -> None:
    async with _killable(redis_url) as (name, calls, probe):
        assert await calls.command("PING") == b"PONG"
        # Killed while a call waits on it (BLPOP holds it in flight): the call
        # fails (it is not sent again: a retried script could charge twice),
        # and Redis counts as down until a PING answers.
        waiting = asyncio.ensure_future(calls.command("BLPOP", f"empty:{name}", 30))

        async def written() -> bool:
            return calls.in_flight == 1

        assert await _eventually(written)
        await _kill_clients(probe)
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await _eventually(lambda: _answers(calls))
        # A new connection of ours, and the pool's one that PINGed until Redis answered.
        assert await _connections(redis_url, name) <= 2


async def _answers(calls: Pipelined) -> bool:
    try:
        return bool(await calls.command("PING") == b"PONG")
    except RedisError:
        return False


async def test_a_deadline_is_on_the_stores_clock(redis_url: str) -> None:
    client = redis_client(redis_url)
    calls = calls_for(client, pipelines=1)
    echo = LuaScript(client, _ECHO, calls)
    budget_us = 10_000_000
    try:
        await client.script_load(_ECHO)
        first = await echo(args=[Deadline(budget_us)])
        # Before the first pipeline, the store's clock is not known: no deadline.
        assert first[0] == b""
        for _ in range(5):
            deadline, ran_at = (int(v) for v in await echo(args=[Deadline(budget_us)]))
            # The deadline is the budget after the call was written, on Redis' clock.
            assert 0 < deadline - ran_at <= budget_us + 1_000_000
    finally:
        await calls.aclose()
        await client.aclose()


async def test_a_script_redis_lost_is_sent_whole(redis_url: str) -> None:
    client = redis_client(redis_url)
    calls = calls_for(client, pipelines=1)
    echo = LuaScript(client, _ECHO, calls)
    try:
        await client.script_flush()
        replies = await asyncio.gather(*(echo(args=["x"]) for _ in range(20)))
        assert all(r[0] == b"x" for r in replies)
        assert await client.script_exists(echo.sha) == [True]
    finally:
        await calls.aclose()
        await client.aclose()


async def test_the_reply_of_a_caller_that_went_is_handed_on(redis_url: str) -> None:
    client = redis_client(redis_url)
    calls = calls_for(client, pipelines=1)
    key = f"orphan:{uuid.uuid4().hex}"
    orphans: list[Any] = []
    try:
        task = asyncio.ensure_future(calls.command("INCR", key, on_orphan=orphans.append))
        await asyncio.sleep(0)  # queued, not yet answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def handed_on() -> bool:
            return orphans == [1]

        assert await _eventually(handed_on)
        assert await client.get(key) == b"1"
    finally:
        await client.delete(key)
        await calls.aclose()
        await client.aclose()


async def test_a_reply_that_arrived_as_its_caller_went_is_handed_on(redis_url: str) -> None:
    """The race the batcher cannot see: the reply is in the call's future, and the
    caller is cancelled before it wakes to read it."""
    client = redis_client(redis_url)
    calls = calls_for(client, pipelines=1)
    orphans: list[Any] = []
    try:
        call = _Call(
            ("PING",), asyncio.get_running_loop().create_future(), on_orphan=orphans.append
        )
        task = asyncio.ensure_future(calls._wait(call))  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # the caller waits on the future
        call.future.set_result(7)
        task.cancel()  # before it wakes
        with pytest.raises(asyncio.CancelledError):
            await task
        assert orphans == [7]
    finally:
        await calls.aclose()
        await client.aclose()


async def test_a_started_script_shares_the_next_calls_pipeline_and_is_read_without_waiting(
    redis_url: str,
) -> None:
    """`start_script` queues the call before it returns: a call made after it goes
    in the same pipeline, and once that one is answered the started script's
    reply is already in hand (reading it does not suspend: no loop turn)."""
    client = redis_client(redis_url)
    calls = calls_for(client, pipelines=1)
    echo = LuaScript(client, _ECHO, calls)
    key = f"started:{uuid.uuid4().hex}"
    try:
        await echo(args=["warm"])  # the script is loaded
        trips = calls.status()["round_trips"]
        started = echo.start(args=["first"])
        assert await calls.command("INCR", key) == 1
        assert calls.status()["round_trips"] == trips + 1
        with pytest.raises(StopIteration) as done:
            started.send(None)
        assert done.value.value[0] == b"first"
    finally:
        await client.delete(key)
        await calls.aclose()
        await client.aclose()


async def test_a_script_started_while_redis_is_down_fails_when_awaited() -> None:
    with RedisServer(redis_binary()) as server:
        client = redis_client(server.url, timeout_ms=500)
        calls = calls_for(client, pipelines=1)
        echo = LuaScript(client, _ECHO, calls)
        try:
            server.stop()
            with pytest.raises((RedisConnectionError, OSError)):
                await calls.command("PING")
            started = echo.start(args=["x"])  # known down: no raise here
            with pytest.raises(RedisDown):
                await started
        finally:
            await calls.aclose()
            await client.aclose()


async def test_down_only_after_a_real_failure_and_up_after_a_ping() -> None:
    with RedisServer(redis_binary()) as server:
        client = redis_client(server.url, timeout_ms=500)
        calls = calls_for(client, pipelines=2)
        assert isinstance(calls, Pipelined)
        try:
            assert await calls.command("PING") in (True, b"PONG")
            server.stop()
            with pytest.raises((RedisConnectionError, OSError)):
                await calls.command("PING")
            assert calls.status()["down"]
            # Down: refused at once, without a round trip.
            trips = calls.status()["round_trips"]
            with pytest.raises(RedisDown):
                await calls.command("PING")
            assert calls.status()["round_trips"] == trips
            server.start()

            async def up() -> bool:
                return not calls.status()["down"]

            assert await _eventually(up)
            assert await calls.command("PING") in (True, b"PONG")
        finally:
            await calls.aclose()
            await client.aclose()


async def test_a_frozen_redis_is_down_after_the_socket_timeout() -> None:
    with RedisServer(redis_binary()) as server:
        client = redis_client(server.url, timeout_ms=300)
        calls = calls_for(client, pipelines=1)
        try:
            await calls.command("PING")
            server.pause()
            try:
                outcomes = await asyncio.gather(
                    *(calls.command("PING") for _ in range(50)), return_exceptions=True
                )
            finally:
                server.resume()
            # Timed out on the socket (redis' TimeoutError), then down for the rest.
            assert all(isinstance(o, RedisError | OSError) for o in outcomes)
            assert calls.status()["round_trips"] == 2

            async def up() -> bool:
                return not calls.status()["down"]

            assert await _eventually(up)
        finally:
            await calls.aclose()
            await client.aclose()


async def test_a_callers_wait_ends_at_its_timeout_and_the_late_reply_is_handed_on() -> None:
    """A call's own `timeout_s` ends its caller's wait (TimeoutError) long before
    the wire's timeout marks Redis down; the call still runs, and its reply, read
    late, goes to `on_orphan`. Calls given no timeout wait for the reply."""
    with RedisServer(redis_binary()) as server:
        client = redis_client(server.url, timeout_ms=30_000)
        calls = calls_for(client, pipelines=1)
        key = f"late:{uuid.uuid4().hex}"
        orphans: list[Any] = []
        try:
            await calls.command("PING")
            server.pause()
            try:
                # A longer wait first: the shorter ones behind it still end on time.
                longer = asyncio.ensure_future(calls.command("INCR", key, timeout_s=60))
                bounded = [
                    asyncio.ensure_future(
                        calls.command("INCR", key, on_orphan=orphans.append, timeout_s=0.2)
                    )
                    for _ in range(3)
                ]
                unbounded = asyncio.ensure_future(calls.command("INCR", key))
                done, _ = await asyncio.wait(bounded, timeout=20)
                assert done == set(bounded)
                assert all(isinstance(t.exception(), TimeoutError) for t in bounded)
                assert not unbounded.done()
                assert not longer.done()
                assert not calls.status()["down"]  # late, not down
            finally:
                server.resume()
            assert await longer == 1
            assert await unbounded == 5  # after the three it did not wait for

            async def handed_on() -> bool:
                return sorted(orphans) == [2, 3, 4]

            assert await _eventually(handed_on)
        finally:
            await calls.aclose()
            await client.aclose()
