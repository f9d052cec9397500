"""Anthropic Messages and OpenAI Responses end to end, through the official SDKs.

A real router process in front of the real mock backends. The same mock is
configured twice: as `mock-a` (OpenAI only: the router translates to chat) and
as `mock-native` (it also speaks Messages and Responses: the router passes the
request on as it came). Which path the mock served says which happened.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, GLOBEX_KEY, eventually
from tests.helpers.usage_support import schema_errors, wait_ledger

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]

MOCK_WORDS = ("mock", "token", "alpha", "beta", "gamma", "delta", "router", "stream")
NATIVE = ["openai", "anthropic_messages", "openai_responses"]


def mock_text(n: int) -> str:
    return " ".join(MOCK_WORDS[i % len(MOCK_WORDS)] for i in range(n))


def protocol_config(config_data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    data["backends"]["mock-native"] = {**data["backends"]["mock-a"], "protocols": NATIVE}
    data["models"]["translated"] = {"backends": [{"backend": "mock-a", "model": "mock-gpt"}]}
    data["models"]["native"] = {"backends": [{"backend": "mock-native", "model": "mock-gpt"}]}
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def router(start_router: RouterFactory, config_data: dict[str, Any]) -> RouterProcess:
    return start_router(protocol_config(config_data))


@pytest.fixture
def claude(router: RouterProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        api_key=ACME_KEY, base_url=router.url, max_retries=0, timeout=30
    ) as client:
        yield client


@pytest.fixture
def oai(router: RouterProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key=ACME_KEY, base_url=router.url + "/v1", max_retries=0, timeout=30
    ) as client:
        yield client


def served(mocks: Mocks, path: str) -> int:
    return sum(m.stats()["by_path"].get(path, 0) for m in mocks)


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "router-0-data"


# --- Anthropic Messages ---------------------------------------------------------------


@pytest.mark.parametrize(("model", "path"), [
    ("translated", "/v1/chat/completions"), ("native", "/v1/messages"),
])  # fmt: skip
def test_message(claude: anthropic.Anthropic, mocks: Mocks, model: str, path: str) -> None:
    message = claude.messages.create(
        model=model,
        max_tokens=5,
        system="be brief",
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == model
    assert [block.type for block in message.content] == ["text"]
    text = message.content[0]
    assert isinstance(text, anthropic.types.TextBlock)
    assert text.text == mock_text(5)
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 5
    assert message.usage.input_tokens > 0
    assert served(mocks, path) == 1


@pytest.mark.parametrize(("model", "path"), [
    ("translated", "/v1/chat/completions"), ("native", "/v1/messages"),
])  # fmt: skip
def test_message_stream(
    claude: anthropic.Anthropic, mocks: Mocks, tmp_path: Path, model: str, path: str
) -> None:
    kinds: list[str] = []
    with claude.messages.stream(
        model=model, max_tokens=6, messages=[{"role": "user", "content": "hello there"}]
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_start" in kinds
    assert kinds.index("content_block_start") < kinds.index("content_block_stop")
    assert final.content[0].type == "text"
    assert final.content[0].text == mock_text(6)
    assert final.usage.output_tokens == 6
    assert final.model == model
    assert served(mocks, path) == 1
    (record,) = wait_ledger(data_dir(tmp_path), 1)
    assert schema_errors(record) == []
    assert record["operation"] == "messages"
    assert record["route"] == "/v1/messages"
    assert record["stream"] is True
    assert record["outcome"] == "success"
    assert record["usage"]["completion_tokens"] == 6
    assert record["usage"]["estimated"] is False


def test_message_errors_in_anthropic_envelope(router: RouterProcess) -> None:
    unknown = "rk_nobody1_" + "N" * 32
    with (
        anthropic.Anthropic(api_key=unknown, base_url=router.url, max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as refused,
    ):
        bad.messages.create(
            model="native", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 401
    body = refused.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    # max_tokens is required by Messages: a 400 invalid_request_error naming it.
    answer = httpx.post(
        router.url + "/v1/messages",
        headers={"x-api-key": ACME_KEY, "anthropic-version": "2023-06-01"},
        json={"model": "native", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "max_tokens" in error["message"]
    # A model the caller may not use: 404 not_found_error.
    with (
        anthropic.Anthropic(api_key=GLOBEX_KEY, base_url=router.url, max_retries=0) as globex,
        pytest.raises(anthropic.NotFoundError) as missing,
    ):
        globex.messages.create(
            model="native", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.response.json()["error"]["type"] == "not_found_error"


def test_untranslatable_feature_is_a_400_naming_it(
    claude: anthropic.Anthropic, mocks: Mocks
) -> None:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
    }
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="translated",
            max_tokens=5,
            messages=[{"role": "user", "content": [document, {"type": "text", "text": "sum"}]}],  # type: ignore[misc, list-item]
        )
    error = refused.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_feature"
    assert "document" in error["message"]
    assert served(mocks, "/v1/chat/completions") == 0


def test_count_tokens_native_and_estimated(claude: anthropic.Anthropic, mocks: Mocks) -> None:
    asked: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": "hello there general kenobi"}
    ]
    native = claude.messages.count_tokens(model="native", messages=asked)
    assert native.input_tokens > 0
    assert served(mocks, "/v1/messages/count_tokens") == 1
    raw = claude.messages.with_raw_response.count_tokens(model="translated", messages=asked)
    assert raw.headers["x-router-estimated"] == "true"
    assert raw.parse().input_tokens > 0


def test_messages_limits_reserve_max_tokens(
    start_router: RouterFactory, config_data: dict[str, Any]
) -> None:
    """A token quota smaller than max_tokens refuses before any backend is asked,
    in Anthropic's envelope."""
    data = protocol_config(config_data)
    data["organizations"]["acme"]["limits"] = {"quotas": {"tokens_per_day": 100}}
    router = start_router(data)
    with anthropic.Anthropic(api_key=ACME_KEY, base_url=router.url, max_retries=0) as client:
        small = client.messages.create(
            model="native", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert small.usage.output_tokens == 5
        with pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(
                model="native", max_tokens=500, messages=[{"role": "user", "content": "hi"}]
            )
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert error["type"] == "billing_error"
    assert error["code"] == "quota_exceeded"


# --- OpenAI Responses -----------------------------------------------------------------


@pytest.mark.parametrize(("model", "path"), [
    ("translated", "/v1/chat/completions"), ("native", "/v1/responses"),
])  # fmt: skip
def test_response(oai: openai.OpenAI, mocks: Mocks, model: str, path: str) -> None:
    response = oai.responses.create(
        model=model, input="hello there", instructions="be brief", max_output_tokens=16
    )
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == model
    assert response.output_text == mock_text(16)
    assert response.usage is not None
    assert response.usage.output_tokens == 16
    assert served(mocks, path) == 1
    # Stored by the router: any replica can read it back.
    again = oai.responses.retrieve(response.id)
    assert again.id == response.id
    assert again.output_text == response.output_text


@pytest.mark.parametrize(("model", "path"), [
    ("translated", "/v1/chat/completions"), ("native", "/v1/responses"),
])  # fmt: skip
def test_response_stream(oai: openai.OpenAI, mocks: Mocks, model: str, path: str) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    final: Any = None
    with oai.responses.create(
        model=model, input="hello there", max_output_tokens=20, stream=True
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                final = event.response
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "".join(deltas) == mock_text(20)
    assert final is not None
    assert final.output_text == mock_text(20)
    assert served(mocks, path) == 1
    assert oai.responses.retrieve(final.id).output_text == mock_text(20)


@pytest.mark.parametrize("model", ["translated", "native"])
def test_previous_response_id_carries_the_conversation(oai: openai.OpenAI, model: str) -> None:
    first = oai.responses.create(model=model, input="hello there", max_output_tokens=16)
    second = oai.responses.create(
        model=model, input="and again", previous_response_id=first.id, max_output_tokens=16
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None
    assert second.usage is not None
    # The backend saw the first turn (input and answer) before the second's input.
    assert second.usage.input_tokens > first.usage.input_tokens + 16
    items = oai.responses.input_items.list(second.id)
    texts = [
        part.text
        for item in items.data
        if item.type == "message"
        for part in item.content
        if hasattr(part, "text")
    ]
    assert texts == ["hello there", mock_text(16), "and again"]


def test_stored_responses_are_per_organization(router: RouterProcess, oai: openai.OpenAI) -> None:
    mine = oai.responses.create(model="translated", input="hello", max_output_tokens=16)
    with openai.OpenAI(api_key=GLOBEX_KEY, base_url=router.url + "/v1", max_retries=0) as other:
        with pytest.raises(openai.NotFoundError) as hidden:
            other.responses.retrieve(mine.id)
        assert hidden.value.response.json()["error"]["code"] == "response_not_found"
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(
                model="chat", input="x", previous_response_id=mine.id, max_output_tokens=16
            )
    # Still there for its owner, until deleted.
    assert oai.responses.retrieve(mine.id).id == mine.id
    oai.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(mine.id)


def test_store_false_is_not_kept(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model="native", input="hello", store=False, max_output_tokens=16
    )
    assert response.model_dump()["store"] is False
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)


def test_response_validation_in_openai_envelope(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oai.responses.create(model="native", input="hi", temperature=7)
    error = refused.value.response.json()["error"]
    assert error["code"] == "validation_failed"
    assert "temperature" in error["message"]


def test_conversation_continues_on_another_replica(
    start_router: RouterFactory, config_data: dict[str, Any], redis_url: str
) -> None:
    """Two replicas on one Redis: a response made on one is read, continued and
    deleted on the other."""
    data = protocol_config(config_data)
    data["state"] = {**data.get("state", {}), "store": "redis"}
    env = {"ROUTER_REDIS_URL": redis_url}
    one, two = start_router(data, env), start_router(data, env)
    with (
        openai.OpenAI(api_key=ACME_KEY, base_url=one.url + "/v1", max_retries=0) as first,
        openai.OpenAI(api_key=ACME_KEY, base_url=two.url + "/v1", max_retries=0) as second,
    ):
        opened = first.responses.create(model="translated", input="hello", max_output_tokens=16)
        assert second.responses.retrieve(opened.id).output_text == mock_text(16)
        followed = second.responses.create(
            model="native", input="more", previous_response_id=opened.id, max_output_tokens=16
        )
        assert followed.usage is not None
        assert opened.usage is not None
        assert followed.usage.input_tokens > opened.usage.input_tokens + 16
        assert first.responses.retrieve(followed.id).previous_response_id == opened.id
        second.responses.delete(opened.id)
        with pytest.raises(openai.NotFoundError):
            first.responses.retrieve(opened.id)


# --- tool calls, native and translated ------------------------------------------------

WORDS_SCHEMA: dict[str, object] = {"type": "object", "properties": {"words": {"type": "string"}}}
LOOKUP_TOOL: anthropic.types.ToolParam = {
    "name": "lookup", "description": "look a word up", "input_schema": WORDS_SCHEMA,
}  # fmt: skip


@pytest.mark.parametrize("model", ["translated", "native"])
def test_message_tool_use(claude: anthropic.Anthropic, model: str) -> None:
    message = claude.messages.create(
        model=model, max_tokens=4, tools=[LOOKUP_TOOL],
        tool_choice={"type": "any"}, messages=[{"role": "user", "content": "look it up"}],
    )  # fmt: skip
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert call.name == "lookup"
    assert call.input == {"words": mock_text(4)}
    # The result goes back as a tool_result; the conversation continues.
    answer = claude.messages.create(
        model=model, max_tokens=3, tools=[LOOKUP_TOOL],
        messages=[
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "found"},
            ]},
        ],
    )  # fmt: skip
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"


