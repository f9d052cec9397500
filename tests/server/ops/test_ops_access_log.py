"""The access log: one JSON line per request, streams included, with no prompt or
completion text unless `observability.log_content` asks for it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from starlette.testclient import TestClient

from router_server.logs import JsonFormatter

from tests.helpers.router_fixture import AppFactory
from tests.helpers.support import ACME_KEY, CHAT, auth, eventually, with_changes

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

FIELDS = {"request_id", "organization", "key_id", "model", "status", "outcome", "latency_ms"}
SECRET_PROMPT = "the launch codes are 0000"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "router.access"]


def send_three(client: TestClient) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    assert client.post("/v1/chat/completions", json=body, headers=auth()).status_code == 200
    with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=auth()
    ) as r:
        r.read()
    assert client.post("/v1/chat/completions", json={**body, "model": "nope"}, headers=auth())


def test_one_line_per_request_with_its_fields_and_no_content(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.access")
    send_three(client)
    assert eventually(lambda: len(access_lines(caplog)) == 3)
    served, streamed, denied = access_lines(caplog)
    for line in (served, streamed):
        assert FIELDS | {"backend"} <= set(line)
        assert line["outcome"] == "success"
        assert line["organization"] == "acme"
        assert line["key_id"] == "acme1"
    assert streamed["stream"] is True
    assert denied["outcome"] == "denied"
    assert denied["code"] == "model_not_found"
    text = json.dumps(access_lines(caplog))
    assert SECRET_PROMPT not in text
    assert ACME_KEY not in text
    assert "choices" not in text


def test_content_is_logged_only_when_enabled(
    make_client: AppFactory, config_data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.access")
    client = make_client(with_changes(config_data, observability={"log_content": True}))
    send_three(client)
    assert eventually(lambda: len(access_lines(caplog)) == 3)
    served, streamed, _ = access_lines(caplog)
    assert served["prompt"][0]["content"] == SECRET_PROMPT
    assert served["completion"]
    assert streamed["prompt"][0]["content"] == SECRET_PROMPT
    assert ACME_KEY not in json.dumps(access_lines(caplog))
