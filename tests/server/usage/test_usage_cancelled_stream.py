"""A client that goes away mid-stream is recorded as cancelled, with what it got."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import auth, eventually, with_changes
from tests.helpers.usage_support import ledger_rows, schema_errors

Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def test_a_client_that_leaves_mid_stream_is_recorded_as_cancelled(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    data = with_changes(config_data, state={"dir": str(tmp_path / "u")})
    router: RouterProcess = start_router(data)
    for mock in mocks:
        mock.configure(chunk_delay_ms=200)
    body = {**CHAT, "stream": True, "max_tokens": 50}
    headers = {**auth(), "x-request-id": "req-gone"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", router.url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        next(r.iter_bytes())  # the first event, then hang up

    def gone() -> list[dict[str, Any]]:
        return [x for x in ledger_rows(tmp_path / "u") if x["request_id"] == "req-gone"]

    assert eventually(lambda: bool(gone()))
    [record] = gone()
    assert schema_errors(record) == []
    assert record["outcome"] == "client_cancelled"
    assert record["status"] == 499
    assert record["ttft_ms"] is not None
    assert record["usage"]["estimated"] is True
    assert 1 <= record["usage"]["completion_tokens"] < 50