@pytest.mark.parametrize("model", ["translated", "native"])
def test_message_tool_use_stream(claude: anthropic.Anthropic, model: str) -> None:
    deltas: list[str] = []
    with claude.messages.stream(
        model=model, max_tokens=5, tools=[LOOKUP_TOOL],
        tool_choice={"type": "tool", "name": "lookup"},
        messages=[{"role": "user", "content": "look it up"}],
    ) as stream:  # fmt: skip
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                deltas.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert len(deltas) > 5  # streamed in fragments, not one piece
    assert final.stop_reason == "tool_use"
    (call,) = final.content
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert call.input == {"words": mock_text(5)}
    assert final.usage.output_tokens == 5


FUNCTION_TOOL: openai.types.responses.FunctionToolParam = {
    "type": "function", "name": "lookup", "parameters": WORDS_SCHEMA, "strict": False,
}  # fmt: skip


@pytest.mark.parametrize("model", ["translated", "native"])
def test_response_function_call(oai: openai.OpenAI, model: str) -> None:
    response = oai.responses.create(
        model=model, input="look it up", tools=[FUNCTION_TOOL],
        tool_choice="required", max_output_tokens=4,
    )  # fmt: skip
    (call,) = response.output
    assert call.type == "function_call"
    assert call.name == "lookup"
    assert json.loads(call.arguments) == {"words": mock_text(4)}
    # Its output continues the stored conversation.
    answer = oai.responses.create(
        model=model, previous_response_id=response.id, max_output_tokens=3,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "found"}],
    )  # fmt: skip
    assert answer.output_text == mock_text(3)


