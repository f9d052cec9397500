"""Google Gemini as a backend kind, against the mock playing its API.

The mock that demands a key (`mock_b`) plays generativelanguage.googleapis.com
under /v1beta: `models/MODEL:generateContent` and `:streamGenerateContent`
(as server-sent events), the key as `x-goog-api-key`, refused as Google
does. No client speaks Gemini: chat completions, Messages and Responses from
the official SDKs are all translated for it.
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
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, BACKEND_SECRET_ENV
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers.support import oai, root, served

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
GENERATE = "/v1beta/models/mock-gpt:generateContent"
STREAM = "/v1beta/models/mock-gpt:streamGenerateContent"
LOOKUP: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"words": {"type": "string"}}},
    },
}


def gemini_config(config_data: dict[str, Any], mocks: Mocks) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    data["backends"]["gemini"] = {
        "kind": "gemini",
        "base_url": root(mocks[1]) + "/v1beta",
        "api_key_env": BACKEND_SECRET_ENV,
        "connect_timeout_s": 1,
        "read_timeout_s": 5,
    }
    data["models"]["gemini-flash"] = {"backends": [{"backend": "gemini", "model": "mock-gpt"}]}
    data["models"]["flash-or-local"] = {"backends": [
        {"backend": "gemini", "model": "mock-gpt"},
        {"backend": "mock-a", "model": "mock-gpt", "tier": 1},
    ]}  # fmt: skip
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def router(start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks) -> RouterProcess:
    return start_router(gemini_config(config_data, mocks))


def test_chat_goes_to_generate_content(router: RouterProcess, mocks: Mocks, tmp_path: Path) -> None:
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="gemini-flash",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            max_tokens=4,
        )
    assert reply.choices[0].message.content == "mock token alpha beta"
    assert (reply.model, reply.choices[0].finish_reason) == ("gemini-flash", "stop")
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    assert served(mocks[1], GENERATE) == 1
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["operation"], record["backend"]) == ("chat", "gemini")
    assert (record["usage"]["completion_tokens"], record["usage"]["estimated"]) == (4, False)
    assert BACKEND_SECRET not in json.dumps(record)


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_from_gemini_chunks(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, include_usage: bool
) -> None:
    with oai(router) as client:
        chunks = list(
            client.chat.completions.create(
                model="gemini-flash",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True} if include_usage else None,
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock token alpha beta gamma"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len([c for c in chunks if c.usage is not None]) == (1 if include_usage else 0)
    assert served(mocks[1], STREAM) == 1
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert (record["outcome"], record["usage"]["completion_tokens"]) == ("success", 5)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_become_function_calls_and_back(
    router: RouterProcess, mocks: Mocks, stream: bool
) -> None:
    asked: dict[str, Any] = {
        "model": "gemini-flash",
        "messages": [{"role": "user", "content": "look it up"}],
        "max_tokens": 3,
        "tools": [LOOKUP],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    }
    with oai(router) as client:
        if stream:
            chunks = list(client.chat.completions.create(**asked, stream=True))
            calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
            (call,) = calls
            assert call.function is not None
            name, arguments, call_id = call.function.name, call.function.arguments, call.id
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            reply = client.chat.completions.create(**asked)
            tool_calls = reply.choices[0].message.tool_calls
            assert tool_calls is not None
            (whole,) = tool_calls
            assert whole.type == "function"
            name, arguments = whole.function.name, whole.function.arguments
            call_id, finish = whole.id, reply.choices[0].finish_reason
        assert (name, json.loads(arguments or "")) == ("lookup", {"words": "mock token alpha"})
        assert finish == "tool_calls"
        assert call_id
        answer = client.chat.completions.create(
            model="gemini-flash",
            max_tokens=2,
            tools=[LOOKUP],
            messages=[
                {"role": "user", "content": "look it up"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call_id, "type": "function",
                     "function": {"name": "lookup", "arguments": arguments or "{}"}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "found"},
            ],
        )  # fmt: skip
    assert answer.choices[0].message.content == "mock token"


def test_messages_and_responses_reach_gemini_through_chat(
    router: RouterProcess, mocks: Mocks
) -> None:
    with anthropic.Anthropic(api_key=ACME_KEY, base_url=router.url, max_retries=0) as claude:
        message = claude.messages.create(
            model="gemini-flash", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
        with claude.messages.stream(
            model="gemini-flash", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            streamed = stream.get_final_message()
    for answer in (message, streamed):
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "mock token alpha"
        assert answer.usage.output_tokens == 3
    with oai(router) as client:
        response = client.responses.create(model="gemini-flash", input="hi", max_output_tokens=2)
        events = list(
            client.responses.create(
                model="gemini-flash", input="more", previous_response_id=response.id,
                max_output_tokens=2, stream=True,
            )
        )  # fmt: skip
    assert response.output_text == "mock token"
    last = events[-1]
    assert last.type == "response.completed"
    assert last.response.output_text == "mock token"
    assert (served(mocks[1], GENERATE), served(mocks[1], STREAM)) == (2, 2)


def test_what_gemini_cannot_express_is_a_400_naming_it(router: RouterProcess) -> None:
    with oai(router) as client:
        for extra, param in (({"n": 2}, "n"), ({"logprobs": True}, "logprobs")):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(
                    model="gemini-flash", messages=[{"role": "user", "content": "hi"}], **extra
                )
            assert isinstance(caught.value.body, dict)
            assert (caught.value.body["code"], caught.value.body["param"]) == (
                "unsupported_feature", param
            )  # fmt: skip


@pytest.mark.parametrize("status", [429, 503])
def test_exhausted_or_unavailable_fails_over(
    router: RouterProcess, mocks: Mocks, status: int
) -> None:
    mock_a, gemini = mocks
    gemini.configure(error_rate=1.0, error_status=status)
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="flash-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert (served(gemini, GENERATE), served(mock_a, "/v1/chat/completions")) == (1, 1)


def test_the_mock_refuses_as_google_does(mocks: Mocks) -> None:
    url = root(mocks[1]) + GENERATE
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    missing = httpx.post(url, json=body, timeout=10)
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = httpx.post(url, json=body, headers={"x-goog-api-key": "nope"}, timeout=10)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == {
        "code": 400, "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
    }  # fmt: skip
    by_query = httpx.post(url, params={"key": BACKEND_SECRET}, json=body, timeout=10)
    assert by_query.status_code == 200
    assert by_query.json()["candidates"][0]["finishReason"] == "STOP"


STRICT = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_LOW_AND_ABOVE"}]
RELAXED = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]


@pytest.mark.parametrize("stream", [False, True])
def test_safety_settings_reach_gemini(router: RouterProcess, mocks: Mocks, stream: bool) -> None:
    """The mock blocks an answer under its strictest threshold, as Gemini's filter
    does: content_filter shows the settings arrived; a relaxed one answers."""
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with oai(router) as client:
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="gemini-flash", messages=hi, max_tokens=3, stream=True,
                    extra_body={"safety_settings": STRICT},
                )
            )  # fmt: skip
            finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
            assert finishes[-1] == "content_filter"
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
        else:
            blocked = client.chat.completions.create(
                model="gemini-flash", messages=hi, max_tokens=3,
                extra_body={"safety_settings": STRICT},
            )  # fmt: skip
            assert blocked.choices[0].finish_reason == "content_filter"
            assert not blocked.choices[0].message.content
        relaxed = client.chat.completions.create(
            model="gemini-flash", messages=hi, max_tokens=3,
            extra_body={"safety_settings": RELAXED},
        )  # fmt: skip
    assert relaxed.choices[0].message.content == "mock token alpha"
    assert (served(mocks[1], STREAM), served(mocks[1], GENERATE)) == ((1, 1) if stream else (0, 2))


@pytest.mark.parametrize(
    ("settings", "param"),
    [
        ({"category": "HARM_CATEGORY_HARASSMENT"}, "safety_settings"),
        ([{"category": "HARM_CATEGORY_HARASSMENT"}], "safety_settings[0]"),
        ([{"category": "", "threshold": "OFF"}], "safety_settings[0]"),
    ],
)
def test_malformed_safety_settings_are_a_422_at_their_place(
    router: RouterProcess, mocks: Mocks, settings: object, param: str
) -> None:
    with oai(router) as client, pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="gemini-flash", messages=[{"role": "user", "content": "hi"}],
            extra_body={"safety_settings": settings},
        )  # fmt: skip
    assert isinstance(caught.value.body, dict)
    assert (caught.value.body["code"], caught.value.body["param"]) == ("validation_failed", param)
    assert served(mocks[1], GENERATE) == 0


def test_an_unknown_safety_category_is_geminis_own_400(router: RouterProcess) -> None:
    with oai(router) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gemini-flash", messages=[{"role": "user", "content": "hi"}],
            extra_body={"safety_settings": [{"category": "HARM_X", "threshold": "OFF"}]},
        )  # fmt: skip
    assert "safety_settings[0].category" in str(caught.value)
