"""The circuit breaker against real mock backends over HTTP: noise at volume keeps
circuits closed, and a hung backend is tried by probes, never by client requests."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.router_fixture import RouterFactory
from tests.helpers.support import ACME_KEY, CHAT, auth, base_config, eventually
from tests.helpers.traffic import run_load

Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHAT_PATH = "/v1/chat/completions"
B_ONLY = {**CHAT, "model": "b-only"}  # served by mock-b alone


def backend_status(router: RouterProcess, backend: str) -> dict[str, Any]:
    status = httpx.get(router.url + "/v1/status", timeout=5).json()
    found: dict[str, Any] = status["backends"][backend]
    return found


def client_requests(mock: MockBackendProcess) -> int:
    """Requests the mock received from clients: all of them but the router's probes."""
    stats = mock.stats()
    return int(stats["requests"] - stats["probes"])


def config_for(mocks: Mocks, **health: Any) -> dict[str, Any]:
    config = base_config(mocks[0].url, mocks[1].url)
    # No active probe after the one at start: the mock fails listings too when it
    # injects errors, and one failed probe opens a circuit whatever the rate.
    config["health"] = {"probe_interval_s": 3600, "probe_timeout_s": 5, **health}
    return config


def first_streak(seed: int, rate: float, length: int, draws: int) -> int | None:
    """Where the mock backend's error draws for `seed` first fail `length` in a row."""
    rng = random.Random(seed)
    run = 0
    for i in range(draws):
        run = run + 1 if rng.random() < rate else 0
        if run == length:
            return i
    return None


SEED = 348


def test_five_percent_errors_in_a_row_at_volume_keep_the_circuit_closed(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    """The mock's draws for this seed fail three requests in a row (the old
    breaker's threshold) at its 50th request: at that volume only the rate counts."""
    streak_at = first_streak(SEED, 0.05, 3, 400)
    assert streak_at is not None
    assert 20 <= streak_at < 100
    router = start_router(config_for(mocks))
    mock_b = mocks[1]
    mock_b.configure(error_rate=0.05, error_status=500, seed=SEED)
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.post(router.url + CHAT_PATH, json=B_ONLY, headers=auth(ACME_KEY)).status_code
            for _ in range(streak_at + 20)
        ]
    injected = mock_b.stats()["injected_errors"]
    assert injected >= 3
    # Each injected error is its request's 502 (b-only has no other backend); none
    # was refused for an open circuit.
    assert statuses.count(502) == injected
    assert set(statuses) == {200, 502}
    health = backend_status(router, "mock-b")
    assert health["circuit"] == "closed"
    assert health["trial_probes"] == 0
    window = health["window"]
    assert window["failures"] <= injected
    assert window["failure_rate"] is not None
    assert window["failure_rate"] < 0.5


@pytest.mark.exclusive
def test_five_percent_errors_under_load_open_neither_circuit(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    """The issue's case: both backends erring 5% of the time under load. The old
    breaker opened both circuits and answered 503 no_backend_available."""
    router = start_router(config_for(mocks))
    # Volume first, so that the window is past min_requests when errors begin.
    warm = run_load(router.url + CHAT_PATH, auth(ACME_KEY), CHAT, concurrency=8, duration=0.5)
    assert {s.status for s in warm} == {200}
    for seed, mock in enumerate(mocks, SEED):
        mock.configure(error_rate=0.05, error_status=500, seed=seed)
    sent = run_load(router.url + CHAT_PATH, auth(ACME_KEY), CHAT, concurrency=8, duration=3.0)
    injected = sum(mock.stats()["injected_errors"] for mock in mocks)
    assert injected > 0
    refused = [s for s in sent if s.status == 503]
    assert not refused, refused[:5]
    for name in ("mock-a", "mock-b"):
        health = backend_status(router, name)
        assert health["circuit"] == "closed", (name, health)
        assert health["window"]["requests"] >= 20


def test_a_hung_backend_gets_trial_probes_not_client_requests_and_recovers(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    config = config_for(mocks, failure_threshold=1, open_s=0.5, probe_timeout_s=0.5)
    config["backends"]["mock-b"]["read_timeout_s"] = 0.5
    router = start_router(config)
    mock_b = mocks[1]
    mock_b.configure(hang=True)

    def post() -> httpx.Response:
        return httpx.post(router.url + CHAT_PATH, json=B_ONLY, headers=auth(ACME_KEY), timeout=10)

    # The request caught by the hang times out, and (at low volume, threshold 1)
    # opens the circuit.
    caught = post()
    assert (caught.status_code, caught.json()["error"]["code"]) == (504, "backend_timeout")
    assert backend_status(router, "mock-b")["circuit"] in ("open", "half_open")
    reached = client_requests(mock_b)
    assert reached == 1

    # While it hangs, clients are refused and trial probes time out, one after another.
    answers: list[httpx.Response] = []

    def tried_three_times() -> bool:
        answers.append(post())
        return bool(backend_status(router, "mock-b")["trial_probes"] >= 3)

    assert eventually(tried_three_times, timeout=60, step=0.05)
    assert answers
    assert {(a.status_code, a.json()["error"]["code"]) for a in answers} == {
        (503, "no_backend_available")
    }
    # Not one of those client requests reached the backend; the trials did.
    assert client_requests(mock_b) == reached
    assert mock_b.stats()["probes"] >= 3
    health = backend_status(router, "mock-b")
    assert health["last_trial_ok"] is False
    assert health["last_failure"].startswith("trial probe")

    # It answers again: the next trial probe closes the circuit.
    mock_b.configure(hang=None)
    assert eventually(lambda: backend_status(router, "mock-b")["circuit"] == "closed", timeout=60)
    assert backend_status(router, "mock-b")["last_trial_ok"] is True
    assert client_requests(mock_b) == reached
    served = post()
    assert served.status_code == 200
    assert client_requests(mock_b) == reached + 1
