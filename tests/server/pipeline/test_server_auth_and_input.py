"""Authentication and input protection: every refusal in the route's envelope,
with the right status, and no backend contacted."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import ACME_KEY, CHAT, GLOBEX_KEY, REVOKED_KEY, auth, with_changes

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def backend_hits(mocks: Mocks) -> int:
    """Inference requests the backends saw (health probes excluded)."""
    return sum(m.stats()["by_path"].get(path, 0) for m in mocks for path in INFERENCE_PATHS)


def inference_body(**overrides: Any) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "model": "chat",
        "payload": {"messages": [{"role": "user", "content": "hi"}]},
        **overrides,
    }


BAD_CREDENTIALS = [
    pytest.param({}, "missing_api_key", id="missing"),
    pytest.param({"authorization": "Bearer not-a-router-key"}, "invalid_api_key", id="malformed"),
    pytest.param({"authorization": "Basic dXNlcjpwYXNz"}, "invalid_api_key", id="basic-scheme"),
    pytest.param({"authorization": "Bearer"}, "invalid_api_key", id="empty-bearer"),
    pytest.param(auth("rk_nobody_" + "A" * 32), "invalid_api_key", id="unknown-id"),
    pytest.param(auth("rk_acme1_" + "B" * 32), "invalid_api_key", id="wrong-secret"),
    pytest.param(auth(REVOKED_KEY), "invalid_api_key", id="revoked"),
    pytest.param({"x-api-key": "rk_acme1_" + "C" * 32}, "invalid_api_key", id="x-api-key-wrong"),
]


@pytest.mark.parametrize(("headers", "code"), BAD_CREDENTIALS)
def test_openai_routes_refuse_bad_credentials(
    client: TestClient, mocks: Mocks, headers: dict[str, str], code: str
) -> None:
    response = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    presented = [v.split()[-1] for v in headers.values() if len(v.split()[-1]) > 8]
    for secret in presented:
        assert secret not in response.text
    assert backend_hits(mocks) == 0


@pytest.mark.parametrize(("headers", "code"), BAD_CREDENTIALS)
def test_inference_refuses_bad_credentials(
    client: TestClient, mocks: Mocks, headers: dict[str, str], code: str
) -> None:
    response = client.post("/v1/inference", json=inference_body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == code.upper()
    assert isinstance(response.json()["error"], str)
    assert backend_hits(mocks) == 0


def test_models_list_needs_a_key_and_is_filtered(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 401
    acme = client.get("/v1/models", headers=auth(ACME_KEY)).json()
    assert [m["id"] for m in acme["data"]] == ["b-only", "chat", "embed"]
    globex = client.get("/v1/models", headers={"x-api-key": GLOBEX_KEY}).json()
    assert [m["id"] for m in globex["data"]] == ["chat"]


def test_both_credential_headers_work(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    response = client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": ACME_KEY})
    assert response.status_code == 200


def test_unknown_and_forbidden_models_are_404_naming_allowed_models(
    client: TestClient, mocks: Mocks
) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "b-only, chat, embed" in response.json()["error"]["message"]
    forbidden = client.post(
        "/v1/embeddings", json={"model": "embed", "input": "x"}, headers=auth(GLOBEX_KEY)
    )
    assert forbidden.status_code == 404
    assert "Models available to you: chat." in forbidden.json()["error"]["message"]
    assert backend_hits(mocks) == 0


def test_malformed_json_says_where(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=b'{"model": "chat",\n "messages": [}',
        headers={**auth(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert "line 2 column" in response.json()["error"]["message"]


def test_validation_lists_field_paths(client: TestClient, mocks: Mocks) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": [{"content": "x"}], "max_tokens": -1},
        headers=auth(),
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "messages[0].role"
    assert [e["path"] for e in error["errors"]] == ["messages[0].role", "max_tokens"]
    seed = client.post("/v1/inference", json={"model": "chat", "payload": {}}, headers=auth())
    assert seed.status_code == 422
    assert seed.json()["code"] == "VALIDATION_FAILED"
    assert [e["path"] for e in seed.json()["errors"]] == ["request_id", "payload.messages"]
    assert backend_hits(mocks) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client: TestClient, content_type: str) -> None:
    headers = {**auth(), "content-type": content_type}
    response = client.post("/v1/chat/completions", content=b"{}", headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_body_size_limit(make_client: Any, config_data: dict[str, Any], mocks: Mocks) -> None:
    client = make_client(with_changes(config_data, server={"max_body_bytes": 2048}))
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    declared = client.post("/v1/chat/completions", json=big, headers=auth())
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Any:  # no Content-Length: the limit applies while reading
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}]}'

    streamed = client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={**auth(), "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    small = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert small.status_code == 200
    assert backend_hits(mocks) == 1


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "urn:router:problem:not_found"
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    given = client.get("/v1/status/healthz", headers={"x-request-id": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    minted = client.post("/v1/chat/completions", json=CHAT)
    assert uuid.UUID(minted.headers["x-request-id"])
    hostile = client.get("/v1/status/healthz", headers={"x-request-id": "a b\tc"})
    assert hostile.headers["x-request-id"] != "a b\tc"
