"""Request validation: field paths, pass-through of unknown fields."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.requests import (
    INFERENCE_OPERATIONS,
    Operation,
    validate_inference,
    validate_openai,
)

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
    for operation in INFERENCE_OPERATIONS:
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


# Every number a client sends: (operation, field, low, high, integers only).
COUNT = 2**31 - 1
NUMBERS = [
    (Operation.CHAT, "max_tokens", 1, COUNT, True),
    (Operation.CHAT, "max_completion_tokens", 1, COUNT, True),
    (Operation.CHAT, "n", 1, COUNT, True),
    (Operation.CHAT, "top_logprobs", 0, COUNT, True),
    (Operation.CHAT, "seed", -(2**63), 2**63 - 1, True),
    (Operation.CHAT, "temperature", 0, 2, False),
    (Operation.CHAT, "top_p", 0, 1, False),
    (Operation.CHAT, "presence_penalty", -2, 2, False),
    (Operation.CHAT, "frequency_penalty", -2, 2, False),
    (Operation.COMPLETION, "max_tokens", 1, COUNT, True),
    (Operation.COMPLETION, "n", 1, COUNT, True),
    (Operation.COMPLETION, "best_of", 1, COUNT, True),
    (Operation.COMPLETION, "logprobs", 0, COUNT, True),
    (Operation.COMPLETION, "seed", -(2**63), 2**63 - 1, True),
    (Operation.COMPLETION, "temperature", 0, 2, False),
    (Operation.COMPLETION, "top_p", 0, 1, False),
    (Operation.COMPLETION, "presence_penalty", -2, 2, False),
    (Operation.COMPLETION, "frequency_penalty", -2, 2, False),
    (Operation.EMBEDDING, "dimensions", 1, COUNT, True),
]
BASES: dict[Operation, dict[str, Any]] = {
    Operation.CHAT: CHAT,
    Operation.COMPLETION: {"model": "m", "prompt": "hi"},
    Operation.EMBEDDING: {"model": "m", "input": "hi"},
}
# Unbounded integers, floats of every kind (NaN and the infinities included, though
# the JSON parser never makes them), and the edges of every range.
ANY_NUMBER = (
    st.integers()
    | st.floats()
    | st.integers(-(2**64), 2**64).map(float)
    | st.sampled_from([2**53, 2**53 + 1, 10**15, 2**64, 2**63, -(2**63) - 1, COUNT + 1, -1, 0])
)


def accepted(value: float, bounds: tuple[int, int, bool]) -> bool:
    """Whether the document's range admits `value` (a float is an exact integer only
    up to 2**53: the JSON parser makes floats of integers beyond 64 bits)."""
    low, high, integral = bounds
    if integral and isinstance(value, float) and not (value.is_integer() and abs(value) <= 2**53):
        return False
    return low <= value <= high


def assert_bounded(
    validate: Any, body: dict[str, Any], path: str, field: str, bounds: tuple[int, int, bool]
) -> None:
    """`validate(body)` either accepts the number, in range (an integer as an int),
    or is the typed 422 naming the field and its range; nothing else."""
    low, high, integral = bounds
    value = body[field] if path == field else body["payload"][field]
    try:
        request = validate(body)
    except ClientError as exc:
        assert exc.status == 422
        assert exc.problem.code == "validation_failed"
        kind = "an integer" if integral else "a number"
        assert exc.extra["errors"] == [
            {"path": path, "message": f"must be {kind} from {low} to {high}"}
        ]
        assert not accepted(value, bounds)
        return
    assert accepted(value, bounds)
    forwarded = request.body[field]
    assert low <= forwarded <= high
    assert forwarded == value
    if integral:
        assert type(forwarded) is int


@pytest.mark.parametrize(("operation", "field", "low", "high", "integral"), NUMBERS)
@given(value=ANY_NUMBER)
def test_every_number_is_in_range_or_a_422_naming_it(
    operation: Operation, field: str, low: int, high: int, integral: bool, value: float
) -> None:
    bounds = (low, high, integral)
    body = {**BASES[operation], field: value}
    assert_bounded(lambda b: validate_openai(operation, b), body, field, field, bounds)
    payload = {k: v for k, v in BASES[operation].items() if k != "model"}
    seed = {
        "request_id": str(uuid.uuid4()),
        "model": "m",
        "operation": operation.value,
        "payload": {**payload, field: value},
    }
    assert_bounded(validate_inference, seed, f"payload.{field}", field, bounds)


@given(bias=ANY_NUMBER)
def test_logit_bias_values_are_in_range_or_a_422(bias: float) -> None:
    for operation in (Operation.CHAT, Operation.COMPLETION):
        body = {**BASES[operation], "logit_bias": {"50256": bias}}
        try:
            request = validate_openai(operation, body)
        except ClientError as exc:
            assert exc.extra["errors"] == [
                {"path": "logit_bias.50256", "message": "must be a number from -100 to 100"}
            ]
            assert not -100 <= bias <= 100
        else:
            assert -100 <= request.body["logit_bias"]["50256"] <= 100


def test_chat_logprobs_is_a_boolean_and_completions_a_count() -> None:
    assert validate_openai(Operation.CHAT, {**CHAT, "logprobs": True})
    assert paths_of(Operation.CHAT, {**CHAT, "logprobs": 3}) == ["logprobs"]
    assert validate_openai(Operation.COMPLETION, {**BASES[Operation.COMPLETION], "logprobs": 3})
    assert paths_of(Operation.COMPLETION, {**BASES[Operation.COMPLETION], "logit_bias": 3}) == [
        "logit_bias"
    ]
