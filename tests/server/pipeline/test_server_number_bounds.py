"""Numbers a client sends are bounded where they are parsed: out of range is a 422
naming the field and its range, never a 5xx, with or without limits in the way."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import CHAT, auth

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]
OUT_OF_RANGE = [2**53, 10**15, 2**64, -1]
RANGE = "must be an integer from 1 to 2147483647"


def with_budget(config_data: dict[str, Any]) -> dict[str, Any]:
    """The config with a daily budget for acme, so that max_tokens is priced."""
    data = copy.deepcopy(config_data)
    data["prices"] = {
        "chat": {"input": 1, "output": 2},
        "embed": {"input": 1},
        "b-only": {"input": 1, "output": 2},
    }
    data["organizations"]["acme"]["limits"] = {
        "budget": {"per_day": 1000},
        "quotas": {"tokens_per_day": 10**12},
    }
    return data


@pytest.fixture(params=["plain", "budget"])
def app(request: pytest.FixtureRequest, make_client: Any, config_data: dict[str, Any]) -> Any:
    return make_client(config_data if request.param == "plain" else with_budget(config_data))


def inference_hits(mocks: Mocks) -> int:
    paths = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
    return sum(m.stats()["by_path"].get(p, 0) for m in mocks for p in paths)


def post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers=auth())


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_counts_out_of_range_are_422(
    app: TestClient, mocks: Mocks, field: str, value: int
) -> None:
    for stream in (False, True):
        response = post(app, "/v1/chat/completions", {**CHAT, field: value, "stream": stream})
        assert response.status_code == 422, (stream, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_failed"
        assert error["param"] == field
        assert error["errors"] == [{"path": field, "message": RANGE}]
    seed = post(
        app,
        "/v1/inference",
        {"request_id": str(uuid.uuid4()), "model": "chat",
         "payload": {"messages": CHAT["messages"], field: value}},
    )  # fmt: skip
    assert seed.status_code == 422, seed.text
    assert seed.json()["code"] == "VALIDATION_FAILED"
    assert seed.json()["errors"] == [{"path": f"payload.{field}", "message": RANGE}]
    assert inference_hits(mocks) == 0


def test_the_largest_count_is_served(app: TestClient, mocks: Mocks) -> None:
    # With the budget, its worst case (about $4,300) is clamped to what $1,000 affords.
    response = post(app, "/v1/chat/completions", {**CHAT, "max_tokens": 2**31 - 1})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/v1/chat/completions", {**CHAT, "n": 2**53}, "n", RANGE),
        ("/v1/chat/completions", {**CHAT, "top_logprobs": 10**15},
         "top_logprobs", "must be an integer from 0 to 2147483647"),
        ("/v1/chat/completions", {**CHAT, "seed": 2**64},
         "seed", f"must be an integer from {-(2**63)} to {2**63 - 1}"),
        ("/v1/chat/completions", {**CHAT, "presence_penalty": 10**15},
         "presence_penalty", "must be a number from -2 to 2"),
        ("/v1/chat/completions", {**CHAT, "logit_bias": {"7": -(2**64)}},
         "logit_bias.7", "must be a number from -100 to 100"),
        ("/v1/completions", {"model": "chat", "prompt": "x", "logprobs": 2**53},
         "logprobs", "must be an integer from 0 to 2147483647"),
        ("/v1/completions", {"model": "chat", "prompt": "x", "best_of": -1}, "best_of", RANGE),
        ("/v1/embeddings", {"model": "embed", "input": "x", "dimensions": 2**64},
         "dimensions", RANGE),
    ],
)  # fmt: skip
def test_other_numbers_out_of_range_are_422(
    app: TestClient, mocks: Mocks, path: str, body: dict[str, Any], field: str, message: str
) -> None:
    response = post(app, path, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["errors"] == [{"path": field, "message": message}]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_numbers_json_cannot_hold_are_malformed_json(app: TestClient, number: bytes) -> None:
    response = app.post(
        "/v1/chat/completions",
        content=b'{"model": "chat", "messages": [], "max_tokens": ' + number + b"}",
        headers={**auth(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
