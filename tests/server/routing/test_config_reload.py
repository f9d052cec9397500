"""Config reload on a real router process: on change, on SIGHUP, refusing a bad
file, and never dropping a request in flight."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from router_core.accounting.wire import parse_usd
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, CHAT, auth, base_config, eventually, write_config
from tests.helpers.usage_support import ledger_rows

Mocks = tuple[MockBackendProcess, MockBackendProcess]
RouterFactory = Callable[[dict[str, Any]], RouterProcess]


def config_status(router: RouterProcess) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(router.url + "/v1/status", timeout=2).json()["config"]
    return status


def only_b(config: dict[str, Any]) -> dict[str, Any]:
    config["models"]["chat"]["backends"] = [{"backend": "mock-b", "model": "mock-gpt"}]
    return config


def backends_of(router: RouterProcess, n: int) -> set[str]:
    with httpx.Client(timeout=10) as client:
        return {
            client.post(
                router.url + "/v1/chat/completions", json=CHAT, headers=auth(ACME_KEY)
            ).headers.get("x-router-backend", "none")
            for _ in range(n)
        }


def config_path(router: RouterProcess) -> Path:
    return Path(router.config_path)


def test_a_changed_file_is_picked_up(mocks: Mocks, start_router: RouterFactory) -> None:
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 0.2
    router = start_router(config)
    assert backends_of(router, 30) == {"mock-a", "mock-b"}
    write_config(config_path(router), only_b(config))
    assert eventually(lambda: config_status(router)["reloads"] == 1)
    assert backends_of(router, 30) == {"mock-b"}


def test_an_invalid_file_is_refused_and_the_old_config_stays(
    mocks: Mocks, start_router: RouterFactory, tmp_path: Path
) -> None:
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 0.2
    router = start_router(config)
    broken = only_b(base_config(mocks[0].url, mocks[1].url))
    broken["models"]["chat"]["backends"][0]["weight"] = -1
    write_config(config_path(router), broken)
    assert eventually(lambda: config_status(router)["rejected"] == 1)
    status = config_status(router)
    assert status["reloads"] == 0
    assert status["last_error"] == ["models.chat.backends[0].weight: must be > 0"]
    assert backends_of(router, 30) == {"mock-a", "mock-b"}
    log = (tmp_path / "router-0.log").read_text()
    assert "config reload refused" in log
    assert "Traceback" not in log


def test_sighup_reloads_at_once(mocks: Mocks, start_router: RouterFactory) -> None:
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 3600  # only the signal can trigger it
    router = start_router(config)
    write_config(config_path(router), only_b(config))
    assert router.pid is not None
    os.kill(router.pid, signal.SIGHUP)
    assert eventually(lambda: config_status(router)["reloads"] == 1, timeout=3)
    assert backends_of(router, 20) == {"mock-b"}


def test_a_stream_in_flight_survives_a_reload_that_replaces_its_backend(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 0.2
    config["models"]["chat"]["backends"] = [{"backend": "mock-a", "model": "mock-gpt"}]
    router = start_router(config)
    mocks[0].configure(chunk_delay_ms=100)
    events: list[str] = []

    def stream() -> None:
        body = {**CHAT, "stream": True, "max_tokens": 20}
        with httpx.stream(
            "POST", router.url + "/v1/chat/completions", json=body, headers=auth(), timeout=30
        ) as response:
            events.extend(line for line in response.iter_lines() if line)

    reader = threading.Thread(target=stream)
    reader.start()
    assert eventually(lambda: bool(events), timeout=5)
    # A new timeout for mock-a means a new client for it; the old one must live on.
    config["backends"]["mock-a"]["read_timeout_s"] = 7
    write_config(config_path(router), config)
    assert eventually(lambda: config_status(router)["reloads"] == 1)
    assert reader.is_alive()  # the reload happened mid-stream
    reader.join(timeout=30)
    assert events[-1] == "data: [DONE]"
    assert not any('"error"' in e for e in events)
    assert backends_of(router, 5) == {"mock-a"}


def usage_records(router: RouterProcess, count: int) -> list[dict[str, Any]]:
    """The router's ledger once it holds `count` usage records."""
    ledger = Path(router.config_path).with_name(Path(router.config_path).stem + "-data")
    rows: list[dict[str, Any]] = []

    def enough() -> bool:
        rows[:] = ledger_rows(ledger)
        return len(rows) >= count

    assert eventually(enough, timeout=10), rows
    return rows


def cost_at(record: dict[str, Any], input_usd: int, output_usd: int) -> int:
    """The record's cost in nano-USD at these prices (USD per 1M tokens: 1000 nano a token)."""
    prompt: int = record["usage"]["prompt_tokens"]
    completion: int = record["usage"]["completion_tokens"]
    return 1000 * (input_usd * prompt + output_usd * completion)


