"""One usage record per authenticated request, for every outcome, valid against the schema."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import ACME_KEY, CHAT, auth, with_changes
from tests.helpers.usage_support import schema_errors, wait_ledger

Mocks = tuple[Backend, Backend]


def app(make_client: Any, config: dict[str, Any], tmp_path: Path, **changes: Any) -> TestClient:
    data = with_changes(config, state={"dir": str(tmp_path / "usage")}, **changes)
    client: TestClient = make_client(data)
    return client


def post(client: TestClient, request_id: str, body: Any = CHAT, key: bool = True) -> Any:
    headers = {**(auth() if key else {}), "x-request-id": request_id}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def stream(client: TestClient, request_id: str, body: Any) -> str:
    headers = {**auth(), "x-request-id": request_id}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        return "".join(response.iter_text())


def only(records: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [r for r in records if r["request_id"] == request_id]
    assert len(found) == 1, found
    assert schema_errors(found[0]) == []
    return found[0]


@pytest.mark.backends_in_process
def test_success_carries_the_backends_usage_and_the_price(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    client = app(make_client, config_data, tmp_path, prices={"chat": {"input": 1.5, "output": 2}})
    response = client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(), "x-request-id": "req-ok"}
    )
    assert response.status_code == 200
    usage = response.json()["usage"]
    record = only(wait_ledger(tmp_path / "usage", 1), "req-ok")
    assert record["outcome"] == "success"
    assert record["status"] == 200
    assert record["organization"] == "acme"
    assert record["key_id"] == "acme1"
    assert record["model"] == "chat"
    assert record["backend"] == response.headers["x-router-backend"]
    assert record["backend_model"] == "mock-gpt"
    assert record["usage"]["prompt_tokens"] == usage["prompt_tokens"] > 0
    assert record["usage"]["completion_tokens"] == usage["completion_tokens"] > 0
    assert record["usage"]["estimated"] is False
    expected = usage["prompt_tokens"] * 1500 + usage["completion_tokens"] * 2000
    assert record["cost_usd"] == f"{expected / 1e9:.9f}"
    assert record["ttft_ms"] is None
    assert ACME_KEY not in str(record)


@pytest.mark.backends_in_process
def test_denials_errors_and_the_unauthenticated(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    limits = {"limits": {"requests": {"rate": 1, "per": "minute"}}}
    orgs = config_data["organizations"]
    client = app(
        make_client, config_data, tmp_path,
        organizations={**orgs, "acme": {**orgs["acme"], **limits}},
    )  # fmt: skip
    ids = {}
    for name in ("first", "limited", "invalid", "nokey"):
        ids[name] = f"req-{name}"
    assert post(client, ids["first"]).status_code == 200
    assert post(client, ids["limited"]).status_code == 429
    assert post(client, ids["invalid"], {"model": "chat"}).status_code == 422
    assert post(client, ids["nokey"], key=False).status_code == 401
    records = wait_ledger(tmp_path / "usage", 3)
    assert only(records, ids["limited"])["outcome"] == "denied"
    assert only(records, ids["limited"])["reason"] == "rate_limit_exceeded"
    assert only(records, ids["invalid"])["reason"] == "validation_failed"
    assert only(records, ids["invalid"])["model"] is None
    assert not [r for r in records if r["request_id"] == ids["nokey"]]
    audit = wait_ledger(tmp_path / "usage", 1, table="audit_records")
    assert len(audit) == 1
    assert schema_errors(audit[0]) == []
    assert audit[0]["event"] == "limit_denied"
    assert audit[0]["request_id"] == ids["limited"]
    assert audit[0]["detail"]["limit_type"] == "rate_limit"


@pytest.mark.backends_in_process
def test_backend_errors_are_recorded_as_such(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    # No probe meanwhile: the injected errors would fail it too and open the
    # circuits, and the answer would be 503 no_backend_available, not this 502.
    client = app(make_client, config_data, tmp_path, health={"probe_interval_s": 600})
    for mock in mocks:
        mock.configure(error_rate=1.0, error_status=503)
    response = post(client, "req-502")
    assert response.status_code == 502
    record = only(wait_ledger(tmp_path / "usage", 1), "req-502")
    assert record["outcome"] == "backend_error"
    assert record["reason"] == "backend_error"
    assert record["usage"]["total_tokens"] == 0


def test_streams_record_ttft_and_the_usage_the_router_asked_for(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    client = app(make_client, config_data, tmp_path)
    body = {**CHAT, "stream": True, "max_tokens": 5}
    text = stream(client, "req-s", body)
    assert '"usage": {' not in text.replace('"usage":null', "")  # the client did not ask
    for mock in mocks:
        mock.configure(truncate_after=2)
    broken = stream(client, "req-t", body)
    assert "backend_error" in broken
    records = wait_ledger(tmp_path / "usage", 2)
    ok = only(records, "req-s")
    assert ok["outcome"] == "success"
    assert ok["stream"] is True
    assert ok["ttft_ms"] is not None
    assert 0 < ok["ttft_ms"] <= ok["latency_ms"]
    assert ok["usage"]["completion_tokens"] == 5
    assert ok["usage"]["estimated"] is False
    torn = only(records, "req-t")
    assert torn["outcome"] == "backend_error"
    assert torn["usage"]["estimated"] is True
    # Estimated as a token per relayed event: the role event and two content events.
    assert torn["usage"]["completion_tokens"] == 3


@pytest.mark.backends_in_process
def test_status_shows_the_spool_and_the_ledger(
    make_client: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    client = app(make_client, config_data, tmp_path)
    body = {"request_id": str(uuid.uuid4()), "model": "chat", "payload": {"messages": []}}
    body["payload"] = {"messages": CHAT["messages"]}
    assert client.post("/v1/inference", json=body, headers=auth()).status_code == 200
    wait_ledger(tmp_path / "usage", 1)
    usage = client.get("/v1/status").json()["usage"]
    assert usage["spool"]["accepting"] is True
    assert usage["spool"]["torn_records"] == 0
    assert usage["ledger"]["lag_s"] >= 0
    assert usage["kafka"] is None
    assert usage["idempotency"]["store"] == "embedded"
