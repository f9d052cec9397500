"""Nothing the router gave up on stays charged, and no settlement is lost:
through a caller that goes mid-decision, a Redis frozen mid-run, and a router
killed (SIGKILL) with settlements still waiting for that Redis.

At the end, idle, Redis holds no open hold and no reserved amount, and what
it committed is exactly what the routers settled (their `settled` log lines:
one per request, written before the store is asked).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_core.accounting.idempotency import Entry
from router_core.accounting.records import Outcome, TokenCounts, UsageRecord
from router_core.auth import Principal
from router_core.config_codec import structure
from router_core.limits.admission import LimitKind
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import BudgetSpec, QuotaSpec, RateSpec, Spec
from router_core.limits.windows import WindowKind
from router_core.problems import ClientError
from router_core.requests import Operation, validate_openai
from router_core.retry_budget import RetryBudget
from router_server.dispatch import Dispatcher
from router_server.exchange import Ending, Exchange
from router_server.health import Health
from router_server.limits import LimitGate
from router_server.mock_backend import MockBackendProcess
from router_server.redis_limits import RedisLimitStore
from router_server.runtime import Runtime
from router_server.settlements import SettlementOutbox
from router_server.state.batch import calls_for
from router_server.state.layer import StateLayer
from router_server.usage.idempotency_store import RedisIdempotencyStore
from router_server.usage.setup import open_usage
from router_server.usage.trace import Unrecorded, UsageTrace

from tests.helpers.redis_server import RedisServer, closed, redis_binary, redis_client
from tests.helpers.support import ACME_KEY, CHAT, auth, base_config

Mocks = tuple[MockBackendProcess, MockBackendProcess]
TOTAL = "org:acme:usd:total:0"


def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_an_admission_whose_caller_went_is_released(redis_url: str) -> None:
    specs: list[Spec] = [
        RateSpec("org:acme:rps", LimitKind.RATE, GcraLimit(100, 1_000_000, 100), 1),
        QuotaSpec("org:acme:req:day", 1_000, WindowKind.DAY, 1),
        BudgetSpec("org:acme:usd:total", 10**12, WindowKind.TOTAL, 5_000),
    ]

    async def scenario() -> None:
        client = redis_client(redis_url)
        calls = calls_for(client, pipelines=1)
        store = RedisLimitStore(client, calls=calls, timeout_s=5.0)
        try:
            asked = asyncio.ensure_future(store.admit("gone", specs))
            await asyncio.sleep(0)  # written, not yet answered
            asked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asked
            for _ in range(200):
                if store.released and await store.open_holds() == 0:
                    break
                await asyncio.sleep(0.05)
            assert store.released == 1
            assert await store.open_holds() == 0
            total = await store.get(TOTAL)
            assert total == BudgetState(0, 0)
        finally:
            await calls.aclose()
            await closed(store)

    asyncio.run(scenario())


def test_an_idempotency_claim_whose_caller_went_is_given_back(redis_url: str) -> None:
    """The claim is sent before its caller waits for it (`start_claim`); a caller
    that goes meanwhile leaves the key free for its retry, not held for the lease."""

    async def scenario() -> None:
        client = redis_client(redis_url)
        calls = calls_for(client, pipelines=1)
        store = RedisIdempotencyStore(client, 5.0, calls)
        key = f"acme/gone-{uuid.uuid4().hex}"
        try:
            waiting = asyncio.ensure_future(store.claim(key, Entry("fp", "gone"), 600))
            await asyncio.sleep(0)  # sent, not yet answered
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            # Behind the claim on the one pipeline: once answered, the claim ran.
            await calls.command("PING")
            for _ in range(200):
                if not await client.exists(store.name(key)):
                    break
                await asyncio.sleep(0.05)
            # Free: the retry claims it (None), rather than finding the claim of nobody.
            assert await store.claim(key, Entry("fp", "retry"), 600) is None
        finally:
            await calls.aclose()
            await client.aclose()

    asyncio.run(scenario())


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to freeze and to kill."""
    with RedisServer(redis_binary()) as server:
        yield server


def settled_nanos(logs: list[Path]) -> tuple[int, int]:
    total = count = 0
    for path in logs:
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "settled":
                    total += entry["charged"].get("usd", 0)
                    count += 1
    return total, count


async def _stream(client: httpx.AsyncClient, url: str, started: list[int]) -> str:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "count slowly"}],
        "max_tokens": 12,
        "stream": True,
    }
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=auth(ACME_KEY)
    ) as response:
        if response.status_code != 200:
            data = json.loads(await response.aread())
            return f"{response.status_code} {data['error']['code']}"
        started.append(1)
        async for _ in response.aiter_lines():
            pass
        return "200"


def store_view(url: str) -> tuple[BudgetState | None, int]:
    async def view() -> tuple[BudgetState | None, int]:
        store = RedisLimitStore(redis_client(url), timeout_s=5.0)
        try:
            state = await store.get(TOTAL)
            assert state is None or isinstance(state, BudgetState)
            return state, await store.open_holds()
        finally:
            await closed(store)

    return asyncio.run(view())


