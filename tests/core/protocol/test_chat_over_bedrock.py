"""Chat completions to a Bedrock backend: the request refused or translated
faithfully, and Converse's answer (whole and streamed) back as chat."""

from __future__ import annotations

import itertools
from typing import Any

import openai.types.chat as chat_types
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.protocols import chat_over_bedrock as cb
from router_core.protocols import messages as m
from router_core.protocols.relay import BedrockToChatRelay

from tests.core.protocol.strategies import completions
from tests.core.protocol.test_chat_over_messages import _reassemble
from tests.core.protocol.test_messages_translation import requests

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STOPS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "content_filtered",
         "tool_calls": "tool_use"}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"seed": 1}, "seed"),
        ({"top_k": 5}, "top_k"),
        ({"user": "u1"}, "user"),
        ({"safety_settings": [{"category": "C", "threshold": "T"}]}, "safety_settings"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"},
         "tool_choice"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://img.test/a.png"}}]}]},
         "messages[0].content[0]"),
    ],
)  # fmt: skip
def test_what_converse_cannot_express_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as caught:
        cb.to_converse({**BASE, **extra})
    assert caught.value.problem.code == "unsupported_feature"
    assert caught.value.param == param


def test_the_request_translates() -> None:
    body = {
        "model": "m", "max_tokens": 20, "stop": ["END"], "temperature": 0.5,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "tu_1", "type": "function",
                 "function": {"name": "get", "arguments": '{"q": 1}'}}]},
            {"role": "tool", "tool_call_id": "tu_1", "content": '{"a": 2}'},
        ],
        "tools": [{"type": "function", "function": {"name": "get", "description": "d"}}],
        "tool_choice": {"type": "function", "function": {"name": "get"}},
    }  # fmt: skip
    sent = cb.to_converse(body)
    assert sent["system"] == [{"text": "be brief"}]
    assert sent["messages"] == [
        {"role": "user", "content": [
            {"text": "look"}, {"image": {"format": "png", "source": {"bytes": "AAAA"}}}]},
        {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "tu_1", "name": "get", "input": {"q": 1}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "tu_1", "content": [{"json": {"a": 2}}]}}]},
    ]  # fmt: skip
    assert sent["inferenceConfig"] == {
        "maxTokens": 20,
        "temperature": 0.5,
        "stopSequences": ["END"],
    }
    assert sent["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get", "description": "d",
                                "inputSchema": {"json": {"type": "object"}}}}],
        "toolChoice": {"tool": {"name": "get"}},
    }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(requests())
def test_every_messages_conversation_alternates_roles_for_converse(body: dict[str, Any]) -> None:
    try:
        sent = cb.to_converse(m.to_chat(body))
    except ClientError as exc:  # what Converse cannot express (url images, top_k, ...)
        assert exc.problem.code == "unsupported_feature"
        return
    roles = [turn["role"] for turn in sent["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert roles[0] == "user"


def converse_answer(c: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    if c["reasoning"]:
        blocks.append({"reasoningContent": {"reasoningText": {"text": c["reasoning"]}}})
    if c["content"]:
        blocks.append({"text": c["content"]})
    blocks += [{"toolUse": {"toolUseId": i, "name": n, "input": a}} for i, n, a in c["calls"]]
    return {
        "output": {"message": {"role": "assistant", "content": blocks}},
        "stopReason": STOPS[c["finish"]],
        "usage": {"inputTokens": c["prompt"], "cacheReadInputTokens": c["cached"],
                  "outputTokens": c["completion"]},
    }  # fmt: skip


def said(answer: dict[str, Any]) -> dict[str, Any]:
    (choice,) = answer["choices"]
    message, usage = choice["message"], answer["usage"]
    return {
        "content": message.get("content") or None,
        "reasoning": message.get("reasoning_content") or None,
        "calls": [
            (t["id"], t["function"]["name"], orjson.loads(t["function"]["arguments"]))
            for t in message.get("tool_calls") or ()
        ],
        "finish": choice["finish_reason"],
        "usage": (
            usage["prompt_tokens"],
            usage["prompt_tokens_details"]["cached_tokens"],
            usage["completion_tokens"],
        ),
    }


def expected(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": c["content"] or None,
        "reasoning": c["reasoning"] or None,
        "calls": list(c["calls"]),
        "finish": c["finish"],
        "usage": (c["prompt"] + c["cached"], c["cached"], c["completion"]),
    }


@settings(max_examples=200, deadline=None)
@given(completions)
def test_an_answer_reads_as_chat(c: dict[str, Any]) -> None:
    back = cb.chat_from_converse(converse_answer(c), model="pub", completion_id="cc1", created=5)
    chat_types.ChatCompletion.model_validate(back)
    assert said(back) == expected(c)


def stream_events(c: dict[str, Any], cut: int) -> list[dict[str, Any]]:
    """The answer as ConverseStream's decoded events, texts cut in pieces."""

    def pieces(s: str) -> list[str]:
        return [s[i : i + cut] for i in range(0, len(s), cut)]

    events: list[dict[str, Any]] = [{"type": "messageStart", "role": "assistant"}]
    index = 0
    if c["reasoning"]:
        events += [
            {
                "type": "contentBlockDelta",
                "contentBlockIndex": index,
                "delta": {"reasoningContent": {"text": p}},
            }
            for p in pieces(c["reasoning"])
        ]
        index += 1  # fmt: skip
    if c["content"]:
        events += [
            {"type": "contentBlockDelta", "contentBlockIndex": index, "delta": {"text": p}}
            for p in pieces(c["content"])
        ]
        index += 1  # fmt: skip
    for i, n, a in c["calls"]:
        events.append(
            {
                "type": "contentBlockStart",
                "contentBlockIndex": index,
                "start": {"toolUse": {"toolUseId": i, "name": n}},
            }
        )
        events += [
            {
                "type": "contentBlockDelta",
                "contentBlockIndex": index,
                "delta": {"toolUse": {"input": p}},
            }
            for p in pieces(orjson.dumps(a).decode())
        ]
        events.append({"type": "contentBlockStop", "contentBlockIndex": index})
        index += 1  # fmt: skip
    events.append({"type": "messageStop", "stopReason": STOPS[c["finish"]]})
    events.append({"type": "metadata", "usage": converse_answer(c)["usage"]})
    return events


@settings(max_examples=200, deadline=None)
@given(completions, st.integers(1, 7))
def test_a_stream_reads_as_chat_event_by_event(c: dict[str, Any], cut: int) -> None:
    relay = BedrockToChatRelay("pub", "cc1", 5, strip_usage=False)
    out = b"".join(relay.event(b"data: " + orjson.dumps(e)) for e in stream_events(c, cut))
    assert relay.done
    frames = [f for f in out.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    relayed = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    assert said(_reassemble(relayed)) == expected(c)
    assert relay.reported is not None
    assert relay.reported.cached_tokens == c["cached"]


def test_an_exception_frame_is_chats_error_and_not_done() -> None:
    relay = BedrockToChatRelay("pub", "cc1", 5, strip_usage=False)
    exception = {"type": "exception", "exception": "throttlingException", "message": "slow down"}
    out = relay.event(b"data: " + orjson.dumps(exception))
    assert orjson.loads(out[6:])["error"]["message"] == "throttlingException: slow down"
    assert not relay.done
