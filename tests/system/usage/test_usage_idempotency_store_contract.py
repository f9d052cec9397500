"""One contract for every idempotency store: SQLite (embedded) and Redis (shared)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from router_core.accounting.idempotency import Entry, StoredResponse
from router_core.config_enums import RedisMode
from router_server.usage.idempotency_store import (
    IdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
)

from tests.helpers.redis_server import closed, redis_client

ANSWER = StoredResponse(200, "application/json", (("x-router-backend", "a"),), b'{"ok": 1}')


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store_location(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    if store_kind == "redis":
        yield request.getfixturevalue("redis_url")
    elif store_kind == "redis-cluster":
        yield request.getfixturevalue("redis_cluster_url")
    else:
        yield str(tmp_path / "idempotency.sqlite3")


def open_store(kind: str, where: str) -> IdempotencyStore:
    if kind == "redis":
        return RedisIdempotencyStore(redis_client(where), 0.5)
    if kind == "redis-cluster":
        return RedisIdempotencyStore(redis_client(where, mode=RedisMode.CLUSTER), 2.0)
    return SqliteIdempotencyStore(Path(where))


def test_claim_complete_replay_and_release(store_kind: str, store_location: str) -> None:
    async def main() -> None:
        store = open_store(store_kind, store_location)
        try:
            mine = Entry("fp", "owner-1")
            assert await store.claim("acme/k", mine, 60) is None
            assert await store.claim("acme/k", Entry("fp", "owner-2"), 60) == mine
            assert await store.claim("globex/k", Entry("fp", "owner-3"), 60) is None
            # Only the owner completes or releases its claim.
            await store.release("acme/k", "owner-2")
            assert await store.claim("acme/k", Entry("fp", "owner-2"), 60) == mine
            done = Entry("fp", "owner-1", ANSWER)
            await store.complete("acme/k", done, 86_400)
            assert await store.claim("acme/k", Entry("fp", "owner-4"), 60) == done
            await store.release("acme/k", "owner-1")
            assert await store.claim("acme/k", Entry("fp2", "owner-5"), 60) is None
        finally:
            await closed(store)

    anyio.run(main)


def test_concurrent_claims_have_exactly_one_winner(store_kind: str, store_location: str) -> None:
    async def main() -> list[Entry | None]:
        stores = [
            open_store(store_kind, store_location) for _ in range(2 if store_kind == "redis" else 1)
        ]
        results: list[Entry | None] = []

        async def claim(i: int) -> None:
            results.append(await stores[i % len(stores)].claim("o/dup", Entry("fp", f"o{i}"), 60))

        try:
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(claim, i)
        finally:
            for store in stores:
                await closed(store)
        return results

    results = anyio.run(main)
    assert results.count(None) == 1
    assert len({r.owner for r in results if r is not None}) == 1
