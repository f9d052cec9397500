"""The routing engine against real servers: a killed backend, a hung one, overload,
the retry budget and hedging. Load comes from real clients over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, CHAT, auth, base_config, eventually
from tests.helpers.traffic import Event, run_load

# These tests bound what happens under a load they make themselves: no other test
# runs beside them (tests/helpers/exclusive_fixture.py).
pytestmark = pytest.mark.exclusive

Mocks = tuple[MockBackendProcess, MockBackendProcess]
RouterFactory = Callable[[dict[str, Any]], RouterProcess]
CHAT_PATH = "/v1/chat/completions"


def circuit(router: RouterProcess, backend: str) -> str:
    status = httpx.get(router.url + "/v1/status", timeout=2).json()
    state: str = status["backends"][backend]["circuit"]
    return state


def served(mocks: Mocks) -> list[int]:
    return [
        sum(n for path, n in mock.stats()["by_path"].items() if path != "/v1/models")
        for mock in mocks
    ]


def config_for(mocks: Mocks, **health: Any) -> dict[str, Any]:
    config = base_config(mocks[0].url, mocks[1].url)
    config["health"] = {"probe_interval_s": 0.5, "probe_timeout_s": 0.5, **health}
    return config


def test_killed_backend_under_load_costs_no_client_errors_and_traffic_returns(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    router = start_router(config_for(mocks, open_s=1, ramp_s=1))
    mock_a = mocks[0]
    opened_after: list[float] = []

    def kill() -> None:
        mock_a.kill()
        killed = time.monotonic()
        assert eventually(lambda: circuit(router, "mock-a") == "open", timeout=5, step=0.01)
        opened_after.append(time.monotonic() - killed)

    kill_event = Event(1.5, kill)
    restart = Event(4.0, mock_a.start)
    sent = run_load(
        router.url + CHAT_PATH, auth(ACME_KEY), CHAT,
        concurrency=16, duration=8.0, events=[kill_event, restart],
    )  # fmt: skip
    failures = [s for s in sent if s.status != 200]
    assert not failures, failures[:5]
    # The circuit opened well within the 5 s the issue allows.
    assert opened_after
    assert opened_after[0] < 5.0
    print(f"\nmock-a circuit open {opened_after[0] * 1000:.0f} ms after SIGKILL")
    assert restart.done_at is not None
    # Between the circuit opening and the restart, mock-b served everything.
    assert kill_event.done_at is not None
    down = [s for s in sent if kill_event.done_at < s.started and s.ended < restart.done_at]
    assert down
    assert all(s.backend == "mock-b" for s in down)
    # After the restart, traffic came back to mock-a (gradually; it ramps).
    late = [s for s in sent if s.started > restart.done_at + 3.0]
    assert sum(s.backend == "mock-a" for s in late) > len(late) * 0.2


def test_hung_backend_stops_receiving_traffic_within_its_timeout(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    config = config_for(mocks, open_s=30)
    for backend in config["backends"].values():
        backend["read_timeout_s"] = 1
    router = start_router(config)
    hang = Event(1.0, lambda: mocks[0].configure(hang=True))
    sent = run_load(
        router.url + CHAT_PATH, auth(ACME_KEY), CHAT, concurrency=8, duration=5.0, events=[hang]
    )
    assert hang.done_at is not None
    timed_out = [s for s in sent if s.status != 200]
    # Requests caught by the hang time out (504, not re-sent: they may still run)...
    assert timed_out
    assert all(s.status == 504 and s.code == "backend_timeout" for s in timed_out)
    # ...and none sent after the read timeout (plus scheduling slack) went there.
    assert all(s.started < hang.done_at + 1.0 + 0.5 for s in timed_out)
    after = [s for s in sent if s.started > hang.done_at + 1.5]
    assert after
    assert all(s.backend == "mock-b" for s in after)
    assert circuit(router, "mock-a") == "open"


def test_overload_sheds_with_503_and_admitted_latency_stays_bounded(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    config = config_for(mocks)
    config["server"] = {
        **config["server"], "max_in_flight": 4, "max_queued": 4, "queue_timeout_ms": 100
    }  # fmt: skip
    router = start_router(config)
    for mock in mocks:
        mock.configure(latency_ms=200)
    sent = run_load(router.url + CHAT_PATH, auth(ACME_KEY), CHAT, concurrency=48, duration=3.0)
    ok = [s for s in sent if s.status == 200]
    shed = [s for s in sent if s.status != 200]
    assert ok
    assert shed
    assert all(s.status == 503 and s.code == "overloaded" and s.retry_after for s in shed)
    # Without the cap, 48 clients on 4 slots would wait ~2.4 s; admitted ones wait
    # at most the queue timeout on top of the backend's 200 ms.
    slow = sorted(ok, key=lambda s: -s.latency)[:8]
    assert max(s.latency for s in ok) < 1.0, [(s.started, s.latency) for s in slow]
    assert len(ok) <= 4 * 3.0 / 0.2 + 4


def test_retry_budget_caps_the_extra_load_of_retries(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    # Neither breaker nor probes (the mock fails those too) may take a backend out.
    config = config_for(
        mocks, failure_threshold=1_000_000, min_requests=1_000_000, probe_interval_s=3600
    )
    config["routing"] = {"max_attempts": 2, "retry_budget_ratio": 0.2, "retry_min_per_s": 0}
    router = start_router(config)
    for mock in mocks:
        mock.configure(error_rate=1.0, error_status=500)
        mock.reset_stats()
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.post(router.url + CHAT_PATH, json=CHAT, headers=auth(ACME_KEY)).status_code
            for _ in range(100)
        ]
    assert set(statuses) == {502}, statuses
    # Each request deposits 0.2 of a retry: 100 requests buy 20 retries, not 100.
    hits = served(mocks)
    assert 100 < sum(hits) <= 120, hits


def test_hedged_request_takes_the_faster_answer(mocks: Mocks, start_router: RouterFactory) -> None:
    config = config_for(mocks)
    config["models"]["chat"]["hedge_after_ms"] = 100
    router = start_router(config)
    mocks[0].configure(latency_ms=1500)
    with httpx.Client(timeout=10) as client:
        answers = [
            client.post(router.url + CHAT_PATH, json=CHAT, headers=auth(ACME_KEY))
            for _ in range(20)
        ]
    assert all(a.status_code == 200 for a in answers)
    # Whichever backend came first, mock-b answered: directly, or as the hedge.
    assert {a.headers["x-router-backend"] for a in answers} == {"mock-b"}
    status = httpx.get(router.url + "/v1/status").json()
    assert status["retries"]["hedges"] == served(mocks)[0] > 0
