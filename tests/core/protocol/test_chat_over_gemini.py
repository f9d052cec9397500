"""Chat completions to a Gemini backend: the request refused or translated
faithfully, and the answer (whole and streamed) back as chat."""

from __future__ import annotations

import itertools
from typing import Any

import openai.types.chat as chat_types
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.protocols import chat_over_gemini as cg
from router_core.protocols import messages as m
from router_core.protocols.relay import GeminiToChatRelay, relay_for
from router_core.requests import Operation

from tests.core.protocol.strategies import completions
from tests.core.protocol.test_chat_over_messages import _reassemble
from tests.core.protocol.test_messages_translation import requests

BASE = {"model": "gemini", "messages": [{"role": "user", "content": "hi"}]}
GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY",
                 "tool_calls": "STOP"}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 3}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 1}}, "logit_bias"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, "messages[0].name"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "messages[0].content[0]"),
        ({"tools": [{"type": "custom"}]}, "tools[0]"),
    ],
)  # fmt: skip
def test_what_gemini_cannot_express_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as caught:
        cg.to_gemini({**BASE, **extra})
    assert caught.value.problem.code == "unsupported_feature"
    assert caught.value.param == param


def test_a_tool_message_must_answer_an_earlier_call() -> None:
    body = {**BASE, "messages": [{"role": "tool", "tool_call_id": "c9", "content": "x"}]}
    with pytest.raises(ClientError) as caught:
        cg.to_gemini(body)
    assert caught.value.param == "messages[0].tool_call_id"


def test_the_request_translates() -> None:
    body = {
        "model": "gemini", "max_tokens": 50, "stop": "END", "temperature": 0.2, "seed": 3,
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get", "arguments": '{"q": 1}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"answer": 42}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "plain"},
        ],
        "tools": [{"type": "function", "function": {"name": "get", "parameters": {}}}],
        "tool_choice": "required", "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    sent = cg.to_gemini(body)
    assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "what is this"},
                                   {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get", "args": {"q": 1}}}]},
        # Both results in one user turn: Gemini alternates roles.
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get", "response": {"answer": 42}}},
            {"functionResponse": {"name": "get", "response": {"content": "plain"}}}]},
    ]  # fmt: skip
    assert sent["generationConfig"] == {
        "maxOutputTokens": 50, "temperature": 0.2, "seed": 3, "stopSequences": ["END"],
        "responseMimeType": "application/json", "responseSchema": {"type": "object"},
    }  # fmt: skip
    assert sent["tools"] == [{"functionDeclarations": [{"name": "get", "parameters": {}}]}]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert "model" not in sent
    assert "stream" not in sent


@settings(max_examples=200, deadline=None)
@given(requests())
def test_every_messages_conversation_alternates_roles_for_gemini(body: dict[str, Any]) -> None:
    """Messages -> chat -> Gemini: every turn kept, roles alternating, each
    function response named after its call."""
    try:
        sent = cg.to_gemini(m.to_chat(body))
    except ClientError as exc:
        # What Gemini cannot express, or a tool result answering no call in
        # the conversation (the generator makes those; Gemini needs the name).
        assert exc.problem.code == "unsupported_feature" or (
            exc.problem.code == "validation_failed" and str(exc.param).endswith("tool_call_id")
        )
        return
    roles = [c["role"] for c in sent["contents"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    called = {p["functionCall"]["name"] for c in sent["contents"] for p in c["parts"]
              if "functionCall" in p}  # fmt: skip
    answered = {p["functionResponse"]["name"] for c in sent["contents"] for p in c["parts"]
                if "functionResponse" in p}  # fmt: skip
    assert answered <= called


def gemini_answer(c: dict[str, Any], finish: bool = True) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if c["reasoning"]:
        parts.append({"text": c["reasoning"], "thought": True})
    if c["content"]:
        parts.append({"text": c["content"]})
    parts += [{"functionCall": {"name": n, "args": a}} for _, n, a in c["calls"]]
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = GEMINI_FINISH[c["finish"]]
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": c["prompt"] + c["cached"],
                          "cachedContentTokenCount": c["cached"],
                          "candidatesTokenCount": c["completion"], "thoughtsTokenCount": 7},
    }  # fmt: skip


