"""least_load through the app and real mock backends over HTTP: the router's own
counts (requests and outstanding tokens, exact under concurrency, released on
every way out) and the backends' own load, read from their vLLM-style /metrics
(fresh, stale, hanging, too large, garbage)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from router_core.config_enums import LoadMetricsFormat
from router_core.limits.plan import outstanding_tokens
from router_core.load_metrics import LoadSample, parse
from router_core.requests import Operation, validate_openai
from router_server.mock_backend import MockBackendProcess

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import ACME_KEY, CHAT, auth, eventually

Mocks = tuple[Backend, Backend]
AppFactory = Callable[[dict[str, Any]], TestClient]

# Slow enough that every request of a test is in flight at once, even on a
# loaded machine; the tests wait for the counts, never for a time.
SLOW_MS = 4000


def backends(client: TestClient) -> dict[str, Any]:
    status: dict[str, Any] = client.get("/v1/status").json()["backends"]
    return status


def used(client: TestClient, n: int, body: dict[str, Any] | None = None) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        response = client.post("/v1/chat/completions", json=body or CHAT, headers=auth())
        assert response.status_code == 200, response.text
        counts[response.headers["x-router-backend"]] += 1
    return counts


def in_background(calls: list[Callable[[], object]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    return threads


def least_load(config: dict[str, Any], **backend_settings: Any) -> dict[str, Any]:
    config["models"]["chat"]["strategy"] = "least_load"
    config["server"]["request_timeout_s"] = 30
    for name in ("mock-a", "mock-b"):
        config["backends"][name]["read_timeout_s"] = 20
        config["backends"][name].update(backend_settings)
    return config


def test_outstanding_tokens_count_every_request_in_flight_and_none_after(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """16 slow requests held at once: the view shows N and the sum of their
    tokens (prompt bound + max_tokens), streamed or not, and 0 once they end."""
    client = make_client(least_load(config_data))
    for mock in mocks:
        mock.configure(latency_ms=SLOW_MS)
    bodies = [{**CHAT, "max_tokens": 10 + i, "stream": i % 2 == 1} for i in range(16)]
    expected = sum(
        outstanding_tokens(validate_openai(Operation.CHAT, body), 4096) for body in bodies
    )
    codes: list[int] = []

    def send(body: dict[str, Any]) -> Callable[[], None]:
        return lambda: codes.append(
            client.post("/v1/chat/completions", json=body, headers=auth()).status_code
        )

    threads = in_background([send(body) for body in bodies])

    def totals() -> tuple[int, int]:
        status = backends(client)
        return (
            sum(b["in_flight"] for b in status.values()),
            sum(b["outstanding_tokens"] for b in status.values()),
        )

    assert eventually(lambda: totals() == (16, expected), timeout=SLOW_MS / 1000)
    for thread in threads:
        thread.join()
    assert codes == [200] * 16
    assert totals() == (0, 0)


def test_failed_and_hedged_attempts_give_their_tokens_back(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """Failures (an injected 500 failing over) and a hedge's loser end at zero
    outstanding tokens."""
    config = least_load(config_data)
    config["models"]["chat"]["hedge_after_ms"] = 50
    config["models"]["chat"]["backends"][0]["weight"] = 1000  # mock-a
    client = make_client(config)
    mocks[0].configure(latency_ms=SLOW_MS)
    # Hedged: whichever is tried first, mock-b answers and mock-a's attempt is
    # cancelled; mock-a's weight makes it the first pick (both idle) nearly always.
    assert set(used(client, 4)) == {"mock-b"}
    assert client.get("/v1/status").json()["retries"]["hedges"] > 0
    assert eventually(lambda: backends(client)["mock-a"]["outstanding_tokens"] == 0)
    mocks[0].configure(latency_ms=0, error_rate=1.0)
    assert set(used(client, 6)) == {"mock-b"}  # every mock-a attempt failed over
    assert backends(client)["mock-a"]["failures"] > 0
    assert all(b["in_flight"] == 0 for b in backends(client).values())
    assert all(b["outstanding_tokens"] == 0 for b in backends(client).values())


def test_a_client_gone_mid_stream_gives_its_tokens_back(
    start_router: Callable[..., Any], config_data: dict[str, Any], mocks: Mocks
) -> None:
    """Through a real router process and the openai SDK: a stream the client
    closes after its first chunk held tokens, and gives them all back."""
    router = start_router(least_load(config_data))
    mocks[1].configure(chunk_delay_ms=300)

    def outstanding() -> int:
        status = httpx.get(router.url + "/v1/status").json()["backends"]
        return int(status["mock-b"]["outstanding_tokens"])

    sdk = openai.OpenAI(api_key=ACME_KEY, base_url=router.url + "/v1", max_retries=0)
    with sdk.chat.completions.create(
        model="b-only", messages=[{"role": "user", "content": "hello"}], stream=True, max_tokens=50
    ) as stream:
        next(iter(stream))
        assert outstanding() > 50
    assert eventually(lambda: outstanding() == 0)
    sdk.close()


def test_least_load_sends_to_the_idle_backend_while_the_other_is_loaded(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    client = make_client(least_load(config_data, max_in_flight=8))
    mocks[0].configure(latency_ms=SLOW_MS)
    embed = {"model": "embed", "input": "x"}  # mock-a only
    threads = in_background(
        [lambda: client.post("/v1/embeddings", json=embed, headers=auth()) for _ in range(3)]
    )
    assert eventually(lambda: backends(client)["mock-a"]["in_flight"] == 3, SLOW_MS / 1000)
    assert used(client, 20) == {"mock-b": 20}
    for thread in threads:
        thread.join()


def load_metrics(**settings: Any) -> dict[str, Any]:
    return {"format": "vllm", "interval_s": 0.2, "stale_after_s": 2, "timeout_s": 0.2, **settings}


def test_a_backend_whose_metrics_report_full_load_gets_no_traffic(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """mock-a says it is full (running = its max_in_flight): while that
    reading is fresh, least_load sends everything to mock-b; once it says it
    is idle again, both get traffic. The router's /metrics shows the readings."""
    config = least_load(config_data, max_in_flight=4, load_metrics=load_metrics())
    client = make_client(config)
    mocks[0].configure(metrics="fixed", metrics_running=4, metrics_cache_usage=0.5)
    assert eventually(lambda: backends(client)["mock-a"].get("reported_load") == 1.0)
    assert used(client, 20) == {"mock-b": 20}
    page = client.get("/metrics").text
    assert 'router_backend_reported_load{backend="mock-a"} 1.0' in page
    assert 'router_backend_load_metric{backend="mock-a",metric="cache_usage"} 0.5' in page
    mocks[0].configure(metrics="live", metrics_cache_usage=0)
    assert eventually(lambda: backends(client)["mock-a"].get("reported_load") == 0.0)
    assert set(used(client, 40)) == {"mock-a", "mock-b"}


