"""Request validation: field paths, pass-through of unknown fields."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.requests import Operation, validate_inference, validate_openai

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def paths_of(operation: Operation | None, body: object) -> list[str]:
    with pytest.raises(ClientError) as info:
        validate_inference(body) if operation is None else validate_openai(operation, body)
    assert info.value.status == 422
    return [e["path"] for e in info.value.extra["errors"]]


def test_valid_chat_keeps_unknown_fields() -> None:
    body = {**CHAT, "stream": True, "max_tokens": 5, "logit_bias": {"1": 2}, "new_param": [1]}
    request = validate_openai(Operation.CHAT, body)
    assert request.stream
    assert request.max_tokens == 5
    assert request.body["new_param"] == [1]


def test_max_completion_tokens_wins() -> None:
    request = validate_openai(Operation.CHAT, {**CHAT, "max_tokens": 5, "max_completion_tokens": 7})
    assert request.max_tokens == 7


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({}, ["model", "messages"]),
        ({"model": "", "messages": []}, ["model", "messages"]),
        ({"model": "m", "messages": [{"content": "x"}, 3]}, ["messages[0].role", "messages[1]"]),
        (
            {**CHAT, "stream": "yes", "max_tokens": 0, "temperature": 3},
            ["stream", "max_tokens", "temperature"],
        ),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, ["messages[0].content"]),
        ({**CHAT, "n": True, "top_p": -1, "stream_options": []}, ["n", "top_p", "stream_options"]),
    ],
)
def test_chat_problems_have_paths(body: dict[str, Any], paths: list[str]) -> None:
    assert paths_of(Operation.CHAT, body) == paths


@pytest.mark.parametrize("body", [None, [], "x", 1.5])
def test_body_must_be_an_object(body: object) -> None:
    assert paths_of(Operation.CHAT, body) == [""]


def test_completions_and_embeddings() -> None:
    assert validate_openai(Operation.COMPLETION, {"model": "m", "prompt": ["a", "b"]})
    assert validate_openai(Operation.EMBEDDING, {"model": "m", "input": [[1, 2], [3]]})
    assert paths_of(Operation.COMPLETION, {"model": "m", "prompt": []}) == ["prompt"]
    assert paths_of(Operation.EMBEDDING, {"model": "m", "input": {"a": 1}}) == ["input"]


def test_inference_contract() -> None:
    rid = str(uuid.uuid4())
    request = validate_inference(
        {
            "request_id": rid,
            "model": "m",
            "payload": {"messages": [{"role": "user", "content": "hi"}]},
        }
    )
    assert request.request_id == rid
    assert request.body["model"] == "m"
    assert request.operation is Operation.CHAT
    embed = validate_inference(
        {"request_id": rid, "model": "e", "operation": "embedding", "payload": {"input": "x"}}
    )
    assert embed.operation is Operation.EMBEDDING


def test_inference_problems() -> None:
    assert paths_of(None, {"request_id": "nope", "payload": {"messages": "x", "stream": True}}) == [
        "request_id",
        "model",
        "payload.messages",
        "payload.stream",
    ]
    assert paths_of(
        None,
        {
            "request_id": str(uuid.uuid4()),
            "model": "m",
            "operation": "x",
            "payload": {"messages": [{"role": "u"}], "model": "n"},
        },
    ) == ["operation", "payload.model"]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_either_validates_or_is_a_422(body: object) -> None:
    for operation in Operation:
        try:
            validate_openai(operation, body)
        except ClientError as exc:
            assert exc.status == 422
    try:
        validate_inference(body)
    except ClientError as exc:
        assert exc.status == 422


@pytest.mark.parametrize(
    "value",
    ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]], [1.0, 2.0]],
)
def test_the_four_openai_input_forms(value: object) -> None:
    request = validate_openai(Operation.EMBEDDING, {"model": "m", "input": value})
    forwarded = request.body["input"]
    assert forwarded == value
    assert all(not isinstance(v, float) for v in (forwarded if isinstance(forwarded, list) else []))


@pytest.mark.parametrize(
    "value",
    [[], ["a", 1], [[]], [-1], [2**40], [[1], "a"], [1.5], {"a": 1}, None, 3],
)
def test_other_inputs_are_refused(value: object) -> None:
    assert paths_of(Operation.EMBEDDING, {"model": "m", "input": value}) == ["input"]


def test_integral_floats_are_integers_and_forwarded_as_such() -> None:
    request = validate_openai(Operation.CHAT, {**CHAT, "max_tokens": 4.0, "n": 1.0})
    assert request.max_tokens == 4
    assert type(request.body["max_tokens"]) is int
    assert type(request.body["n"]) is int
    assert paths_of(Operation.CHAT, {**CHAT, "max_tokens": 4.5}) == ["max_tokens"]


def test_optional_fields_may_be_null() -> None:
    body = {**CHAT, "stream": None, "max_tokens": None, "temperature": None, "n": None}
    request = validate_openai(Operation.CHAT, body)
    assert not request.stream
    assert request.max_tokens is None
