"""The in-process backends answer as the mock backend process does, and tests marked
`backends_in_process` get them through the app fixtures."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from router_server.mock_backend import MockBackendProcess

from tests.helpers.in_process_backend import InProcessBackend, InProcessBackends
from tests.helpers.support import CHAT, auth

Mocks = tuple[Any, Any]

REQUESTS = [
    ("/chat/completions", {"model": "mock-gpt", "messages": [{"role": "user", "content": "a b"}]}),
    ("/completions", {"model": "mock-gpt", "prompt": "one two three", "max_tokens": 5}),
    ("/embeddings", {"model": "mock-embed", "input": ["x", "y z"]}),
    ("/chat/completions", {"model": "mock-gpt", "messages": [], "max_tokens": 2}),
    ("/models", None),
    ("/models/mock-embed", None),
    ("/models/nope", None),
]
STREAM = {
    "model": "mock-gpt",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 3,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def _answer(url: str, path: str, body: Any, transport: httpx.AsyncBaseTransport | None) -> Any:
    async def send() -> tuple[int, Any]:
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            if body is None:
                response = await client.get(url + path)
            else:
                response = await client.post(url + path, json=body)
            return response.status_code, _without_ids(response.content)

    return anyio.run(send)


def _without_ids(content: bytes) -> Any:
    """The answer with what varies between calls (`id`, `created`) taken out."""
    if content.startswith(b"data: "):
        events = [line.removeprefix(b"data: ") for line in content.split(b"\n\n") if line]
        return [_without_ids(event) for event in events]
    if content == b"[DONE]":
        return "[DONE]"
    value = orjson.loads(content)
    if isinstance(value, dict):
        value.pop("id", None)
        value.pop("created", None)
    return value


@pytest.mark.parametrize(("path", "body"), [*REQUESTS, ("/chat/completions", STREAM)])
def test_it_answers_as_the_mock_backend_process(mocks: Mocks, path: str, body: Any) -> None:
    mock_a, _ = mocks  # the process, with its default behaviour
    assert isinstance(mock_a, MockBackendProcess)
    fake = InProcessBackends(InProcessBackend("a.test", ["mock-gpt", "mock-embed"]))
    real = _answer(mock_a.url, path, body, None)
    assert _answer("http://a.test/v1", path, body, fake.transport) == real


def test_knobs_that_act_on_the_wire_are_refused() -> None:
    backend = InProcessBackend("a.test", ["mock-gpt"])
    backend.configure(hang=False, truncate_after=None, line_ending="lf", error_rate=1.0)
    for knob in ({"hang": True}, {"truncate_after": 2}, {"line_ending": "crlf"}):
        with pytest.raises(ValueError, match="act on the wire"):
            backend.configure(**knob)


@pytest.mark.backends_in_process
def test_a_marked_test_is_served_in_process(client: TestClient, mocks: Mocks) -> None:
    mock_a, mock_b = mocks
    assert isinstance(mock_a, InProcessBackend)
    assert isinstance(mock_b, InProcessBackend)
    answers = [client.post("/v1/chat/completions", headers=auth(), json=CHAT) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    forwarded = [m.stats()["by_path"].get("/v1/chat/completions", 0) for m in mocks]
    assert sum(forwarded) == 4
    mock_a.stop()
    mock_b.configure(error_rate=1.0, error_status=503)
    failed = client.post("/v1/chat/completions", headers=auth(), json=CHAT)
    assert failed.status_code == 502, failed.text
    assert mock_b.stats()["injected_errors"] == 1
