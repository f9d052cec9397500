"""One contract for every override store: SQLite (the embedded default) and Redis
(the real server from tests/helpers/redis_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis

from router_core.config_enums import RedisMode
from router_core.overrides import NO_OVERRIDES, Override, new_override
from router_server.admin import codec
from router_server.admin.audit import AuditEntry, Change
from router_server.admin.book import OverrideBook
from router_server.admin.redis_store import RedisOverrideStore
from router_server.admin.sqlite_store import SqliteOverrideStore
from router_server.admin.store import OverrideStore
from router_server.state.errors import StoreUnavailable
from router_server.state.live import ChangeFeed

from tests.helpers.redis_server import RedisServer, closed, redis_client

NOW = 1_800_000_000.0
StoreFactory = Callable[[], OverrideStore]


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens stores on one shared backing (one file, or one Redis): like replicas,
    or like the same router before and after a restart."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "overrides.sqlite3"
        return lambda: SqliteOverrideStore(path)
    if request.param == "redis-cluster":
        at: str = request.getfixturevalue("redis_cluster_url")
        return lambda: RedisOverrideStore(redis_client(at, mode=RedisMode.CLUSTER), timeout_s=2.0)
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisOverrideStore(redis_client(url), timeout_s=2.0)


def drain(backend: str = "mock-a", ttl_s: float = 60.0, **kwargs: Any) -> Override:
    return new_override(
        id=kwargs.pop("id", f"ovr_{backend}_{ttl_s:g}"),
        action="drain",
        backend=backend,
        reason="maintenance",
        ttl_s=ttl_s,
        now=NOW,
        created_by="CN=alice",
        **kwargs,
    )


def entry(override: Override, change: Change = Change.CREATED) -> AuditEntry:
    return AuditEntry(f"aud_{override.id}_{change}", NOW, "CN=alice", change, override, "why")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_put_load_delete_and_audit(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert await store.load(NOW) == []
        assert await store.audit(10) == []
        a, b = drain("mock-a"), drain("mock-b", model="chat", organization="acme")
        await store.put(a, entry(a))
        await store.put(b, entry(b))
        assert sorted(await store.load(NOW), key=lambda o: o.id) == sorted(
            [a, b], key=lambda o: o.id
        )
        assert await store.delete(a.id, entry(a, Change.DELETED)) is True
        assert await store.delete(a.id, entry(a, Change.DELETED)) is False
        assert await store.load(NOW) == [b]
        changes = [(e.change, e.override.id) for e in await store.audit(10)]
        # Newest first; the failed second delete recorded nothing.
        assert changes == [(Change.DELETED, a.id), (Change.CREATED, b.id), (Change.CREATED, a.id)]
        assert len(await store.audit(2)) == 2
        await closed(store)

    run(scenario)


def test_expired_overrides_are_not_loaded_and_are_pruned(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        short, long = drain("mock-a", ttl_s=10), drain("mock-b", ttl_s=100)
        await store.put(short, entry(short))
        await store.put(long, entry(long))
        assert len(await store.load(NOW + 9.9)) == 2
        assert await store.load(NOW + 10) == [long]
        # Pruned: even a reader whose clock lags no longer sees it.
        assert await store.load(NOW) == [long]
        await closed(store)

    run(scenario)


def test_overrides_survive_reopening_the_store(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        first = make_store()
        override = drain()
        await first.put(override, entry(override))
        await closed(first)
        second = make_store()
        assert await second.load(NOW) == [override]
        assert [e.override for e in await second.audit(5)] == [override]
        await closed(second)

    run(scenario)


def test_a_change_made_through_one_store_is_seen_by_another_book(
    make_store: StoreFactory,
) -> None:
    async def scenario() -> None:
        writer, reader = make_store(), make_store()
        book = OverrideBook(reader, refresh_s=0.2, clock=lambda: NOW)
        await book.refresh()
        assert book.applicable("chat", "acme", NOW) is NO_OVERRIDES
        override = drain()
        async with asyncio.timeout(3):
            follow = asyncio.ensure_future(book.follow())
            await asyncio.sleep(0.05)
            await writer.put(override, entry(override))
            while book.applicable("chat", "acme", NOW).drained != {"mock-a"}:
                await asyncio.sleep(0.01)
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await closed(writer)
        await closed(reader)

    run(scenario)


def test_unreadable_records_are_skipped_not_fatal(redis_url: str) -> None:
    async def scenario() -> None:
        good = drain()
        with redis.Redis.from_url(redis_url) as client:
            client.hset("router:{overrides}", "bad", b"{not json")
            client.hset("router:{overrides}", "odd", b'{"id": "odd"}')
            client.hset("router:{overrides}", good.id, codec.dumps(good))
        store = RedisOverrideStore(redis_client(redis_url), timeout_s=2.0)
        assert await store.load(NOW) == [good]
        await closed(store)

    run(scenario)


def test_redis_publishes_every_change(redis_url: str) -> None:
    async def scenario() -> None:
        writer, listener = (
            RedisOverrideStore(redis_client(redis_url), timeout_s=2.0) for _ in range(2)
        )
        assert isinstance(listener, ChangeFeed)
        assert not isinstance(SqliteOverrideStore("unused.sqlite3"), ChangeFeed)
        seen = asyncio.Event()
        calls = 0

        def changed() -> None:
            nonlocal calls
            calls += 1
            if calls > 1:  # the first call comes with the subscription itself
                seen.set()

        task = asyncio.ensure_future(listener.listen(changed))
        while calls == 0:
            await asyncio.sleep(0.01)
        override = drain()
        await writer.put(override, entry(override))
        async with asyncio.timeout(2):
            await seen.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await closed(writer)
        await closed(listener)

    run(scenario)


def test_a_failing_store_says_so_without_its_url() -> None:
    async def scenario() -> None:
        # A port nothing listens on, with a password in the URL.
        store = RedisOverrideStore(redis_client("redis://user:s3cret@127.0.0.1:1/0"), timeout_s=2.0)
        with pytest.raises(StoreUnavailable) as caught:
            await store.load(NOW)
        assert caught.value.status == 503
        assert "s3cret" not in caught.value.detail
        book = OverrideBook(store)
        await book.refresh()  # logged, not raised: the last view stays in force
        assert book.last_error is not None
        await closed(store)

    run(scenario)


def test_an_unwritable_sqlite_path_is_a_store_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def scenario() -> None:
        store = SqliteOverrideStore(blocker / "overrides.sqlite3")
        assert await store.load(NOW) == []  # nothing there yet is not a failure
        override = drain()
        with pytest.raises(StoreUnavailable, match="put"):
            await store.put(override, entry(override))

    run(scenario)


def test_the_change_feed_comes_back_after_redis_restarts(redis_server: RedisServer) -> None:
    if not redis_server.controllable:
        pytest.skip("REDIS_URL points at a shared server, which the test cannot restart")
    redis_server.start()

    async def scenario() -> None:
        listener = RedisOverrideStore(redis_client(redis_server.url), timeout_s=2.0)
        calls = 0

        def changed() -> None:
            nonlocal calls
            calls += 1

        async def wait_for(count: int) -> None:
            async with asyncio.timeout(10):
                while calls < count:
                    await asyncio.sleep(0.01)

        task = asyncio.ensure_future(listener.listen(changed))
        await wait_for(1)
        await asyncio.to_thread(redis_server.kill)
        await asyncio.to_thread(redis_server.start)
        # Resubscribed: that alone reports a change (one may have been missed)...
        await wait_for(2)
        # ...and changes published afterwards arrive again.
        writer = RedisOverrideStore(redis_client(redis_server.url), timeout_s=2.0)
        override = drain()
        await writer.put(override, entry(override))
        await wait_for(3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await closed(writer)
        await closed(listener)

    run(scenario)
