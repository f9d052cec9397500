"""Limits stay exact when the router holds more requests than any pool has
connections: 1,000 requests really in flight at once (every connection open
before any request is written, tests/helpers/burst.py), over two replicas
sharing one Redis. Nothing is decided in failure mode while Redis is healthy.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.burst import burst
from tests.helpers.support import ACME_KEY, GLOBEX_KEY, auth, patient_backends

pytestmark = pytest.mark.exclusive

Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def shared_config(config_data: dict[str, Any]) -> dict[str, Any]:
    data = patient_backends(config_data)
    data["state"] = {**data.get("state", {}), "store": "redis"}
    # The decision's budget is measured on Redis' side: a router whose loop is
    # 1,000 requests behind still reads its answers, however late. (1 s, not
    # the default 0.1 s, only so that a CI machine starving Redis itself of CPU
    # for 100 ms cannot turn this into a test of the failure policy.)
    data["limits"] = {"timeout_ms": 1000, "expected_replicas": 2}
    # A burst of 1,000 lags each replica's loop far past the default shedding
    # threshold, and a request shed as overloaded never reaches the limits: the
    # subject here is their exactness, so no request is shed for lag.
    data["server"] = {
        **data["server"], "max_in_flight": 2048, "max_queued": 2048,
        "admission": {"max_loop_lag_ms": None},
    }  # fmt: skip
    return data


def status_of(router: RouterProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{router.url}/v1/status", timeout=10).json()
    return body


def test_quota_and_rate_admit_exactly_their_limit_with_1000_requests_in_flight(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str
) -> None:
    limit = 100
    data = shared_config(config_data)
    data["organizations"]["acme"]["limits"] = {"quotas": {"requests_per_day": limit}}
    data["organizations"]["globex"]["limits"] = {"requests": {"rate": limit, "per": "hour"}}
    env = {"ROUTER_REDIS_URL": redis_url}
    routers = [start_router(data, env), start_router(data, env)]
    # Admitted requests stay in flight while the denials are decided.
    for mock in mocks:
        mock.configure(latency_ms=200)
    urls = [r.url for r in routers]
    requests = [(CHAT, auth(ACME_KEY if i % 2 else GLOBEX_KEY)) for i in range(1000)]
    answers = asyncio.run(burst(urls[0], "/v1/chat/completions", requests, urls=urls))

    by_org: dict[str, Counter[str]] = {"acme": Counter(), "globex": Counter()}
    for i, (status, body) in enumerate(answers):
        code = "" if status == 200 or body is None else str(body["error"]["code"])
        by_org["acme" if i % 2 else "globex"][f"{status} {code}".strip()] += 1
    assert by_org["acme"] == Counter({"200": limit, "402 quota_exceeded": 500 - limit})
    assert by_org["globex"] == Counter({"200": limit, "429 rate_limit_exceeded": 500 - limit})
    served = sum(m.stats()["by_path"].get("/v1/chat/completions", 0) for m in mocks)
    assert served == 2 * limit
    for router in routers:
        limits = status_of(router)["limits"]
        assert limits["failure_decisions"] == 0
        assert limits["settle_failures"] == 0