def test_live_metrics_report_the_backends_real_queue(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """The mock's /metrics counts the requests it is answering: three slow
    ones on mock-a read back as running = 3 through the router's scraper."""
    config = least_load(config_data, max_in_flight=8, load_metrics=load_metrics())
    client = make_client(config)
    mocks[0].configure(latency_ms=SLOW_MS)
    embed = {"model": "embed", "input": "x"}
    threads = in_background(
        [lambda: client.post("/v1/embeddings", json=embed, headers=auth()) for _ in range(3)]
    )
    assert eventually(
        lambda: backends(client)["mock-a"]["load_metrics"]["running"] == 3, SLOW_MS / 1000
    )
    assert backends(client)["mock-a"]["reported_load"] == pytest.approx(3 / 8)
    for thread in threads:
        thread.join()


@pytest.mark.parametrize(
    ("knobs", "settings", "reason"),
    [
        ({"metrics": "hang"}, {}, "timeout"),
        ({"metrics": "garbage"}, {}, "unreadable"),
        ({"metrics_pad_bytes": 20_000}, {"max_bytes": 10_000}, "too_large"),
    ],
)
def test_unusable_metrics_fall_back_to_the_routers_own_counts(
    make_client: AppFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    knobs: dict[str, Any],
    settings: dict[str, Any],
    reason: str,
) -> None:
    """A hanging, garbled or oversized metrics page is counted as a failed
    read by reason, gives no reported load, and requests keep being answered
    by both backends meanwhile (the reads are off the request path)."""
    config = least_load(config_data, load_metrics=load_metrics(stale_after_s=1, **settings))
    client = make_client(config)
    mocks[0].configure(**knobs)
    assert eventually(
        lambda: backends(client)["mock-a"]["load_metrics"]["failures"].get(reason, 0) >= 2
    )
    # The reading taken before the page went bad is used until it goes stale.
    assert eventually(lambda: backends(client)["mock-a"]["reported_load"] is None)
    assert set(used(client, 40)) == {"mock-a", "mock-b"}
    page = client.get("/metrics").text
    assert f'router_backend_load_scrape_failures_total{{backend="mock-a",reason="{reason}"}}' in (
        page
    )


def test_the_size_bound_admits_a_page_within_it(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """The same large page is read when `max_bytes` is above it."""
    config = least_load(config_data, load_metrics=load_metrics(max_bytes=100_000))
    client = make_client(config)
    mocks[0].configure(metrics_pad_bytes=20_000, metrics="fixed", metrics_running=64)
    assert eventually(lambda: backends(client)["mock-a"].get("reported_load") == 0.25)
    assert not backends(client)["mock-a"]["load_metrics"]["failures"]


def test_a_stale_reading_is_dropped(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """mock-a reports full, then its page hangs: once the last reading is
    older than stale_after_s, routing goes by its own counts and mock-a gets
    traffic again."""
    config = least_load(config_data, max_in_flight=4, load_metrics=load_metrics(stale_after_s=1))
    client = make_client(config)
    mocks[0].configure(metrics="fixed", metrics_running=4)
    assert eventually(lambda: backends(client)["mock-a"].get("reported_load") == 1.0)
    assert used(client, 10) == {"mock-b": 10}
    mocks[0].configure(metrics="hang")
    assert eventually(lambda: backends(client)["mock-a"]["reported_load"] is None)
    assert backends(client)["mock-a"]["load_metrics"]["age_s"] > 1
    assert set(used(client, 40)) == {"mock-a", "mock-b"}


def test_a_reload_starts_and_stops_scraping(
    make_client: AppFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    tmp_path: Any,
    backend_env: dict[str, str],
) -> None:
    """Scrapers follow the running config: none before, one per backend with
    `load_metrics` after a reload adds it, none after it is removed."""
    import yaml

    from router_core.config_codec import structure
    from router_server.app import create_app

    from tests.helpers.support import with_data_dir

    config = with_data_dir(least_load(config_data), tmp_path / "data")
    config["server"]["config_watch_s"] = 0.2
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(structure(config), env=backend_env, config_path=path)
    mock_a = mocks[0]
    assert isinstance(mock_a, MockBackendProcess)
    with TestClient(app) as client:
        reads = mock_a.stats()["metrics_reads"]
        config["backends"]["mock-a"]["load_metrics"] = load_metrics()
        path.write_text(yaml.safe_dump(config))
        assert eventually(lambda: mock_a.stats()["metrics_reads"] >= reads + 3, timeout=10)
        assert eventually(lambda: backends(client)["mock-a"].get("reported_load") == 0.0)
        del config["backends"]["mock-a"]["load_metrics"]
        path.write_text(yaml.safe_dump(config))
        assert eventually(lambda: "load_metrics" not in backends(client)["mock-a"], timeout=10)
        stopped = mock_a.stats()["metrics_reads"]
        # Still stopped a few intervals later (with a scraper, reads would grow by 5 a second).
        assert not eventually(lambda: mock_a.stats()["metrics_reads"] > stopped + 2, timeout=1.5)


def test_the_mock_queues_past_its_running_cap() -> None:
    """Live, the mock reports what it is answering: up to metrics_max_running
    as running, the rest as waiting, as a server at its batch limit would."""
    with MockBackendProcess(["--latency-ms", str(SLOW_MS)]) as mock:
        mock.configure(metrics_max_running=2)
        chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
        threads = in_background(
            [lambda: httpx.post(mock.url + "/chat/completions", json=chat, timeout=30)] * 3
        )

        def sample() -> LoadSample:
            page = httpx.get(mock.url.removesuffix("/v1") + "/metrics").text
            return parse(page, LoadMetricsFormat.VLLM)

        assert eventually(lambda: sample() == LoadSample(2.0, 1.0, 0.0), SLOW_MS / 1000)
        for thread in threads:
            thread.join()
        assert sample() == LoadSample(0.0, 0.0, 0.0)


def test_the_mock_answers_vllm_metrics() -> None:
    """The mock's page is what the parser reads, and its knobs are checked."""
    with MockBackendProcess([]) as mock:
        page = httpx.get(mock.url.removesuffix("/v1") + "/metrics")
        assert page.status_code == 200
        assert "vllm:num_requests_running" in page.text
        with pytest.raises(httpx.HTTPStatusError, match="400 Bad Request"):
            mock.configure(metrics="sometimes")
        mock.configure(metrics="fixed", metrics_running=3, metrics_waiting=2)
        page = httpx.get(mock.url.removesuffix("/v1") + "/metrics")
        sample = parse(page.text, LoadMetricsFormat.VLLM)
        assert (sample.running, sample.waiting) == (3, 2)
