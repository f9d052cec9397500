"""What only the Redis store has: key layout, TTLs, the server's clock, failures, replicas."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from router_core.accounting.idempotency import Entry, StoredResponse
from router_core.limits.admission import LimitKind
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import GcraLimit
from router_core.limits.integers import NEVER
from router_core.limits.ledger import BudgetSpec, QuotaSpec, RateSpec, Spec
from router_core.limits.windows import WindowKind
from router_server.mock_backend.process import free_port
from router_server.redis_limits import RedisLimitStore, hash_tag
from router_server.state.batch import calls_for
from router_server.state.errors import RAN_LATE, StoreUnavailable
from router_server.usage.idempotency_store import RedisIdempotencyStore

from tests.helpers.redis_server import RedisServer, closed, redis_client

S = 1_000_000
DAY = 86_400 * S
T0 = 2_145_916_800 * S + 10 * DAY + 3_600 * S  # 2038-01-11 01:00 UTC, after the server's now


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as sync_client:
        yield sync_client


def every_kind(org: str = "acme") -> list[Spec]:
    return [
        RateSpec(f"org:{org}:rpm", LimitKind.RATE, GcraLimit(60, 60 * S, 10), 1),
        RateSpec(f"org:{org}:tpm", LimitKind.TOKENS_RATE, GcraLimit(10_000, 60 * S, 10_000), 700),
        QuotaSpec(f"org:{org}:requests", 1_000, WindowKind.DAY, 1),
        QuotaSpec(f"org:{org}:tokens", 10**6, WindowKind.MONTH, 700),
        BudgetSpec(f"org:{org}:spend:day", 10**9, WindowKind.DAY, 5_000),
        BudgetSpec(f"org:{org}:spend", 10**12, WindowKind.TOTAL, 5_000),
    ]


def ms_up(us: int) -> int:
    return -(-us // 1000)


def test_the_hash_tag_is_the_organization() -> None:
    assert hash_tag("org:acme:key:k1:rpm") == "acme"
    assert hash_tag("org:acme") == "acme"
    assert hash_tag("global:rpm") == "global:rpm"
    with pytest.raises(ValueError, match="braces"):
        hash_tag("org:a{b}:rpm")


def test_one_request_may_not_span_organizations(redis_url: str) -> None:
    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), timeout_s=5.0)
        try:
            specs = [every_kind("acme")[0], every_kind("globex")[2]]
            with pytest.raises(ValueError, match="share one organization"):
                await store.admit("r1", specs, T0)
            lone = QuotaSpec("global:requests", 10, WindowKind.DAY, 1)
            with pytest.raises(ValueError, match="share one organization"):
                await store.admit(
                    "r2", [lone, QuotaSpec("global:tokens", 10, WindowKind.DAY, 1)], T0
                )
            admitted = await store.admit("r3", [lone], T0)
            assert admitted.allowed
            assert await store.get(admitted.holds[0].key, T0) == 1
            await store.settle(admitted.holds, [0], T0)
            assert await store.get(admitted.holds[0].key, T0) == 0
        finally:
            await closed(store)

    asyncio.run(scenario())


def test_every_key_expires_when_its_state_stops_mattering(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), timeout_s=5.0, total_hold_ttl_s=3_600)
        try:
            admitted = await store.admit("r1", every_kind(), T0)
            assert admitted.allowed
            writes = admitted.decision.new_states
            assert len(writes) == 6
            for write in writes:
                name = f"rl:{{acme}}:s:{write.key}"
                expected = -1 if write.expire_at_us == NEVER else ms_up(write.expire_at_us)
                assert client.pexpiretime(name) == expected, write
            for hold in admitted.holds:
                name = f"rl:{{acme}}:h:{hold.key}"
                index = f"rl:{{acme}}:i:{hold.key}"
                assert client.hget(name, "r1") == str(hold.amount).encode()
                # Reaped at T0 + the hold lifetime (1 h by default).
                assert client.zscore(index, "r1") == T0 + 3_600 * S
                # A total window's holds outlive their latest reap time by total_hold_ttl_s.
                expected = T0 + 7_200 * S if hold.expire_at_us == NEVER else hold.expire_at_us
                assert client.pexpiretime(name) == ms_up(expected), hold
                assert client.pexpiretime(index) == ms_up(expected), hold
            # Only the total budget lives for ever.
            names = sorted(n.decode() for n in client.scan_iter("rl:*"))
            assert len(names) == 6 + 4 + 4
            forever = [n for n in names if client.pttl(n) < 0]
            assert forever == ["rl:{acme}:s:org:acme:spend:0"]

            await store.settle(admitted.holds, [1, 600, 4_000, 4_500], T0 + S)
            for hold in admitted.holds:
                name = f"rl:{{acme}}:s:{hold.key}"
                expected = -1 if hold.expire_at_us == NEVER else ms_up(hold.expire_at_us)
                assert client.pexpiretime(name) == expected, hold
                assert client.exists(f"rl:{{acme}}:h:{hold.key}") == 0
                assert client.exists(f"rl:{{acme}}:i:{hold.key}") == 0
        finally:
            await closed(store)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "settings",
    [
        {"hold_ttl_s": 0},
        {"hold_ttl_s": -1.0},
        {"hold_ttl_s": float("nan")},
        {"hold_ttl_s": 2.0**60},
        {"total_hold_ttl_s": 0},
        {"timeout_s": 0},
    ],
)
def test_durations_out_of_range_are_refused(redis_url: str, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        RedisLimitStore(redis_client(redis_url), **settings)


def test_reaping_moves_a_hold_to_the_reaped_hash_until_it_settles(
    redis_url: str, client: redis.Redis
) -> None:
    specs: list[Spec] = [
        QuotaSpec("org:acme:requests", 1_000, WindowKind.DAY, 1),
        BudgetSpec("org:acme:spend", 10**12, WindowKind.TOTAL, 5_000),
    ]

    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), timeout_s=5.0, hold_ttl_s=60)
        try:
            admitted = await store.admit("r1", specs, T0)
            reaped_at = T0 + 60 * S
            assert await store.reap(reaped_at) == 2
            day_end = admitted.holds[0].expire_at_us
            for hold, until in zip(admitted.holds, [day_end, reaped_at + 7 * DAY], strict=True):
                assert client.exists(f"rl:{{acme}}:h:{hold.key}", f"rl:{{acme}}:i:{hold.key}") == 0
                reaped = f"rl:{{acme}}:r:{hold.key}"
                assert client.hget(reaped, "r1") == str(hold.amount).encode()
                # Remembered a week, or until the window ends.
                assert client.pexpiretime(reaped) == ms_up(until), hold
            await store.settle(admitted.holds, [1, 4_000], reaped_at + S)
            assert client.exists(*(f"rl:{{acme}}:r:{hold.key}" for hold in admitted.holds)) == 0
            assert await store.get(admitted.holds[1].key) == BudgetState(4_000, 0)
        finally:
            await closed(store)

    asyncio.run(scenario())


def test_a_deadline_is_checked_on_the_servers_clock(redis_url: str, client: redis.Redis) -> None:
    spec = QuotaSpec("org:acme:requests", 100, WindowKind.DAY, 1)

    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), timeout_s=5.0)
        try:
            soon = int(time.time() * S) + 60 * S
            admitted = await store.admit("r1", [spec], deadline_us=soon)
            assert admitted.allowed
            # A deadline the server's clock has passed, as after a long wait in a queue.
            with pytest.raises(StoreUnavailable, match=RAN_LATE):
                await store.admit("r2", [spec], deadline_us=admitted.now_us)
            assert await store.get(admitted.holds[0].key) == 1
            assert await store.open_holds() == 1
        finally:
            await closed(store)

    asyncio.run(scenario())


def test_without_a_now_the_servers_clock_decides(redis_url: str, client: redis.Redis) -> None:
    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), prefix="clock:", timeout_s=5.0)
        try:
            admitted = await store.admit("r1", every_kind())
            assert admitted.allowed
            assert abs(admitted.now_us - time.time() * S) < 5 * S
            await store.settle(admitted.holds, [1, 700, 5_000, 5_000])
            assert await store.open_holds() == 0
            # The rate key lives until its TAT has passed on the server's clock:
            # one emission interval (1 s), its expiry rounded up to the next ms
            # and PTTL read from the current ms, so 1 ms more at most.
            ttl_ms = client.pttl("clock:{acme}:s:org:acme:rpm")
            assert 0 < ttl_ms <= 1_001
        finally:
            await closed(store)

    asyncio.run(scenario())


def test_a_stopped_or_killed_server_fails_fast_then_recovers(
    redis_url: str, redis_server: RedisServer
) -> None:
    if not redis_server.controllable:
        pytest.skip("REDIS_URL points at a shared server; it cannot be stopped")
    spec = QuotaSpec("org:acme:requests", 100, WindowKind.DAY, 1)

    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url))  # the default bound: 100 ms a call
        try:
            admitted = await store.admit("r1", [spec])
            assert admitted.allowed
            for outage in (redis_server.stop, redis_server.kill):
                outage()
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as raised:
                    await store.admit("r2", [spec])
                with pytest.raises(StoreUnavailable):
                    await store.settle(admitted.holds, [1])
                assert time.monotonic() - started < 2.0
                assert "redis://" not in str(raised.value)
                redis_server.start()
                # The same store works again, on a server that kept nothing.
                admitted = await store.admit("r3", [spec])
                assert admitted.allowed
                assert await store.get(admitted.holds[0].key) == 1
        finally:
            await closed(store)
            redis_server.start()

    asyncio.run(scenario())


def test_a_server_that_does_not_answer_times_out(redis_url: str, client: redis.Redis) -> None:
    spec = QuotaSpec("org:acme:requests", 100, WindowKind.DAY, 1)

    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), timeout_s=0.1)
        try:
            assert (await store.admit("r1", [spec])).allowed
            client.client_pause(1_000)  # every client's commands wait for 1 s
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"no answer within 0\.1 s"):
                await store.admit("r2", [spec])
            assert time.monotonic() - started < 0.9
            await asyncio.sleep(1.2)  # the pause itself, not a limit boundary
            assert (await store.admit("r3", [spec])).allowed
        finally:
            await closed(store)

    asyncio.run(scenario())


def test_a_read_only_replica_is_unavailable(
    redis_url: str, redis_server: RedisServer, client: redis.Redis
) -> None:
    if not redis_server.controllable:
        pytest.skip("REDIS_URL points at a shared server; it must stay a primary")
    spec = QuotaSpec("org:acme:requests", 100, WindowKind.DAY, 1)

    async def scenario() -> None:
        store = RedisLimitStore(redis_client(redis_url), timeout_s=5.0)
        try:
            with pytest.raises(StoreUnavailable, match="ReadOnlyError"):
                await store.admit("r1", [spec])
        finally:
            await closed(store)

    # A replica of a primary that is not there: it refuses writes.
    client.replicaof("127.0.0.1", str(free_port()))
    try:
        asyncio.run(scenario())
    finally:
        client.replicaof("NO", "ONE")


def test_concurrent_replicas_admit_exactly_the_limit(redis_url: str) -> None:
    burst, budget, price = 37, 1_000, 30
    specs: list[Spec] = [
        RateSpec("org:acme:rpm", LimitKind.RATE, GcraLimit(1, 3_600 * S, burst), 1)
    ]
    spend = BudgetSpec("org:acme:spend", budget, WindowKind.DAY, price)

    async def scenario() -> None:
        # Two clients with their own connections, as two router replicas would have.
        replicas = [RedisLimitStore(redis_client(redis_url), timeout_s=5.0) for _ in range(2)]
        try:
            rate_results = await asyncio.gather(
                *(replicas[i % 2].admit(f"r{i}", specs) for i in range(200))
            )
            assert sum(a.allowed for a in rate_results) == burst
            spend_results = await asyncio.gather(
                *(replicas[i % 2].admit(f"s{i}", [spend]) for i in range(200))
            )
            admitted = [a for a in spend_results if a.allowed]
            assert len(admitted) == budget // price
            key = admitted[0].holds[0].key
            state = await replicas[0].get(key)
            assert state == BudgetState(0, budget // price * price)
            await asyncio.gather(*(replicas[1].settle(a.holds, [price - 1]) for a in admitted))
            assert await replicas[0].open_holds() == 0
            assert await replicas[1].get(key) == BudgetState(len(admitted) * (price - 1), 0)
        finally:
            for replica in replicas:
                await closed(replica)

    asyncio.run(scenario())


def test_a_settlement_and_a_claims_end_started_together_share_one_round_trip(
    redis_url: str,
) -> None:
    """What a request's end sends (`Exchange._settle`): both are queued before
    either is awaited, so they go in one pipeline, and once the settlement is
    read the claim's end is too (reading it does not wait: no loop turn)."""

    async def scenario() -> None:
        client = redis_client(redis_url)
        calls = calls_for(client, pipelines=1)
        limits = RedisLimitStore(client, calls=calls, timeout_s=5.0)
        idempotency = RedisIdempotencyStore(client, 5.0, calls)
        key = f"acme/end-{uuid.uuid4().hex}"
        specs = [QuotaSpec("org:acme:end-requests", 10, WindowKind.DAY, 1)]
        answer = StoredResponse(200, "application/json", (), b'{"ok": true}')
        try:
            # Both scripts loaded first (a script Redis lacks costs a second trip).
            warm = await limits.admit("end-0", specs, T0)
            await limits.settle(warm.holds, [0], T0)
            await idempotency.release(key, "nobody")
            admitted = await limits.admit("end-1", specs, T0)
            assert await idempotency.claim(key, Entry("fp", "me"), 60) is None
            trips = calls.status()["round_trips"]
            settling = limits.start_settle(admitted.holds, [1], T0)
            ending = idempotency.start_complete(key, Entry("fp", "me", answer), 60)
            await settling
            assert calls.status()["round_trips"] == trips + 1
            assert inspect.iscoroutine(ending)
            with pytest.raises(StopIteration):
                ending.send(None)
            assert await limits.get(admitted.holds[0].key, T0) == 1
            stored = await idempotency.claim(key, Entry("fp", "retry"), 60)
            assert stored is not None
            assert stored.response == answer
        finally:
            await calls.aclose()
            await closed(limits)

    asyncio.run(scenario())
