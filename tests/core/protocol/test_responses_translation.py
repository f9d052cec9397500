"""OpenAI Responses <-> chat: validation, round trips, and streams the SDK parses."""

from __future__ import annotations

from typing import Any

import openai.types.responses as r
import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.protocols import responses as rs

from tests.core.protocol.strategies import (
    chat_answer,
    chat_chunks,
    completions,
    ids,
    names,
    text,
    tool_input,
)

EVENTS: pydantic.TypeAdapter[r.ResponseStreamEvent] = pydantic.TypeAdapter(r.ResponseStreamEvent)

image_part = st.builds(
    lambda u, d: {"type": "input_image", "image_url": f"https://img.test/{u}", "detail": d},
    names,
    st.sampled_from(["low", "high", "auto"]),
)


def parts(kind: str, images: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    text_part = text.map(lambda t: {"type": kind, "text": t})
    return st.lists(st.one_of(text_part, image_part) if images else text_part, min_size=1,
                    max_size=3)  # fmt: skip


def message(role: str) -> st.SearchStrategy[dict[str, Any]]:
    kind = "output_text" if role == "assistant" else "input_text"
    return st.builds(
        lambda content: {"type": "message", "role": role, "content": content},
        st.one_of(text, parts(kind, images=role == "user")),
    )


calls = st.lists(
    st.builds(
        lambda i, n, a: {"type": "function_call", "call_id": i, "name": n,
                         "arguments": orjson.dumps(a).decode()},
        ids, names, tool_input,
    ),
    min_size=1, max_size=2, unique_by=lambda c: c["call_id"],
)  # fmt: skip


@st.composite
def turns(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An assistant turn (words, calls, or both) and what follows it: the calls'
    outputs, then perhaps a user message."""
    said = draw(st.lists(message("assistant"), max_size=1))
    made = draw(st.one_of(st.just([]), calls)) if said else draw(calls)
    outputs = [
        {"type": "function_call_output", "call_id": c["call_id"], "output": draw(text)}
        for c in made
    ]
    after = draw(st.lists(st.one_of(message("user"), message("developer")), max_size=1))
    return [*said, *made, *outputs, *after]


tools = st.lists(
    st.builds(
        lambda n, d: {"type": "function", "name": n, "description": d,
                      "parameters": {"type": "object", "properties": {}}},
        names, text,
    ),
    max_size=2, unique_by=lambda t: t["name"],
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    items = [draw(message("user"))]
    for _ in range(draw(st.integers(0, 3))):
        items += draw(turns())
    body: dict[str, Any] = {"model": "m", "input": items}
    if draw(st.booleans()):
        body = {"model": "m", "input": draw(text)}
    if draw(st.booleans()):
        body["instructions"] = draw(text)
    if draw(st.booleans()):
        body["max_output_tokens"] = draw(st.integers(1, 10_000))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 2))
    offered = draw(tools)
    if offered:
        body["tools"] = offered
        kind = draw(st.sampled_from(["auto", "none", "required", "function"]))
        body["tool_choice"] = (
            {"type": "function", "name": offered[0]["name"]} if kind == "function" else kind
        )
    return body


def normal(body: dict[str, Any]) -> dict[str, Any]:
    """What both sides express the same way: input as items, parts as (kind,
    value) with adjacent texts joined and empty ones dropped, `developer` as
    `system` (chat has no developer role)."""
    out = dict(body)
    items = []
    for item in rs.input_items(body):
        if item.get("type", "message") != "message":
            items.append(item)
            continue
        content = item["content"]
        given = [{"type": "text", "text": content}] if isinstance(content, str) else content
        merged: list[tuple[str, ...]] = []
        for part in given:
            if part["type"] == "input_image":
                merged.append(("image", part["image_url"], part.get("detail", "auto")))
            elif merged and merged[-1][0] == "text":
                merged[-1] = ("text", merged[-1][1] + part["text"])
            elif part["text"]:
                merged.append(("text", part["text"]))
        role = "system" if item["role"] == "developer" else item["role"]
        items.append({"role": role, "content": merged})
    out["input"] = items
    return out


@settings(max_examples=200, deadline=None)
@given(requests())
def test_responses_round_trip_through_chat(body: dict[str, Any]) -> None:
    checked = rs.validate_responses(orjson.loads(orjson.dumps(body)))
    assert checked.max_tokens == body.get("max_output_tokens")
    chat = rs.to_chat(body)
    if "instructions" in body:
        assert chat["messages"][0] == {"role": "system", "content": body["instructions"]}
    assert normal(rs.from_chat(chat)) == normal(body)


def test_expand_puts_the_stored_conversation_first() -> None:
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {"type": "message", "role": "assistant", "id": "msg_1",
         "content": [{"type": "output_text", "text": "two"}]},
    ]  # fmt: skip
    body = {"model": "m", "input": "three", "previous_response_id": "resp_1", "store": True}
    expanded = rs.expand(body, history)
    assert "previous_response_id" not in expanded
    assert expanded["input"][:2] == history
    assert expanded["input"][2]["content"] == [{"type": "input_text", "text": "three"}]
    chat = rs.to_chat(expanded)
    assert [m["content"] for m in chat["messages"]] == ["one", "two", "three"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"tool_choice": {"type": "file_search"}}, "file_search"),
        ({"input": [{"type": "message", "role": "user",
                     "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
        ({"input": [{"type": "message", "role": "user",
                     "content": [{"type": "input_image", "file_id": "f"}]}]}, "file_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"text": {"format": {"type": "grammar"}}}, "grammar"),
    ],
)  # fmt: skip
def test_what_chat_cannot_express_is_a_400_naming_it(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ClientError) as refused:
        rs.to_chat({"model": "m", "input": "hi", **change})
    assert refused.value.problem.code == "unsupported_feature"
    assert refused.value.status == 400
    assert named in refused.value.detail


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": "m"}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [{"type": "message", "role": "bot", "content": "x"}]},
         "input[0].role"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input[0].call_id"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
         "input[0].output"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": -3}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": 2.5}, "temperature"),
        ({"model": "m", "input": "x", "top_p": -1}, "top_p"),
        ({"model": "m", "input": "x", "store": "yes"}, "store"),
        ({"model": "m", "input": "x", "previous_response_id": ""}, "previous_response_id"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "x", "instructions": 3}, "instructions"),
    ],
)  # fmt: skip
def test_bad_responses_requests_name_the_field(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ClientError) as refused:
        rs.validate_responses(body)
    assert refused.value.problem.code == "validation_failed"
    assert path in [e["path"] for e in refused.value.extra["errors"]]


def test_previous_response_id_stands_in_for_input() -> None:
    checked = rs.validate_responses({"model": "m", "previous_response_id": "resp_1"})
    assert checked.model == "m"


# --- answers and streams ---------------------------------------------------------------------

REQUEST = {"model": "pub", "input": "hi", "max_output_tokens": 64, "metadata": {"team": "a"}}


def whole_answer(c: dict[str, Any]) -> dict[str, Any]:
    return rs.response_from_chat(
        chat_answer(c), response_id="resp_7", model="pub", created_at=1, request=REQUEST
    )


@settings(max_examples=150, deadline=None)
@given(completions, st.integers(1, 7))
def test_streams_translate_to_the_same_response_as_the_answer(c: dict[str, Any], cut: int) -> None:
    whole = whole_answer(c)
    r.Response.model_validate(whole)
    translator = rs.StreamFromChat(response_id="resp_7", model="pub", created_at=1, request=REQUEST)
    events = [e for chunk in chat_chunks(c, cut) for e in translator.feed(chunk)]
    events += translator.finish()
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.completed") + kinds.count("response.incomplete") == 1
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # Every item is added, filled and done before the next one is added.
    built: list[dict[str, Any]] = []
    open_item: dict[str, Any] | None = None
    for event in events:
        EVENTS.validate_python(event)  # the SDK's own event types parse it
        kind = event["type"]
        if kind == "response.output_item.added":
            assert open_item is None
            assert event["output_index"] == len(built)
            open_item = {"id": event["item"]["id"], "type": event["item"]["type"], "text": ""}
        elif kind.endswith(".delta"):
            assert open_item is not None
            assert event["item_id"] == open_item["id"]
            assert event["output_index"] == len(built)
            open_item["text"] += event["delta"]
        elif kind == "response.output_item.done":
            assert open_item is not None
            assert event["item"]["id"] == open_item["id"]
            built.append(event["item"])
            streamed = {"message": "", "reasoning": "", "function_call": ""}
            item = event["item"]
            if item["type"] == "message":
                streamed["message"] = item["content"][0]["text"]
            elif item["type"] == "reasoning":
                streamed["reasoning"] = item["content"][0]["text"]
            else:
                streamed["function_call"] = item["arguments"]
            assert streamed[item["type"]] == open_item["text"]
            open_item = None
    assert open_item is None
    final = events[-1]["response"]
    assert final == translator.response
    assert built == final["output"]
    assert final == whole
    r.Response.model_validate(final)


@settings(max_examples=100, deadline=None)
@given(completions)
def test_usage_maps_both_ways(c: dict[str, Any]) -> None:
    usage = whole_answer(c)["usage"]
    assert usage["input_tokens"] == c["prompt"] + c["cached"]
    counts = rs.usage_counts(usage)
    assert counts is not None
    assert counts.prompt_tokens == c["prompt"] + c["cached"]
    assert counts.cached_tokens == c["cached"]
    assert counts.completion_tokens == c["completion"]
    assert counts.total_tokens == counts.prompt_tokens + counts.completion_tokens


def test_length_is_incomplete_for_max_output_tokens() -> None:
    c: dict[str, Any] = {"reasoning": None, "content": "cut", "calls": [], "finish": "length",
         "prompt": 3, "cached": 0, "completion": 64}  # fmt: skip
    whole = whole_answer(c)
    assert whole["status"] == "incomplete"
    assert whole["incomplete_details"] == {"reason": "max_output_tokens"}
    translator = rs.StreamFromChat(response_id="resp_7", model="pub", created_at=1, request=REQUEST)
    for chunk in chat_chunks(c, 2):
        translator.feed(chunk)
    assert translator.finish()[-1]["type"] == "response.incomplete"


def test_a_broken_stream_ends_with_response_failed() -> None:
    translator = rs.StreamFromChat(response_id="resp_7", model="pub", created_at=1, request=REQUEST)
    translator.feed({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
    (event,) = translator.failed("backend gone")
    EVENTS.validate_python(event)
    assert event["type"] == "response.failed"
    assert event["response"]["status"] == "failed"
    assert event["response"]["error"] == {"code": "server_error", "message": "backend gone"}
    assert rs.encode_event(event).startswith(b"event: response.failed\ndata: {")
