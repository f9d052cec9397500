"""Chat completions to an Anthropic backend: the request refused or translated
faithfully, and the answer (whole and streamed) back to what chat said."""

from __future__ import annotations

from typing import Any

import openai.types.chat as chat_types
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.protocols import chat_over_messages as cm
from router_core.protocols import messages as m
from router_core.protocols.relay import ChatToResponsesRelay, MessagesToChatRelay, ThroughChat

from tests.core.protocol.strategies import chat_answer, chat_chunks, completions
from tests.core.protocol.test_messages_translation import normal, requests

BASE = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
# What chat says the same way after a trip through Messages.
SAME_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
               "content_filter": "content_filter"}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"seed": 7}, "seed"),
        ({"safety_settings": [{"category": "C", "threshold": "T"}]}, "safety_settings"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}]},
            "messages[1]",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    ],
)
def test_what_messages_cannot_express_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as caught:
        cm.to_messages({**BASE, **extra})
    assert caught.value.problem.code == "unsupported_feature"
    assert caught.value.param == param
    assert "Anthropic Messages" in caught.value.detail


def test_neutral_values_pass_and_defaults_are_filled() -> None:
    body = {**BASE, "n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0,
            "response_format": {"type": "text"}, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    sent = cm.to_messages(body)
    assert sent["max_tokens"] == cm.DEFAULT_MAX_TOKENS
    assert sent["stream"] is True
    assert "stream_options" not in sent  # a Messages stream always reports usage
    assert set(sent) == {"model", "messages", "max_tokens", "stream"}


def test_system_tools_and_choices_translate() -> None:
    tool = {"type": "function", "function": {"name": "get", "description": "d",
                                             "parameters": {"type": "object"}}}  # fmt: skip
    body = {
        "model": "claude", "max_completion_tokens": 50, "stop": "END", "user": "u1",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get", "arguments": '{"q": 1}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "tools": [tool], "tool_choice": "required", "parallel_tool_calls": False,
    }  # fmt: skip
    sent = cm.to_messages(body)
    assert sent["system"] == "be brief"
    assert sent["max_tokens"] == 50
    assert sent["stop_sequences"] == ["END"]
    assert sent["metadata"] == {"user_id": "u1"}
    assert sent["tools"] == [{"name": "get", "description": "d",
                              "input_schema": {"type": "object"}}]  # fmt: skip
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "get", "input": {"q": 1}}]}  # fmt: skip
    assert sent["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "42"}]}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(requests())
def test_a_messages_request_round_trips_through_chat_to_an_anthropic_backend(
    body: dict[str, Any],
) -> None:
    """Messages -> chat (for an openai backend) -> Messages (for an anthropic one)."""
    assert normal(cm.to_messages(m.to_chat(body))) == normal(body)


def _as_chat(answer: dict[str, Any]) -> dict[str, Any]:
    """What a chat answer says: content, reasoning, tool calls, finish, usage."""
    (choice,) = answer["choices"]
    message = choice["message"]
    usage = answer["usage"]
    return {
        "content": message.get("content") or None,
        "reasoning": message.get("reasoning_content") or None,
        "calls": [
            (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
            for c in message.get("tool_calls") or ()
        ],
        "finish": SAME_FINISH[choice["finish_reason"]],
        "prompt": usage["prompt_tokens"],
        "cached": usage["prompt_tokens_details"]["cached_tokens"],
        "completion": usage["completion_tokens"],
    }


def _expected(c: dict[str, Any]) -> dict[str, Any]:
    return _as_chat(chat_answer(c))


@settings(max_examples=200, deadline=None)
@given(completions)
def test_an_answer_round_trips_through_messages(c: dict[str, Any]) -> None:
    message = m.response_from_chat(chat_answer(c), model="claude", message_id="msg_1")
    back = cm.chat_from_message(message, model="pub", completion_id="chatcmpl-1", created=5)
    chat_types.ChatCompletion.model_validate(back)  # the SDK's own type parses it
    assert (back["id"], back["model"], back["created"]) == ("chatcmpl-1", "pub", 5)
    assert _as_chat(back) == _expected(c)


def _reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    content, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    finish, usage = None, None
    for chunk in chunks:
        chat_types.ChatCompletionChunk.model_validate(chunk)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(call["index"], {"id": None, "name": None, "args": ""})
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] = (call.get("function") or {}).get("name") or slot["name"]
                slot["args"] += (call.get("function") or {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": s["id"], "type": "function",
             "function": {"name": s["name"], "arguments": s["args"]}}
            for _, s in sorted(calls.items())
        ]  # fmt: skip
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(completions, st.integers(1, 7))
def test_a_stream_round_trips_through_messages_event_by_event(c: dict[str, Any], cut: int) -> None:
    """chat chunks -> Messages events (as an Anthropic backend would stream them)
    -> the relay's chat chunks: the same answer, usage included."""
    anthropic = m.StreamFromChat(model="claude", message_id="msg_1")
    events = [e for chunk in chat_chunks(c, cut) for e in anthropic.feed(chunk)]
    events += anthropic.finish()
    relay = MessagesToChatRelay("pub", "chatcmpl-1", 5, strip_usage=False)
    out = b"".join(relay.event(m.encode_event(name, data).rstrip(b"\n")) for name, data in events)
    assert relay.done
    frames = [f for f in out.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    chunks = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    assert all(chunk["model"] == "pub" for chunk in chunks)
    assert _as_chat(_reassemble(chunks)) == _expected(c)
    assert relay.reported is not None
    assert relay.reported.cached_tokens == c["cached"]
    assert relay.content_events == sum(1 for name, _ in events if name == "content_block_delta")


def test_the_usage_chunk_is_only_for_clients_that_asked() -> None:
    relay = MessagesToChatRelay("pub", "chatcmpl-1", 5, strip_usage=True)
    stream: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "yo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 1}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    out = b"".join(relay.event(m.encode_event(n, d).rstrip(b"\n")) for n, d in stream)
    chunks = [orjson.loads(f[6:]) for f in out.split(b"\n\n") if f and f != b"data: [DONE]"]
    assert not any(chunk.get("usage") for chunk in chunks)
    assert relay.reported is not None
    assert (relay.reported.prompt_tokens, relay.reported.completion_tokens) == (3, 1)


def test_an_error_event_mid_stream_is_chats_error_and_not_done() -> None:
    relay = MessagesToChatRelay("pub", "chatcmpl-1", 5, strip_usage=False)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = relay.event(m.encode_event("error", error).rstrip(b"\n"))
    assert orjson.loads(out[6:])["error"]["message"] == "Overloaded"
    assert not relay.done


def test_responses_go_through_chat_to_messages_and_back() -> None:
    relay = ThroughChat(
        MessagesToChatRelay("pub", "resp_1", 5, strip_usage=False),
        ChatToResponsesRelay("pub", "resp_1", 5, {"model": "pub", "input": "hi"}),
    )
    anthropic = m.StreamFromChat(model="claude", message_id="msg_1")
    c: dict[str, Any] = {"reasoning": None, "content": "hello there", "calls": [], "finish": "stop",
         "prompt": 4, "cached": 0, "completion": 2}  # fmt: skip
    events = [e for chunk in chat_chunks(c, 3) for e in anthropic.feed(chunk)] + anthropic.finish()
    out = b"".join(relay.event(m.encode_event(n, d).rstrip(b"\n")) for n, d in events)
    assert b"response.completed" in out
    assert relay.done
    assert relay.response is not None
    assert relay.response["output"][0]["content"][0]["text"] == "hello there"
    assert relay.reported is not None
    assert relay.reported.completion_tokens == 2
