"""Limits name what they count: in a denial, whatever characters its names hold, and in
the settlement log line."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest

from router_server.logs import JsonFormatter

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import CHAT, LimitedFactory, auth

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]


def test_a_model_name_with_colons_is_named_whole(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """Model names may hold ':' (`llama3:8b`, `tok:day` even): the message names the
    model and the kind of limit as configured, not pieces of a key string."""
    data = copy.deepcopy(config_data)
    for name in ("llama3:8b", "m:tok:day"):
        data["models"][name] = {"backends": [{"backend": "mock-a", "model": "mock-gpt"}]}
    data["organizations"]["acme"]["model_limits"] = {
        "llama3:8b": {"requests": {"rate": 1, "per": "minute"}},
        "m:tok:day": {"quotas": {"requests_per_day": 1}},
    }
    app = limited(data)

    def ask(model: str) -> Any:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return app.client.post("/v1/chat/completions", json=body, headers=auth())

    assert ask("llama3:8b").status_code == 200
    denied = ask("llama3:8b").json()["error"]
    assert denied["code"] == "rate_limit_exceeded"
    assert denied["message"].startswith(
        "Rate limit exceeded: organization 'acme', model 'llama3:8b' has used 1 of 1 requests"
        " (request rate limit)."
    )
    assert ask("m:tok:day").status_code == 200
    denied = ask("m:tok:day").json()["error"]
    assert denied["code"] == "quota_exceeded"
    assert "organization 'acme', model 'm:tok:day' has used 1 of 1 requests" in denied["message"]
    assert "(request quota per day)" in denied["message"]


def test_the_settled_line_names_what_each_hold_counted(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks, caplog: Any
) -> None:
    """The log line an operator (and the two-replica test) sums spend from: plain JSON,
    charged by the measures' short names."""
    data = copy.deepcopy(config_data)
    data["prices"] = {name: {"input": 1, "output": 2} for name in data["models"]}
    data["organizations"]["acme"]["limits"] = {
        "quotas": {"requests_per_day": 10, "tokens_per_day": 10_000},
        "budget": {"per_day": 1},
    }
    app = limited(data)
    with caplog.at_level(logging.DEBUG, logger="router.limits"):
        answer = app.client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    [record] = [r for r in caplog.records if r.getMessage() == "settled"]
    line = json.loads(JsonFormatter().format(record))
    assert line["charged"] == {
        "req": 1,
        "tok": usage["total_tokens"],
        "usd": usage["prompt_tokens"] * 1_000 + usage["completion_tokens"] * 2_000,
    }
