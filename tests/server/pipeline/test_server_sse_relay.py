"""The SSE relay reads any line ending the SSE spec allows, however the backend's
chunks split it, and answers in LF."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from router_server.mock_backend import MockBackendProcess

from tests.helpers.support import ACME_KEY, CHAT, auth, with_changes

Mocks = tuple[MockBackendProcess, MockBackendProcess]


def streamed(url: str, body: dict[str, Any]) -> bytes:
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=auth(ACME_KEY), timeout=10
    ) as response:
        assert response.status_code == 200
        return response.read()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_line_ends_split_across_backend_chunks(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, transport: str
) -> None:
    router = start_router(with_changes(config_data, server={"transport": transport}))
    for line_ending in ("crlf", "cr", "lf"):
        # Each event in two chunks, the second its last byte: with CRLF, the
        # CR of the empty line that ends the event in one chunk, its LF in the
        # next. The delay keeps the pieces apart even for a reader that
        # coalesces what has arrived (aiohttp's).
        for mock in mocks:
            mock.configure(line_ending=line_ending, split_tail_bytes=1, chunk_delay_ms=10)
        body = {**CHAT, "stream": True, "max_tokens": 4}
        answer = streamed(router.url, body)
        assert b"\r" not in answer, line_ending
        events = answer.split(b"\n\n")
        assert events[-2:] == [b"data: [DONE]", b""], line_ending
        chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
        assert not any("error" in c for c in chunks), (line_ending, chunks)
        assert all(c["model"] == "chat" for c in chunks)
        # The router asked for usage itself; the client, who did not, gets none.
        assert all(c["choices"] for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == "mock token alpha beta", line_ending
