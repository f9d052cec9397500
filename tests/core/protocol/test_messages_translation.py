"""Anthropic Messages <-> chat: validation, round trips, and streams the SDK parses."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.protocols import messages as m

from tests.core.protocol.strategies import (
    chat_answer,
    chat_chunks,
    completions,
    ids,
    names,
    text,
    tool_input,
)

text_block = st.builds(lambda t: {"type": "text", "text": t}, text)
image_block = st.one_of(
    st.builds(
        lambda d: {"type": "image",
                   "source": {"type": "base64", "media_type": "image/png", "data": d}},
        st.from_regex(r"[A-Za-z0-9+/]{4,16}", fullmatch=True),
    ),
    st.builds(
        lambda u: {"type": "image", "source": {"type": "url", "url": f"https://img.test/{u}"}},
        names,
    ),
)  # fmt: skip
tool_result = st.builds(
    lambda i, t: {"type": "tool_result", "tool_use_id": i, "content": t}, ids, text
)
user_turn = st.one_of(
    text.map(lambda t: {"role": "user", "content": t}),
    st.builds(
        lambda results, rest: {"role": "user", "content": [*results, *rest]},
        st.lists(tool_result, max_size=2),
        st.lists(st.one_of(text_block, image_block), min_size=1, max_size=3),
    ),
)
assistant_turn = st.one_of(
    text.map(lambda t: {"role": "assistant", "content": t}),
    st.builds(
        lambda said, calls: {"role": "assistant", "content": [*said, *calls]},
        st.lists(text_block, max_size=1),
        st.lists(
            st.builds(lambda i, n, a: {"type": "tool_use", "id": i, "name": n, "input": a},
                      ids, names, tool_input),
            min_size=1, max_size=2,
        ),
    ),
)  # fmt: skip
tools = st.lists(
    st.builds(
        lambda n, d: {"name": n, "description": d,
                      "input_schema": {"type": "object", "properties": {}}},
        names, text,
    ),
    max_size=2, unique_by=lambda t: t["name"],
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    turns = draw(st.integers(0, 3))
    # Tool results only follow an assistant turn.
    conversation: list[dict[str, Any]] = [{"role": "user", "content": draw(text)}]
    for _ in range(turns):
        conversation += [draw(assistant_turn), draw(user_turn)]
    body: dict[str, Any] = {
        "model": "m",
        "messages": conversation,
        "max_tokens": draw(st.integers(1, 10_000)),
    }
    if draw(st.booleans()):
        body["system"] = draw(text)
    if draw(st.booleans()):
        body["stop_sequences"] = draw(st.lists(text, min_size=1, max_size=3))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    offered = draw(tools)
    if offered:
        body["tools"] = offered
        kind = draw(st.sampled_from(["auto", "any", "tool", "none"]))
        choice: dict[str, Any] = {"type": kind}
        if kind == "tool":
            choice["name"] = offered[0]["name"]
        body["tool_choice"] = choice
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(names)}
    return body


def normal(body: dict[str, Any]) -> dict[str, Any]:
    """What both sides express the same way: content as blocks, adjacent text
    blocks joined (chat joins text parts), no empty text."""
    out = dict(body)
    conversation = []
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        merged: list[dict[str, Any]] = []
        for block in blocks:
            if block["type"] == "text" and merged and merged[-1]["type"] == "text":
                merged[-1] = {"type": "text", "text": merged[-1]["text"] + block["text"]}
            elif block["type"] != "text" or block["text"]:
                merged.append(dict(block))
        conversation.append({"role": message["role"], "content": merged})
    out["messages"] = conversation
    return out


@settings(max_examples=200, deadline=None)
@given(requests())
def test_messages_round_trip_through_chat(body: dict[str, Any]) -> None:
    assert m.validate_messages(orjson.loads(orjson.dumps(body))).max_tokens == body["max_tokens"]
    chat = m.to_chat(body)
    assert chat["messages"][0]["role"] == ("system" if "system" in body else "user")
    assert normal(m.from_chat(chat)) == normal(body)


def test_tool_result_error_and_thinking_are_carried_as_documented() -> None:
    body = {
        "model": "m", "max_tokens": 9000,
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "t1", "name": "ls", "input": {"p": "."}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                 "content": [{"type": "text", "text": "denied"}], "cache_control": {}},
            ]},
        ],
    }  # fmt: skip
    chat = m.to_chat(body)
    assert chat["reasoning_effort"] == "medium"
    assert chat["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "t1", "type": "function",
                        "function": {"name": "ls", "arguments": '{"p":"."}'}}],
    }  # fmt: skip
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "Error: denied"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "'document'"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search"),
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                        "content": [{"type": "image", "source": {}}]}]}]}, "'image'"),
    ],
)  # fmt: skip
def test_what_chat_cannot_express_is_a_400_naming_it(change: dict[str, Any], named: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ClientError) as refused:
        m.to_chat({**body, **change})
    assert refused.value.problem.code == "unsupported_feature"
    assert refused.value.status == 400
    assert named in refused.value.detail


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
         "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
         "messages[0].role"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{}]}]},
         "messages[0].content[0].type"),
        ({"model": "m", "max_tokens": 5, "temperature": 1.5,
          "messages": [{"role": "user", "content": "x"}]}, "temperature"),
        ({"model": "m", "max_tokens": 5, "stop_sequences": "x",
          "messages": [{"role": "user", "content": "x"}]}, "stop_sequences"),
        ({"model": "m", "max_tokens": 5, "tool_choice": {"type": "tool"},
          "messages": [{"role": "user", "content": "x"}]}, "tool_choice.name"),
        ({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 4000},
          "messages": [{"role": "user", "content": "x"}]}, "thinking.budget_tokens"),
        ({"model": "m", "max_tokens": 5, "system": [{"type": "image"}],
          "messages": [{"role": "user", "content": "x"}]}, "system[0]"),
    ],
)  # fmt: skip
def test_bad_messages_requests_name_the_field(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ClientError) as refused:
        m.validate_messages(body)
    assert refused.value.problem.code == "validation_failed"
    assert path in [e["path"] for e in refused.value.extra["errors"]]


# --- answers and streams ---------------------------------------------------------------------


EVENTS: pydantic.TypeAdapter[anthropic.types.RawMessageStreamEvent] = pydantic.TypeAdapter(
    anthropic.types.RawMessageStreamEvent
)


@settings(max_examples=150, deadline=None)
@given(completions, st.integers(1, 7))
def test_streams_translate_to_the_same_message_as_the_answer(c: dict[str, Any], cut: int) -> None:
    whole = m.response_from_chat(chat_answer(c), model="pub", message_id="msg_1")
    anthropic.types.Message.model_validate(whole)
    translator = m.StreamFromChat(model="pub", message_id="msg_1")
    events = [e for chunk in chat_chunks(c, cut) for e in translator.feed(chunk)]
    events += translator.finish()
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names.count("ping") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    # Every block is opened, filled and closed before the next one opens.
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for name, data in events:
        assert data["type"] == name
        if name == "ping":  # the SDK skips pings; it has no type for them
            continue
        EVENTS.validate_python(data)  # the SDK's own event types parse it
        if name == "content_block_start":
            assert open_index is None
            assert data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append({**data["content_block"], "json": ""})
        elif name == "content_block_delta":
            assert data["index"] == open_index
            d, block = data["delta"], blocks[-1]
            if d["type"] == "text_delta":
                block["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                block["thinking"] += d["thinking"]
            else:
                block["json"] += d["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    for block in blocks:
        if block["type"] == "tool_use":
            block["input"] = orjson.loads(block["json"]) if block["json"] else {}
        del block["json"]
    assert blocks == whole["content"]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == whole["stop_reason"]
    assert final["usage"] == whole["usage"]
    assert whole["usage"]["input_tokens"] == c["prompt"]
    counts = m.usage_counts(whole["usage"])
    assert counts is not None
    assert counts.prompt_tokens == c["prompt"] + c["cached"]
    assert counts.cached_tokens == c["cached"]


def test_a_broken_stream_ends_with_an_error_event() -> None:
    translator = m.StreamFromChat(model="pub", message_id="msg_1")
    translator.feed({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
    ((name, data),) = translator.error("backend gone")
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "backend gone"}}
    assert m.encode_event(name, data).startswith(b"event: error\ndata: {")
