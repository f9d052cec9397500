"""Prefix and session affinity through the app, real mock backends over HTTP
and the openai SDK: a session header, a shared prompt prefix and a Responses
conversation each stay on one backend, a loaded home spills, and the routing
decision is in the debug access log (block hashes, never the prompt)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import openai
import pytest
from starlette.testclient import TestClient

from router_server.logs import JsonFormatter

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import ACME_KEY, eventually

Mocks = tuple[Backend, Backend]
AppFactory = Callable[[dict[str, Any]], TestClient]
SYSTEM = "You are the support assistant of a company that sells very long system prompts. " * 8


def with_affinity(config: dict[str, Any], **settings: Any) -> dict[str, Any]:
    chat = config["models"]["chat"]
    chat["strategy"] = "least_load"
    chat["affinity"] = {"block_chars": 128, "max_blocks": 8, **settings}
    return config


def sdk(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=ACME_KEY, base_url="http://testserver/v1", http_client=client, max_retries=0
    )


def served_by(client: openai.OpenAI, question: str, headers: dict[str, str] | None = None) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        extra_headers=headers,
    )
    return raw.headers["x-router-backend"]


def test_a_session_header_pins_each_session_to_one_backend(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """Short prompts (no prefix block) with x-session-id: each session's
    requests go to one backend, and sessions spread over both."""
    client = sdk(make_client(with_affinity(config_data, block_chars=100_000)))
    homes: Counter[str] = Counter()
    for session in range(16):
        used = {
            client.chat.completions.with_raw_response.create(
                model="chat",
                messages=[{"role": "user", "content": f"question {i}"}],
                extra_headers={"x-session-id": f"session-{session}"},
            ).headers["x-router-backend"]
            for i in range(4)
        }
        assert len(used) == 1, f"session {session} went to {used}"
        homes[used.pop()] += 1
    assert set(homes) == {"mock-a", "mock-b"}


def test_a_configured_session_header_is_the_one_read(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    client = sdk(make_client(with_affinity(config_data, session_header="x-conversation")))
    for session in range(4):
        used = {
            served_by(client, f"q{i}-{session}", {"x-conversation": f"c{session}"})
            for i in range(4)
        }
        assert len(used) == 1


def test_a_shared_prefix_stays_on_one_backend_and_spills_when_its_home_is_loaded(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """Many users of one system prompt go to the backend that served it
    first; when that backend's own metrics say it is 80 % full (past the
    bound: 1.25 x (mean 0.4 + one request's 0.1)), they go to the other."""
    for name in ("mock-a", "mock-b"):
        config_data["backends"][name]["max_in_flight"] = 10
        config_data["backends"][name]["load_metrics"] = {
            "format": "vllm", "interval_s": 0.2, "stale_after_s": 2, "timeout_s": 0.2,
        }  # fmt: skip
    app = make_client(with_affinity(config_data))
    client = sdk(app)
    used = Counter(served_by(client, f"user question number {i}") for i in range(20))
    assert len(used) == 1
    home = next(iter(used))
    loaded = mocks[0] if home == "mock-a" else mocks[1]
    loaded.configure(metrics="fixed", metrics_running=8)
    assert eventually(
        lambda: app.get("/v1/status").json()["backends"][home].get("reported_load") == 0.8
    )
    spilled = Counter(served_by(client, f"later question {i}") for i in range(10))
    assert home not in spilled
    assert sum(spilled.values()) == 10


def test_without_affinity_the_same_prefix_spreads(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """The control: the same traffic, affinity off, uses both backends."""
    config_data["models"]["chat"]["strategy"] = "least_load"
    client = sdk(make_client(config_data))
    assert len({served_by(client, f"user question number {i}") for i in range(20)}) == 2


def test_previous_response_id_pins_a_conversation_to_one_backend(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """Each turn of a Responses conversation goes where its first went,
    although its prompt (the whole conversation) changes every turn; a
    prompt too short for a prefix block, so only the conversation pins."""
    client = sdk(make_client(with_affinity(config_data, block_chars=100_000)))
    starts: Counter[str] = Counter()
    for conversation in range(6):
        raw = client.responses.with_raw_response.create(model="chat", input="hello")
        first, previous = raw.headers["x-router-backend"], raw.parse().id
        starts[first] += 1
        for turn in range(4):
            raw = client.responses.with_raw_response.create(
                model="chat", input=f"and then {turn}?", previous_response_id=previous
            )
            assert raw.headers["x-router-backend"] == first, (conversation, turn)
            previous = raw.parse().id
    assert sum(starts.values()) == 6


def test_the_routing_decision_is_in_the_debug_access_log(
    make_client: AppFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At debug level each decision is logged: the candidates with their
    load, the skipped with why, affinity's home, depth and choice, and the
    request's block hashes; never the prompt."""
    client = sdk(make_client(with_affinity(config_data)))
    caplog.set_level(logging.DEBUG, logger="router.access")
    served_by(client, "a secret question")
    served = served_by(client, "another secret question")
    routed = [r for r in caplog.records if r.name == "router.access" and r.msg == "routed"]
    assert len(routed) == 2
    decision: dict[str, Any] = routed[-1].routing  # type: ignore[attr-defined]
    assert decision["rule"] == "model"
    assert decision["candidates"][0]["backend"] == served
    assert all("load" in c for c in decision["candidates"])
    assert decision["affinity"]["chosen"] == served
    assert decision["affinity"]["depth"] >= 1  # the first request's blocks were recorded
    assert decision["affinity"]["blocks"] == len(SYSTEM) // 128  # whole blocks, within 8
    assert len(decision["affinity"]["first_block"]) == 16
    line = JsonFormatter().format(routed[-1])
    assert "secret" not in line
    assert SYSTEM[:40] not in line
    assert ACME_KEY not in line


def test_no_debug_line_at_info(
    make_client: AppFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = sdk(make_client(with_affinity(config_data)))
    caplog.set_level(logging.INFO, logger="router.access")
    served_by(client, "question")
    assert not [r for r in caplog.records if r.msg == "routed"]