@pytest.mark.parametrize("model", ["translated", "native"])
def test_response_function_call_stream(oai: openai.OpenAI, model: str) -> None:
    deltas: list[str] = []
    final: Any = None
    with oai.responses.create(
        model=model, input="look it up", tools=[FUNCTION_TOOL],
        tool_choice={"type": "function", "name": "lookup"}, max_output_tokens=5, stream=True,
    ) as stream:  # fmt: skip
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                final = event.response
    assert len(deltas) > 5
    assert final is not None
    (call,) = final.output
    assert call.type == "function_call"
    assert json.loads("".join(deltas)) == json.loads(call.arguments) == {"words": mock_text(5)}


# --- failures -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["translated", "native"])
def test_a_broken_message_stream_ends_with_an_error_event(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, model: str
) -> None:
    for mock in mocks:
        mock.configure(truncate_after=2)
    headers = {"x-api-key": ACME_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": model, "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with httpx.stream(
        "POST", router.url + "/v1/messages", json=body, headers=headers, timeout=10
    ) as answer:
        assert answer.status_code == 200
        lines = [line for line in answer.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names[0] == "message_start"
    assert names[-1] == "error"
    assert "message_stop" not in names
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    (record,) = wait_ledger(data_dir(tmp_path), 1)
    assert record["outcome"] != "success"


@pytest.mark.parametrize("model", ["translated", "native"])
def test_a_broken_response_stream_ends_failed(oai: openai.OpenAI, mocks: Mocks, model: str) -> None:
    for mock in mocks:
        mock.configure(truncate_after=2)
    kinds: list[str] = []
    with oai.responses.create(
        model=model, input="hello", max_output_tokens=10, stream=True
    ) as stream:
        for event in stream:
            kinds.append(event.type)
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.failed", "error")
    assert "response.completed" not in kinds


def test_responses_answered_when_the_store_cannot_keep_them(
    start_router: RouterFactory, config_data: dict[str, Any], tmp_path: Path
) -> None:
    """The responses store unusable (its file is a directory): the answer is still
    given, counted as not kept; reading it back is a 503, not a 500."""
    (data_dir(tmp_path) / "responses.sqlite3").mkdir(parents=True)
    router = start_router(protocol_config(config_data))
    with openai.OpenAI(api_key=ACME_KEY, base_url=router.url + "/v1", max_retries=0) as client:
        response = client.responses.create(model="native", input="hi", max_output_tokens=4)
        assert response.output_text == mock_text(4)
        with pytest.raises(openai.InternalServerError) as unavailable:
            client.responses.retrieve(response.id)
    assert unavailable.value.status_code == 503
    error = unavailable.value.response.json()["error"]
    assert error["code"] == "responses_unavailable"
    assert "Traceback" not in unavailable.value.response.text
    status = httpx.get(router.url + "/v1/status", headers={"authorization": f"Bearer {ACME_KEY}"})
    assert status.json()["responses"]["not_kept"] == 1


def test_every_backend_at_capacity_is_529_on_messages(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """The one backend at its max_in_flight (its request held by a hung mock):
    the next Messages request is shed as Anthropic sheds, 529 overloaded_error,
    while the chat route says the same thing as 503."""
    data = protocol_config(config_data)
    data["backends"]["mock-native"] = {
        **data["backends"]["mock-native"], "max_in_flight": 1, "read_timeout_s": 60,
    }  # fmt: skip
    router = start_router(data)
    for mock in mocks:
        mock.configure(hang=True)
    headers = {"x-api-key": ACME_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "native", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    # The held request stays at the hung mock until the router stops (teardown).
    pool = concurrent.futures.ThreadPoolExecutor(1)
    with (
        httpx.Client(base_url=router.url, headers=headers, timeout=30) as client,
        httpx.Client(base_url=router.url, headers=headers, timeout=120) as holder,
    ):
        held = pool.submit(holder.post, "/v1/messages", json=body)
        assert eventually(lambda: served(mocks, "/v1/messages") == 1, timeout=20)
        shed = client.post("/v1/messages", json=body)
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "native", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {ACME_KEY}"},
        )
        assert not held.done()
        router.stop()
        with contextlib.suppress(httpx.HTTPError):
            held.result(timeout=60)
    pool.shutdown()
    assert shed.status_code == 529
    assert shed.json()["type"] == "error"
    assert shed.json()["error"]["type"] == "overloaded_error"
    assert shed.json()["error"]["code"] == "overloaded"  # every backend at capacity
    assert chat.status_code == 503
    assert chat.json()["error"]["code"] == "overloaded"