def test_usage_is_priced_by_the_config_its_request_was_accepted_under(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    """A reload changing `prices` prices the requests accepted after it; a stream
    accepted before it and finishing after is still priced at the old prices."""
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 3600  # reloaded by the signal, at a known point
    config["models"]["chat"]["backends"] = [{"backend": "mock-a", "model": "mock-gpt"}]
    config["prices"] = {"chat": {"input": 1, "output": 2}}
    router = start_router(config)
    mocks[0].configure(chunk_delay_ms=200)
    events: list[str] = []

    def stream() -> None:
        body = {**CHAT, "stream": True, "max_tokens": 20}
        with httpx.stream(
            "POST", router.url + "/v1/chat/completions", json=body, headers=auth(), timeout=30
        ) as response:
            events.extend(line for line in response.iter_lines() if line)

    reader = threading.Thread(target=stream)
    reader.start()
    assert eventually(lambda: bool(events), timeout=5)
    config["prices"] = {"chat": {"input": 10, "output": 20}}
    write_config(config_path(router), config)
    assert router.pid is not None
    os.kill(router.pid, signal.SIGHUP)
    assert eventually(lambda: config_status(router)["reloads"] == 1, timeout=3)
    assert reader.is_alive()  # the stream was accepted before the reload, and is still going
    answer = httpx.post(router.url + "/v1/chat/completions", json=CHAT, headers=auth(), timeout=10)
    assert answer.status_code == 200
    reader.join(timeout=30)
    assert events[-1] == "data: [DONE]"

    records = usage_records(router, 2)
    (streamed,) = [r for r in records if r["stream"]]
    (after,) = [r for r in records if not r["stream"]]
    assert parse_usd(after["cost_usd"]) == cost_at(after, 10, 20)
    assert parse_usd(streamed["cost_usd"]) == cost_at(streamed, 1, 2)


def test_a_reload_reaches_the_idempotency_settings(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    """The usage sink kept its own copy of the config, so a reload never
    reached `idempotency.*`; it now reads each request's snapshot."""
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 3600
    router = start_router(config)
    config["idempotency"] = {"max_body_bytes": 16}  # no answer is that small: none is kept
    write_config(config_path(router), config)
    assert router.pid is not None
    os.kill(router.pid, signal.SIGHUP)
    assert eventually(lambda: config_status(router)["reloads"] == 1, timeout=3)
    headers = {**auth(), "idempotency-key": "reload-reaches-idempotency"}
    with httpx.Client(timeout=10) as client:
        first = client.post(router.url + "/v1/chat/completions", json=CHAT, headers=headers)
        again = client.post(router.url + "/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in again.headers  # served again, not replayed


def test_a_reload_reaches_the_breakers_and_the_retry_budget(
    mocks: Mocks, start_router: RouterFactory
) -> None:
    """Breakers and the retry budget read the running config: a reload that lowers
    `health.failure_threshold` and raises `routing.retry_budget_ratio` changes what
    the next failed request does, with no copy of either patched on reload."""
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"]["config_watch_s"] = 3600  # reloaded by the signal, at a known point
    # No probe after the first (the mocks fail those too), and a circuit stays open.
    config["health"] = {"probe_interval_s": 3600, "failure_threshold": 1_000_000, "open_s": 3600}
    config["routing"] = {"max_attempts": 2, "retry_budget_ratio": 0, "retry_min_per_s": 0}
    # mock-a is always tried first, mock-b only as a retry.
    config["models"]["chat"]["backends"] = [
        {"backend": "mock-a", "model": "mock-gpt", "tier": 0},
        {"backend": "mock-b", "model": "mock-gpt", "tier": 1},
    ]
    router = start_router(config)
    for mock in mocks:
        mock.configure(error_rate=1.0, error_status=500)

    def post() -> int:
        answer = httpx.post(router.url + "/v1/chat/completions", json=CHAT, headers=auth())
        return answer.status_code

    def status() -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(router.url + "/v1/status", timeout=2).json()
        return found

    assert [post() for _ in range(3)] == [502] * 3
    before = status()
    assert before["retries"] == {"retries": 0, "refused_by_budget": 3, "hedges": 0}
    assert before["backends"]["mock-a"]["circuit"] == "closed"

    config["health"]["failure_threshold"] = 1
    config["routing"]["retry_budget_ratio"] = 1.0
    write_config(config_path(router), config)
    assert router.pid is not None
    os.kill(router.pid, signal.SIGHUP)
    assert eventually(lambda: config_status(router)["reloads"] == 1, timeout=3)

    # One request: mock-a fails and opens (threshold 1); the retry it now earns
    # goes to mock-b, which fails and opens too.
    assert post() == 502
    after = status()
    assert after["retries"] == {"retries": 1, "refused_by_budget": 3, "hedges": 0}
    assert after["backends"]["mock-a"]["circuit"] == "open"
    assert after["backends"]["mock-b"]["circuit"] == "open"