@pytest.mark.exclusive
def test_a_frozen_redis_and_a_killed_router_leave_nothing_reserved_or_lost(
    start_router: Any,
    config_data: dict[str, Any],
    mocks: Mocks,
    own_redis: RedisServer,
    tmp_path: Path,
) -> None:
    data = copy.deepcopy(config_data)
    data["state"] = {**data.get("state", {}), "store": "redis", "redis": {"timeout_ms": 500}}
    data["prices"] = {
        "chat": {"input": 1, "output": 2},
        "embed": {"input": 1},
        "b-only": {"input": 1, "output": 2},
    }
    data["organizations"]["acme"]["limits"] = {"budget": {"total": 10}}
    # Debug: the "settled" lines the spend is summed from are logged at that level.
    router = start_router(data, {"ROUTER_REDIS_URL": own_redis.url}, ("--log-level", "debug"))
    for mock in mocks:
        mock.configure(chunk_delay_ms=100)  # about 1.2 s per stream

    def status() -> dict[str, Any]:
        limits: dict[str, Any] = httpx.get(f"{router.url}/v1/status", timeout=10).json()["limits"]
        return limits

    async def run() -> Counter[str]:
        started: list[int] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(60)) as client:
            streams = [
                asyncio.ensure_future(_stream(client, router.url, started)) for _ in range(20)
            ]
            while len(started) < 20:  # all admitted, all streaming
                await asyncio.sleep(0.02)
            own_redis.pause()
            try:
                # Asked while Redis is frozen: the budget fails closed; those
                # decisions run when Redis wakes, past their deadline, and charge nothing.
                late = [_stream(client, router.url, []) for _ in range(10)]
                outcomes = await asyncio.gather(*streams, *late)
                await asyncio.sleep(1.0)  # the settlements' wait for Redis ends
            finally:
                own_redis.resume()
        return Counter(outcomes)

    outcomes = asyncio.run(run())
    assert outcomes == Counter({"200": 20, "503 limits_unavailable": 10})
    # The streams ended while Redis was frozen: their settlements wait on disk.
    assert status()["settlements_pending"] > 0
    router.kill()  # SIGKILL: only the outbox file remembers them
    router.start()
    assert eventually(lambda: status()["settlements_pending"] == 0)
    router.stop()  # flush its log

    state, open_holds = store_view(own_redis.url)
    assert open_holds == 0
    assert state is not None
    assert state.reserved == 0
    spent, settlements = settled_nanos(sorted(tmp_path.glob("router-*.log")))
    assert settlements == 20
    assert state.committed == spent


def test_a_settlement_asyncio_cancels_is_kept_to_replay_and_the_record_written(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """anyio's shield does not hold asyncio's own cancel (hypercorn's, for the
    requests still running past its graceful timeout). One that arrives while
    the settlement waits for a frozen Redis still leaves the usage record, and
    the settlement in the outbox; replayed once Redis is back, it is applied
    once, whether or not the first attempt reached Redis."""
    data = base_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    data["state"] = {"store": "redis", "dir": str(tmp_path / "state")}
    # A long wait of its own: the cancel, not a timeout, ends the settlement.
    data["limits"] = {"timeout_ms": 10_000}
    data["organizations"]["acme"]["limits"] = {"quotas": {"tokens_per_month": 1_000}}
    config = structure(data)
    env = {"ROUTER_REDIS_URL": own_redis.url}
    principal = Principal("acme", "key-1", config.organizations["acme"])
    records: list[UsageRecord] = []

    class Records:
        def observe(self, record: UsageRecord) -> None:
            records.append(record)

        def observe_unrecorded(self, answer: Unrecorded) -> None:
            return None

    async def scenario() -> tuple[int | None, int, int, object]:
        stores = StateLayer.open(config, env)
        outbox = SettlementOutbox(tmp_path / "settlements.sqlite3")
        limits = LimitGate(stores.limit_store(), stores.kind, outbox)
        health = Health(lambda: config)
        dispatch = Dispatcher(health, lambda: {}, RetryBudget(lambda: config.routing))
        try:
            async with open_usage(config, env, stores) as usage:
                usage.recorder.observers.append(Records())
                trace = UsageTrace("req-1", "/v1/chat/completions", 0.0, 0, config)
                trace.principal = principal
                trace.inference = validate_openai(Operation.CHAT, {**CHAT, "max_tokens": 5})
                exchange = Exchange(Runtime.build(config, {}), trace, usage, limits, dispatch)
                exchange.ticket = await limits.admit(
                    config, "req-1", principal.limit_scope, trace.inference
                )
                own_redis.pause()
                try:
                    ending = Ending(200, Outcome.SUCCESS, counts=TokenCounts(3, 4, 7), served=True)
                    finishing = asyncio.ensure_future(exchange.finish(ending))
                    await asyncio.sleep(0.3)  # the settlement waits on the frozen Redis
                    assert not finishing.done()
                    finishing.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await finishing
                    kept = outbox.count
                finally:
                    own_redis.resume()
                replayed = await limits.replay()
                big = validate_openai(Operation.CHAT, {**CHAT, "max_tokens": 1_000})
                with pytest.raises(ClientError) as refused:
                    await limits.admit(config, "req-2", principal.limit_scope, big)
                open_holds = await stores.limit_store().open_holds()  # type: ignore[attr-defined]
        finally:
            outbox.close()
            await stores.aclose()
        return kept, replayed, open_holds, refused.value.extra["current_usage"]

    kept, replayed, open_holds, used = asyncio.run(scenario())
    assert [(r.request_id, r.status, r.usage.total_tokens) for r in records] == [("req-1", 200, 7)]
    assert replayed == 1
    assert kept in (None, 1)  # (the count is known once the outbox was read)
    assert open_holds == 0
    assert used == 7  # charged once: the first attempt reached Redis, the replay was a no-op
