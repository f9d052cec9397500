"""The router's own log: one structured line per request, and never a secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from router_server.mock_backend import MockBackendProcess

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, CHAT, REVOKED_KEY, auth

Mocks = tuple[MockBackendProcess, MockBackendProcess]


def test_access_log_lines_carry_ids_but_no_secret(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    router = start_router(config_data)
    wrong = "rk_acme1_" + "W" * 32
    with httpx.Client(base_url=router.url, timeout=10) as client:
        ok = client.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())
        assert ok.status_code == 200
        for key in (wrong, REVOKED_KEY):
            assert (
                client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 401
            )
        assert (
            client.post(
                "/v1/chat/completions", json=CHAT, headers={"x-api-key": ACME_KEY}
            ).status_code
            == 200
        )
    router.stop()
    text = (tmp_path / "router-0.log").read_text()
    for secret in (ACME_KEY, wrong, REVOKED_KEY, BACKEND_SECRET, "A" * 32, "W" * 32):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    served = [
        line for line in lines if line["logger"] == "router.access" and line.get("status") == 200
    ]
    assert len(served) == 2
    assert served[0]["request_id"] == ok.headers["x-request-id"]
    assert served[0]["key_id"] == "acme1"
    assert served[0]["organization"] == "acme"
    assert served[0]["backend"] == "mock-b"
    refused = [line for line in lines if line.get("status") == 401]
    assert [line["code"] for line in refused] == ["invalid_api_key", "invalid_api_key"]
