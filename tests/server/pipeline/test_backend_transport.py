"""`create_app(backend_transport=...)`: every backend call goes through the given
transport (probes and forwarding, before and after a reload), and the caller
keeps it: the app never closes it.

The backends' URLs name hosts that do not resolve (`.test`, RFC 6761), so a
call that bypassed the transport could not be answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server import config_file
from router_server.app import create_app
from router_server.mock_backend.payloads import completion_text
from router_server.pipeline import RouterState

from tests.helpers.in_process_backend import InProcessBackend, InProcessBackends
from tests.helpers.support import (
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    CHAT,
    auth,
    base_config,
    eventually,
    with_changes,
    with_data_dir,
    write_config,
)

ENV = {BACKEND_SECRET_ENV: BACKEND_SECRET}


class Kept(httpx.AsyncBaseTransport):
    """The in-process backends' transport, counting the calls and any close."""

    def __init__(self, backends: InProcessBackends) -> None:
        self.inner = backends.transport
        self.calls = 0
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed += 1


def backends() -> InProcessBackends:
    return InProcessBackends(
        InProcessBackend("mock-a.test", ["mock-gpt", "mock-embed"]),
        InProcessBackend("mock-b.test", ["mock-gpt", "mock-gpt-b"], api_key=BACKEND_SECRET),
    )


def config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    data = base_config("http://mock-a.test/v1", "http://mock-b.test/v1")
    return with_data_dir(with_changes(data, **sections), tmp_path / "data")


def test_every_backend_call_goes_through_the_given_transport(tmp_path: Path) -> None:
    fake = backends()
    kept = Kept(fake)
    app = create_app(structure(config(tmp_path)), env=ENV, backend_transport=kept)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.post("/v1/chat/completions", headers=auth(), json=CHAT) for _ in "ab"]
        embedded = client.post(
            "/v1/embeddings", headers=auth(), json={"model": "embed", "input": "hello"}
        )
        only_b = client.post(
            "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "b-only"}
        )
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].json()["choices"][0]["message"]["content"] == completion_text(16)
    assert embedded.status_code == 200
    assert len(embedded.json()["data"]) == 1
    # B demands its credential: the router sent it, through the transport.
    assert only_b.status_code == 200, only_b.text
    a, b = (backend.stats() for backend in fake.backends)
    assert a["by_path"]["/v1/models"] >= 1
    assert b["by_path"]["/v1/models"] >= 1
    forwarded = a["by_path"].get("/v1/chat/completions", 0) + b["by_path"]["/v1/chat/completions"]
    assert forwarded == 3
    assert a["by_path"]["/v1/embeddings"] == 1
    assert kept.calls == a["requests"] + b["requests"]
    assert kept.closed == 0  # the caller's to close


def test_a_stream_comes_through_the_transport_event_by_event(tmp_path: Path) -> None:
    fake = backends()
    app = create_app(structure(config(tmp_path)), env=ENV, backend_transport=fake.transport)
    body = {**CHAT, "model": "b-only", "stream": True, "max_tokens": 3}
    with (
        TestClient(app, raise_server_exceptions=False) as client,
        client.stream("POST", "/v1/chat/completions", headers=auth(), json=body) as response,
    ):
        text = "".join(response.iter_text())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert text.count("data: ") == 6
    assert text.endswith("data: [DONE]\n\n")
    assert fake.backends[1].stats()["streams"] == 1


def test_a_reload_builds_its_new_clients_on_the_same_transport(tmp_path: Path) -> None:
    fake = backends()
    kept = Kept(fake)
    data = config(tmp_path, server={"request_timeout_s": 10, "config_watch_s": 0.05})
    path = write_config(tmp_path / "router.yaml", data)
    states: list[RouterState] = []
    app = create_app(
        config_file.load(path, ENV),
        env=ENV,
        config_path=path,
        state_ready=states.append,
        backend_transport=kept,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        (state,) = states
        before = state.backends["mock-b"]
        # A changed backend gets a new client; the old one is retired and closed.
        changed = {**data["backends"]["mock-b"], "read_timeout_s": 7}
        write_config(path, with_changes(data, backends={"mock-b": changed}))
        assert eventually(lambda: state.backends["mock-b"] is not before)
        assert state.backends["mock-b"].settings.read_timeout_s == 7
        served = client.post(
            "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "b-only"}
        )
        assert eventually(lambda: before.client.is_closed)
    assert served.status_code == 200, served.text
    assert fake.backends[1].stats()["by_path"]["/v1/chat/completions"] == 1
    assert kept.closed == 0
