"""Anthropic's API as a backend kind, against the mock playing it.

The mock that demands a key (`mock_b`) plays api.anthropic.com: on its
Messages paths it wants the key as `x-api-key` and an `anthropic-version`
header, and answers in Anthropic's envelope. Chat completions and Responses
from the official `openai` SDK are translated to Messages for it; the
`anthropic` SDK's Messages go as they are.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, BACKEND_SECRET_ENV
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers import support
from tests.system.providers.support import oai

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
MESSAGES = "/v1/messages"
LOOKUP: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "look a word up",
        "parameters": {"type": "object", "properties": {"words": {"type": "string"}}},
    },
}


def claude_config(config_data: dict[str, Any], mocks: Mocks) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    data["backends"]["anthropic"] = {
        "kind": "anthropic",
        "base_url": mocks[1].url,
        "api_key_env": BACKEND_SECRET_ENV,
        "connect_timeout_s": 1,
        "read_timeout_s": 5,
    }
    data["models"]["claude"] = {"backends": [{"backend": "anthropic", "model": "mock-gpt"}]}
    data["models"]["claude-or-local"] = {"backends": [
        {"backend": "anthropic", "model": "mock-gpt"},
        {"backend": "mock-a", "model": "mock-gpt", "tier": 1},
    ]}  # fmt: skip
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def router(start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks) -> RouterProcess:
    return start_router(claude_config(config_data, mocks))


def served(mock: MockBackendProcess, path: str = MESSAGES) -> int:
    return support.served(mock, path)


def test_chat_is_sent_as_messages_with_anthropics_headers(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="claude",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            max_tokens=4,
        )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "claude"
    assert reply.choices[0].message.content == "mock token alpha beta"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    stats = mocks[1].stats()
    assert served(mocks[1]) == 1
    assert stats["last_anthropic_version"] == "2023-06-01"
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["operation"], record["backend"], record["outcome"]) == (
        "chat", "anthropic", "success"
    )  # fmt: skip
    assert record["usage"]["completion_tokens"] == 4
    assert record["usage"]["estimated"] is False
    assert BACKEND_SECRET not in json.dumps(record)


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_from_messages_events(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, include_usage: bool
) -> None:
    with oai(router) as client:
        chunks = list(
            client.chat.completions.create(
                model="claude",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True} if include_usage else None,
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock token alpha beta gamma"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == (1 if include_usage else 0)
    assert served(mocks[1]) == 1
    # The record has the backend's own counts either way.
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert record["usage"]["completion_tokens"] == 5
    assert record["usage"]["estimated"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_calls_from_tool_use(router: RouterProcess, mocks: Mocks, stream: bool) -> None:
    with oai(router) as client:
        asked: dict[str, Any] = {
            "model": "claude",
            "messages": [{"role": "user", "content": "look it up"}],
            "max_tokens": 3,
            "tools": [LOOKUP],
            "tool_choice": "required",
        }
        if stream:
            chunks = list(client.chat.completions.create(**asked, stream=True))
            calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
            name = next(t.function.name for t in calls if t.function and t.function.name)
            arguments = "".join(t.function.arguments or "" for t in calls if t.function)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
            call_id = next(t.id for t in calls if t.id)
        else:
            reply = client.chat.completions.create(**asked)
            tool_calls = reply.choices[0].message.tool_calls
            assert tool_calls is not None
            (call,) = tool_calls
            assert call.type == "function"
            name, arguments, call_id = call.function.name, call.function.arguments, call.id
            finish = reply.choices[0].finish_reason
        assert (name, json.loads(arguments)) == ("lookup", {"words": "mock token alpha"})
        assert finish == "tool_calls"
        # The result goes back as a tool message: Messages' tool_result.
        answer = client.chat.completions.create(
            model="claude",
            max_tokens=2,
            tools=[LOOKUP],
            messages=[
                {"role": "user", "content": "look it up"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call_id, "type": "function",
                     "function": {"name": "lookup", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "found"},
            ],
        )  # fmt: skip
    assert answer.choices[0].message.content == "mock token"


def test_messages_go_natively_with_the_clients_headers(router: RouterProcess, mocks: Mocks) -> None:
    with anthropic.Anthropic(
        api_key=ACME_KEY,
        base_url=router.url,
        max_retries=0,
        default_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    ) as claude:
        message = claude.messages.create(
            model="claude", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
        with claude.messages.stream(
            model="claude", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            streamed = stream.get_final_message()
        counted = claude.messages.count_tokens(
            model="claude", messages=[{"role": "user", "content": "hello there"}]
        )
    for answer in (message, streamed):
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "mock token alpha"
    assert counted.input_tokens > 0
    assert served(mocks[1]) == 2
    assert served(mocks[1], "/v1/messages/count_tokens") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_responses_reach_anthropic_through_chat(
    router: RouterProcess, mocks: Mocks, stream: bool
) -> None:
    with oai(router) as client:
        if stream:
            events = list(
                client.responses.create(
                    model="claude", input="hi", max_output_tokens=3, stream=True
                )
            )
            assert events[0].type == "response.created"
            last = events[-1]
            assert last.type == "response.completed"
            response = last.response
        else:
            response = client.responses.create(model="claude", input="hi", max_output_tokens=3)
        assert response.output_text == "mock token alpha"
        assert response.usage is not None
        assert response.usage.output_tokens == 3
        # The router keeps the conversation: the next turn goes on from it.
        follow = client.responses.create(
            model="claude", input="more", previous_response_id=response.id, max_output_tokens=2
        )
    assert follow.output_text == "mock token"
    assert served(mocks[1]) == 2


def test_what_messages_cannot_express_is_a_400_naming_it(router: RouterProcess) -> None:
    with oai(router) as client:
        refused: list[tuple[dict[str, Any], str]] = [
            ({"logprobs": True}, "logprobs"),
            ({"temperature": 1.7}, "temperature"),
            ({"n": 2}, "n"),
        ]
        for extra, param in refused:
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(
                    model="claude", messages=[{"role": "user", "content": "hi"}], **extra
                )
            error = caught.value.body
            assert isinstance(error, dict)
            assert (error["code"], error["param"]) == ("unsupported_feature", param)
        # Embeddings have no Messages counterpart: the backend cannot take them.
        with pytest.raises(openai.APIStatusError) as cannot:
            client.embeddings.create(model="claude", input="hi")
        assert cannot.value.status_code in (400, 503)
        assert "anthropic_messages" in str(cannot.value.body)


def test_overloaded_fails_over_before_the_first_byte(router: RouterProcess, mocks: Mocks) -> None:
    """Anthropic's 529 moves the request on and counts against the backend."""
    mock_a, claude = mocks
    claude.configure(error_rate=1.0, error_status=529)
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="claude-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert (served(claude), served(mock_a, "/v1/chat/completions")) == (1, 1)
    status = httpx.get(f"{router.url}/v1/status", timeout=10).json()
    assert status["backends"]["anthropic"]["failures"] == 1


def test_rate_limited_with_retry_after_is_left_alone(router: RouterProcess, mocks: Mocks) -> None:
    mock_a, claude = mocks
    claude.configure(error_rate=1.0, error_status=429, retry_after_s=20)
    with oai(router) as client:
        for _ in range(3):
            reply = client.chat.completions.create(
                model="claude-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert reply.choices[0].message.content == "mock token"
    assert (served(claude), served(mock_a, "/v1/chat/completions")) == (1, 3)


def test_the_mock_refuses_as_anthropic_does(mocks: Mocks) -> None:
    claude = mocks[1]
    body = {"model": "mock-gpt", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    no_version = httpx.post(f"{claude.url}/messages", json=body,
                            headers={"x-api-key": BACKEND_SECRET})  # fmt: skip
    assert no_version.status_code == 400
    message = "anthropic-version: header is required"
    assert no_version.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
    }
    headers = {"x-api-key": "nope", "anthropic-version": "2023-06-01"}
    wrong_key = httpx.post(f"{claude.url}/messages", json=body, headers=headers)
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["type"] == "authentication_error"
