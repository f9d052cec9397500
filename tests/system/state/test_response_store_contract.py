"""One contract for both stores of OpenAI Responses: SQLite (the embedded
default) and Redis (the real server from tests/helpers/redis_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs
import pytest

from router_core.config_enums import RedisMode
from router_server.state.errors import Store, StoreUnavailable
from router_server.state.responses import (
    RedisResponseStore,
    ResponseStore,
    SqliteResponseStore,
    StoredResponse,
    TooLarge,
)

from tests.helpers.redis_server import closed, redis_client

MAX_BYTES = 4096
StoreFactory = Callable[[], ResponseStore]


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens stores on one shared backing (one file, or one Redis): like
    replicas, or the same router before and after a restart."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "responses.sqlite3"
        return lambda: SqliteResponseStore(path, MAX_BYTES)
    if request.param == "redis-cluster":
        at: str = request.getfixturevalue("redis_cluster_url")
        return lambda: RedisResponseStore(
            redis_client(at, mode=RedisMode.CLUSTER), timeout_s=2.0, max_bytes=MAX_BYTES
        )
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisResponseStore(redis_client(url), timeout_s=2.0, max_bytes=MAX_BYTES)


def stored(response_id: str, words: str = "hello") -> StoredResponse:
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]},
        {"type": "message", "role": "assistant", "id": f"msg_{response_id}",
         "content": [{"type": "output_text", "text": words.upper()}]},
    ]  # fmt: skip
    return StoredResponse({"id": response_id, "object": "response"}, items, 1_800_000_000)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_put_get_delete(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert await store.get("acme", "resp_1") is None
        await store.put("acme", "resp_1", stored("resp_1"), ttl_s=3600)
        assert await store.get("acme", "resp_1") == stored("resp_1")
        # Put again: replaced, not duplicated.
        await store.put("acme", "resp_1", stored("resp_1", "again"), ttl_s=3600)
        assert await store.get("acme", "resp_1") == stored("resp_1", "again")
        assert await store.delete("acme", "resp_1") is True
        assert await store.delete("acme", "resp_1") is False
        assert await store.get("acme", "resp_1") is None
        await closed(store)

    run(scenario)


def test_a_response_keeps_the_conversation_it_belongs_to(make_store: StoreFactory) -> None:
    """Affinity pins a conversation's turns by its name: kept with each turn,
    on every store; an entry without one (kept before) reads back as None."""

    async def scenario() -> None:
        store = make_store()
        turn = attrs.evolve(stored("resp_2"), conversation="conv_1")
        await store.put("acme", "resp_2", turn, ttl_s=3600)
        assert (await store.get("acme", "resp_2")) == turn
        await store.put("acme", "resp_3", stored("resp_3"), ttl_s=3600)
        found = await store.get("acme", "resp_3")
        assert found is not None
        assert found.conversation is None
        await closed(store)

    run(scenario)


def test_one_organization_never_reaches_anothers(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.put("acme", "resp_shared", stored("resp_shared", "acme's"), ttl_s=3600)
        assert await store.get("globex", "resp_shared") is None
        assert await store.delete("globex", "resp_shared") is False
        # The same id in another organization is a different entry.
        await store.put("globex", "resp_shared", stored("resp_shared", "globex's"), ttl_s=3600)
        acme, globex = (
            await store.get("acme", "resp_shared"),
            await store.get("globex", "resp_shared"),
        )
        assert acme == stored("resp_shared", "acme's")
        assert globex == stored("resp_shared", "globex's")
        await closed(store)

    run(scenario)


def test_another_store_on_the_same_backing_reads_it(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        first, second = make_store(), make_store()
        await first.put("acme", "resp_2", stored("resp_2"), ttl_s=3600)
        await closed(first)
        assert await second.get("acme", "resp_2") == stored("resp_2")
        assert await second.delete("acme", "resp_2") is True
        await closed(second)

    run(scenario)


def test_concurrent_puts_are_each_kept(make_store: StoreFactory) -> None:
    """Many puts at once (SQLite writes them together): every one is readable when
    its put returns, and a put whose caller went away is still written."""

    async def scenario() -> None:
        store = make_store()
        ids = [f"resp_c{i}" for i in range(200)]

        async def put_then_get(response_id: str) -> StoredResponse | None:
            await store.put("acme", response_id, stored(response_id), ttl_s=3600)
            return await store.get("acme", response_id)

        found = await asyncio.gather(*(put_then_get(i) for i in ids))
        assert found == [stored(i) for i in ids]
        abandoned = asyncio.ensure_future(
            store.put("acme", "resp_gone", stored("resp_gone"), ttl_s=3600)
        )
        await asyncio.sleep(0)
        abandoned.cancel()
        await asyncio.gather(abandoned, return_exceptions=True)
        await closed(store)
        reopened = make_store()
        for _ in range(100):  # the abandoned write lands on its own
            if await reopened.get("acme", "resp_gone") is not None:
                break
            await asyncio.sleep(0.05)
        assert await reopened.get("acme", "resp_gone") == stored("resp_gone")
        await closed(reopened)

    run(scenario)


def test_an_entry_expires_after_its_ttl(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.put("acme", "resp_long", stored("resp_long"), ttl_s=3600)
        await store.put("acme", "resp_short", stored("resp_short"), ttl_s=1)
        # Gone once its second has passed (polled: a loaded machine may be slow).
        for _ in range(100):
            if await store.get("acme", "resp_short") is None:
                break
            await asyncio.sleep(0.1)
        assert await store.get("acme", "resp_short") is None
        assert await store.delete("acme", "resp_short") is False
        assert await store.get("acme", "resp_long") == stored("resp_long")
        await closed(store)

    run(scenario)


def test_a_conversation_over_max_bytes_is_refused_and_not_written(
    make_store: StoreFactory,
) -> None:
    async def scenario() -> None:
        store = make_store()
        with pytest.raises(TooLarge, match="max_bytes"):
            await store.put("acme", "resp_big", stored("resp_big", "x" * MAX_BYTES), ttl_s=3600)
        assert await store.get("acme", "resp_big") is None
        await closed(store)

    run(scenario)


def test_redis_down_is_a_store_failure_without_its_url() -> None:
    async def scenario() -> None:
        # A port nothing listens on, with a password in the URL.
        store = RedisResponseStore(
            redis_client("redis://user:s3cret@127.0.0.1:1/0"), timeout_s=2.0, max_bytes=MAX_BYTES
        )
        for call in (
            store.put("acme", "resp_1", stored("resp_1"), ttl_s=60),
            store.get("acme", "resp_1"),
            store.delete("acme", "resp_1"),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await call
            assert caught.value.store is Store.RESPONSES
            assert caught.value.problem.code == "responses_unavailable"
            assert "s3cret" not in str(caught.value)
        await closed(store)

    run(scenario)


def test_an_unwritable_sqlite_path_is_a_store_failure(tmp_path: Path) -> None:
    async def scenario() -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        store = SqliteResponseStore(blocker / "responses.sqlite3", MAX_BYTES)
        with pytest.raises(StoreUnavailable, match="put"):
            await store.put("acme", "resp_1", stored("resp_1"), ttl_s=60)
        # Puts written together all fail, and none waits forever.
        together = [store.put("acme", f"resp_{i}", stored(f"resp_{i}"), ttl_s=60) for i in range(5)]
        failed = await asyncio.gather(*together, return_exceptions=True)
        assert all(isinstance(exc, StoreUnavailable) for exc in failed), failed
        # Nothing was ever written: reading finds nothing rather than failing.
        assert await store.get("acme", "resp_1") is None
        await closed(store)

    run(scenario)
