"""A saturated router refuses with 503 `overloaded` before it asks Redis anything.

Under load the router's own event loop falls behind; a Redis call made then is
answered in time by Redis but read late by the router. Admission is decided
first, from the loop's measured lag: a stalled router answers `overloaded`,
never `limits_unavailable`, and leaves no idempotency claim and no limit state
behind. The burst test holds the whole machine: no other test runs beside it
(tests/helpers/exclusive_fixture.py).
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
import redis

from router_server.mock_backend import MockBackendProcess

from tests.helpers.burst import burst
from tests.helpers.loop_stall import LoopStall
from tests.helpers.router_fixture import RouterFactory
from tests.helpers.support import ACME_KEY, GLOBEX_KEY, auth, eventually

Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def stored_keys(url: str) -> list[bytes]:
    with redis.Redis.from_url(url) as client:
        return [*client.scan_iter("idem:*"), *client.scan_iter("rl:*")]


def test_a_stalled_router_answers_overloaded_and_never_asks_redis(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, redis_url: str
) -> None:
    """A busy router (globex, which has no limits, holds 16 requests hung at mock
    A) whose loop is stalled again and again: acme's 30 requests, with limits and
    idempotency keys in Redis, are all refused as overloaded, and Redis holds
    nothing of theirs; once the loop runs freely they are served."""
    mock_a = mocks[0]
    data = copy.deepcopy(config_data)
    data["state"] = {"store": "redis"}
    # A short decision timeout: a Redis reply read late would fail the decision.
    data["limits"] = {"timeout_ms": 50}
    data["health"] = {"probe_interval_s": 3600, "probe_timeout_s": 5}  # A stays in
    data["backends"]["mock-a"]["read_timeout_s"] = 120
    data["models"]["a-only"] = {"backends": [{"backend": "mock-a", "model": "mock-gpt"}]}
    data["organizations"]["globex"]["models"] = ["a-only"]
    data["organizations"]["acme"]["limits"] = {
        "requests": {"rate": 1000, "per": "minute"},
        "quotas": {"requests_per_day": 1000},
    }
    router = start_router(data, {"ROUTER_REDIS_URL": redis_url})
    mock_a.configure(hang=True)
    body = {**CHAT, "model": "b-only"}
    headers = [{**auth(ACME_KEY), "idempotency-key": f"stalled-{i}"} for i in range(30)]
    assert router.pid is not None
    stall = LoopStall(router.pid)

    async def send_all(
        client: httpx.AsyncClient, body: dict[str, Any], headers: list[dict[str, str]]
    ) -> list[httpx.Response]:
        answers: list[httpx.Response] = []

        async def one(h: dict[str, str]) -> None:
            answers.append(await client.post(f"{router.url}/v1/chat/completions", json=body,
                                             headers=h))  # fmt: skip

        async with anyio.create_task_group() as tg:
            for h in headers:
                tg.start_soon(one, h)
        return answers

    async def in_flight(client: httpx.AsyncClient, n: int) -> None:
        with anyio.fail_after(60):
            while (await client.get(f"{router.url}/v1/status")).json()["backpressure"][
                "in_flight"
            ] != n:
                await anyio.sleep(0.02)

    async def stalled() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            async with anyio.create_task_group() as tg:
                held = {**CHAT, "model": "a-only"}
                tg.start_soon(send_all, client, held, [auth(GLOBEX_KEY)] * 16)
                await in_flight(client, 16)
                await anyio.to_thread.run_sync(stall.__enter__)
                try:
                    refused = await send_all(client, body, headers)
                finally:
                    await anyio.to_thread.run_sync(stall.__exit__, None, None, None)
                await anyio.to_thread.run_sync(mock_a.kill)  # the held requests end
            await in_flight(client, 0)
        return refused

    async def again() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await send_all(client, body, headers)

    refused = anyio.run(stalled)
    codes = sorted((r.status_code, r.json()["error"]["code"]) for r in refused)
    assert codes == [(503, "overloaded")] * 30
    assert stored_keys(redis_url) == []  # no claim, no reservation, no counter

    def calm() -> bool:
        status = httpx.get(f"{router.url}/v1/status").json()
        return bool(status["backpressure"]["loop_lag_ms"] < 100)

    assert eventually(calm, timeout=30)
    served = anyio.run(again)
    assert [r.status_code for r in served] == [200] * 30
    assert not [r for r in served if "idempotent-replayed" in r.headers]
    status = httpx.get(f"{router.url}/v1/status").json()
    assert status["limits"]["failure_decisions"] == 0
    assert status["limits"]["settle_failures"] == 0
    assert status["backpressure"]["shed_by_reason"]["loop_lag"] == 30
    assert stored_keys(redis_url)  # the served requests did reach Redis


@pytest.mark.exclusive
def test_a_burst_of_1000_at_once_is_served_refused_or_shed_never_unavailable(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, redis_url: str
) -> None:
    """1,000 requests really in flight at once on one router, with its defaults for
    admission and a quota of 100: however far the burst lags the loop on this
    machine, every answer is served, refused by the quota, or shed as overloaded
    before the limits were asked; never a store failure, never over the quota."""
    limit = 100
    data = copy.deepcopy(config_data)
    data["state"] = {"store": "redis"}
    data["limits"] = {"timeout_ms": 1000}  # as in test_exact_under_load.py
    data["server"] = {"max_in_flight": 2048, "max_queued": 2048}
    data["organizations"]["acme"]["limits"] = {"quotas": {"requests_per_day": limit}}
    router = start_router(data, {"ROUTER_REDIS_URL": redis_url})
    for mock in mocks:
        mock.configure(latency_ms=200)  # admitted requests stay in flight meanwhile
    requests = [(CHAT, {**auth(ACME_KEY), "idempotency-key": f"burst-{i}"}) for i in range(1000)]
    answers = asyncio.run(burst(router.url, "/v1/chat/completions", requests))

    codes = Counter(
        "200" if status == 200 or body is None else f"{status} {body['error']['code']}"
        for status, body in answers
    )
    assert set(codes) <= {"200", "402 quota_exceeded", "503 overloaded"}, codes
    served = sum(m.stats()["by_path"].get("/v1/chat/completions", 0) for m in mocks)
    assert codes["200"] == served <= limit
    status = httpx.get(f"{router.url}/v1/status").json()
    assert status["limits"]["failure_decisions"] == 0
    assert status["limits"]["settle_failures"] == 0
    assert status["backpressure"]["shed"] == codes["503 overloaded"]