def expected(c: dict[str, Any], completion_id: str) -> dict[str, Any]:
    finish = c["finish"]
    if c["calls"] and finish == "stop":
        finish = "tool_calls"
    elif finish == "tool_calls" and not c["calls"]:
        finish = "stop"
    return {
        "content": c["content"] or None,
        "reasoning": c["reasoning"] or None,
        "calls": [(f"call_{completion_id}_{i}", n, a) for i, (_, n, a) in enumerate(c["calls"])],
        "finish": finish,
        "usage": (c["prompt"] + c["cached"], c["cached"], c["completion"] + 7),
    }


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


@settings(max_examples=200, deadline=None)
@given(completions)
def test_an_answer_reads_as_chat(c: dict[str, Any]) -> None:
    back = cg.chat_from_gemini(gemini_answer(c), model="pub", completion_id="cc1", created=5)
    chat_types.ChatCompletion.model_validate(back)
    assert said(back) == expected(c, "cc1")
    counts = cg.usage_counts(gemini_answer(c)["usageMetadata"])
    assert counts is not None
    assert counts.reasoning_tokens == 7


@settings(max_examples=200, deadline=None)
@given(completions, st.integers(1, 7))
def test_a_stream_reads_as_chat_chunk_by_chunk(c: dict[str, Any], cut: int) -> None:
    """Gemini's partial answers (text in pieces, calls whole, the finish last)
    through the relay: the same answer as the whole one, usage included."""
    whole = gemini_answer(c)
    pieces: list[dict[str, Any]] = []
    for part in whole["candidates"][0]["content"]["parts"]:
        text = part.get("text")
        chunks = [text[i : i + cut] for i in range(0, len(text), cut)] if text else [None]
        for piece in chunks:
            partial = dict(part) if piece is None else {**part, "text": piece}
            pieces.append({"candidates": [{"content": {"role": "model", "parts": [partial]}}]})
    finish = {"candidates": [{"content": {"role": "model", "parts": []},
                              "finishReason": whole["candidates"][0]["finishReason"]}],
              "usageMetadata": whole["usageMetadata"]}  # fmt: skip
    relay = GeminiToChatRelay("pub", "cc1", 5, strip_usage=False)
    out = b"".join(relay.event(b"data: " + orjson.dumps(p)) for p in [*pieces, finish])
    assert relay.done
    assert relay.event(b"data: " + orjson.dumps(finish)) == b""  # nothing after the end
    frames = [f for f in out.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    relayed = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    assert said(_reassemble(relayed)) == expected(c, "cc1")
    assert relay.reported is not None
    assert relay.reported.cached_tokens == c["cached"]


def test_a_stream_for_messages_clients_goes_through_chat() -> None:
    relay = relay_for(Operation.MESSAGES, Operation.GEMINI, "pub", strip_usage=True,
                      answer_id="msg_1", created_at=5, request={})  # fmt: skip
    c: dict[str, Any] = {"reasoning": None, "content": "hello", "calls": [], "finish": "stop",
                         "prompt": 3, "cached": 0, "completion": 1}  # fmt: skip
    out = relay.event(b"data: " + orjson.dumps(gemini_answer(c)))
    names = [line[7:] for line in out.split(b"\n") if line.startswith(b"event: ")]
    assert names[0] == b"message_start"
    assert names[-1] == b"message_stop"
    assert relay.done
    assert b'"text":"hello"' in out


def test_an_error_chunk_ends_the_stream_as_chats_error() -> None:
    relay = GeminiToChatRelay("pub", "cc1", 5, strip_usage=False)
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    out = relay.event(b"data: " + orjson.dumps(error))
    assert orjson.loads(out[6:])["error"]["message"] == "The model is overloaded."
    assert not relay.done


def test_safety_settings_become_gemini_safety_settings() -> None:
    settings = [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "safety_settings": settings}  # fmt: skip
    assert cg.to_gemini(body)["safetySettings"] == settings
