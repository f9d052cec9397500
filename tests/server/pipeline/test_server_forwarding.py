"""Forwarding: model rewrite, backend credentials, failover, error mapping, readiness."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.mock_backend import free_port

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import (
    ACME_KEY,
    BACKEND_SECRET,
    CHAT,
    auth,
    eventually,
    with_changes,
    with_data_dir,
)

Mocks = tuple[Backend, Backend]


def chat_hits(mock: Backend) -> int:
    hits: int = mock.stats()["by_path"].get("/v1/chat/completions", 0)
    return hits


@pytest.mark.backends_in_process
def test_public_model_name_is_rewritten_both_ways(client: TestClient, mocks: Mocks) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())
    assert response.status_code == 200
    assert response.json()["model"] == "b-only"
    assert response.headers["x-router-backend"] == "mock-b"
    assert mocks[1].stats()["models_seen"] == {"mock-gpt-b": 1}


def test_backend_gets_its_own_credential_never_the_callers(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    # mock-b answers only to BACKEND_SECRET: success proves the router sent it,
    # and the caller's key (a different value) was not forwarded instead.
    client = make_client(config_data)
    ok = client.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())
    assert ok.status_code == 200
    # Without the credential the backend refuses; the caller sees 502, not 401.
    broken = {
        **config_data,
        "backends": {
            **config_data["backends"],
            "mock-b": {**config_data["backends"]["mock-b"], "api_key_env": "ROUTER_TEST_UNSET"},
        },
    }
    broken = with_data_dir(broken, tmp_path / "broken-data")
    with TestClient(create_app(structure(broken), env={"ROUTER_TEST_UNSET": "wrong"})) as bad:
        refused = bad.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())
    assert refused.status_code == 502
    message = refused.json()["error"]["message"]
    assert "mock-b" in message
    assert "credential" in message
    assert "wrong" not in message
    assert BACKEND_SECRET not in refused.text


@pytest.mark.backends_in_process
def test_failover_to_the_next_backend_on_5xx(client: TestClient, mocks: Mocks) -> None:
    mock_a, mock_b = mocks
    mock_a.configure(error_rate=1.0, error_status=503)
    for _ in range(10):
        response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert response.status_code == 200
        assert response.headers["x-router-backend"] == "mock-b"
    assert chat_hits(mock_b) == 10


def test_failover_when_a_backend_refuses_connections(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    data = with_changes(
        config_data, backends={**config_data["backends"], "dead": {"base_url": dead}}
    )
    data["models"]["chat"]["backends"].insert(0, {"backend": "dead", "weight": 100})
    client = make_client(data)
    for _ in range(5):
        response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert response.status_code == 200
        assert response.headers["x-router-backend"] in {"mock-a", "mock-b"}


@pytest.mark.backends_in_process
def test_all_backends_failing_is_502_naming_them(client: TestClient, mocks: Mocks) -> None:
    for mock in mocks:
        mock.configure(error_rate=1.0, error_status=500)
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "backend_error"
    assert error["type"] == "server_error"
    assert "mock-a" in error["message"]
    assert "mock-b" in error["message"]
    seed = client.post(
        "/v1/inference",
        headers=auth(),
        json={
            "request_id": str(uuid.uuid4()),
            "model": "chat",
            "payload": {"messages": [{"role": "user", "content": "hi"}]},
        },
    )
    assert seed.status_code == 502
    assert seed.json()["code"] == "BACKEND_ERROR"


def test_hung_backend_is_504(make_client: Any, config_data: dict[str, Any], mocks: Mocks) -> None:
    backends = {name: {**b, "read_timeout_s": 0.5} for name, b in config_data["backends"].items()}
    client = make_client(with_changes(config_data, backends=backends))
    mocks[0].configure(hang=True)
    response = client.post("/v1/embeddings", json={"model": "embed", "input": "x"}, headers=auth())
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "backend_timeout"
    assert "mock-a" in response.json()["error"]["message"]


def test_request_timeout_bounds_the_whole_request(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks
) -> None:
    client = make_client(with_changes(config_data, server={"request_timeout_s": 0.3}))
    mocks[0].configure(latency_ms=2000)
    response = client.post("/v1/embeddings", json={"model": "embed", "input": "x"}, headers=auth())
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "request_timeout"


@pytest.mark.backends_in_process
def test_backend_4xx_about_the_request_is_passed_through(client: TestClient, mocks: Mocks) -> None:
    for mock in mocks:
        mock.configure(error_rate=1.0, error_status=400)
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "backend_rejected"
    assert chat_hits(mocks[0]) + chat_hits(mocks[1]) == 1  # no failover on the caller's fault


@pytest.mark.backends_in_process
def test_inference_contract_returns_output_and_usage(client: TestClient) -> None:
    request_id = str(uuid.uuid4())
    response = client.post(
        "/v1/inference",
        headers=auth(),
        json={
            "request_id": request_id,
            "model": "chat",
            "payload": {
                "messages": [{"role": "user", "content": "one two three"}],
                "max_tokens": 4,
            },
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == request_id
    assert body["model"] == "chat"
    assert body["output"]["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4
    assert usage["backend"] == body["backend"] in {"mock-a", "mock-b"}
    assert usage["latency_ms"] > 0


@pytest.mark.backends_in_process
def test_readiness_follows_backend_reachability(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks
) -> None:
    client = make_client(config_data)
    assert client.get("/v1/status/readyz").status_code == 200
    mocks[1].kill()
    # b-only has no other backend; the next probe (0.5 s interval) notices.
    assert eventually(lambda: client.get("/v1/status/readyz").status_code == 503)
    response = client.get("/v1/status/readyz")
    assert response.status_code == 503
    assert response.json()["unserved_models"] == ["b-only"]
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/status/healthz").status_code == 200
    mocks[1].start()
    assert eventually(lambda: client.get("/v1/status/readyz").status_code == 200)


def test_streamed_chat_through_a_real_router(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks
) -> None:
    router = start_router(config_data)
    body = {**CHAT, "stream": True, "max_tokens": 5}
    with httpx.stream(
        "POST", f"{router.url}/v1/chat/completions", json=body, headers=auth(ACME_KEY), timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 6
    assert all('"model":"chat"' in e for e in events[:-1])


def test_broken_stream_ends_with_an_error_event(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks
) -> None:
    router = start_router(config_data)
    for mock in mocks:
        mock.configure(truncate_after=2)
    body = {**CHAT, "stream": True, "max_tokens": 10}
    with httpx.stream(
        "POST", f"{router.url}/v1/chat/completions", json=body, headers=auth(ACME_KEY), timeout=10
    ) as response:
        events = [line for line in response.iter_lines() if line]
    assert "[DONE]" not in events[-1]
    assert '"code":"backend_error"' in events[-1]
    assert sum('"content"' in e for e in events) >= 2


@pytest.mark.parametrize("path", ["/v1/status/healthz", "/openapi.json"])
@pytest.mark.backends_in_process
def test_public_unauthenticated_routes(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200
