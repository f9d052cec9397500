"""Traces: off by default; when on, spans for auth, limits, routing and the backend
call, in the caller's trace, with the context carried to the backend."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from router_server import tracing

from tests.helpers.in_process_backend import Backend
from tests.helpers.router_fixture import AppFactory
from tests.helpers.support import CHAT, auth, with_changes

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_tracing_is_off_by_default(client: TestClient, mocks: Mocks) -> None:
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    assert tracing.memory is None
    assert all(m.stats()["with_traceparent"] == 0 for m in mocks)


def test_spans_cover_the_request_and_reach_the_backend(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    data = with_changes(config_data, observability={"tracing": True, "tracing_exporter": "memory"})
    client = make_client(data)
    body = {**CHAT, "model": "b-only"}
    headers = {**auth(), "traceparent": CALLER}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    spans = {s.name: s for s in tracing.memory.get_finished_spans()}
    assert {"router.request", "router.auth", "router.limits", "router.route",
            "router.backend"} <= set(spans)  # fmt: skip
    for span in spans.values():
        assert format(span.context.trace_id, "032x") == TRACE_ID
    root = spans["router.request"]
    for child in ("router.auth", "router.limits", "router.route", "router.backend"):
        assert spans[child].parent.span_id == root.context.span_id
    assert spans["router.backend"].attributes["router.backend"] == "mock-b"
    # The backend got the backend span's context.
    _, mock_b = mocks
    sent = mock_b.stats()["last_traceparent"]
    backend_span = format(spans["router.backend"].context.span_id, "016x")
    assert sent == f"00-{TRACE_ID}-{backend_span}-01"
