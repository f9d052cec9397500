"""Validation of inference request bodies, with every problem's field path.

Rules:
- Only the fields the router acts on (or that a backend would reject in a
  confusing way) are checked; every other field passes through untouched,
  so new OpenAI parameters work without a router release.
- Problems are collected, not raised one by one: a 422 lists them all, each
  as `path: message` (for example `messages[0].role: required`).
- The rules match the published OpenAPI document exactly (a schemathesis test
  holds them together): optional fields may be null; an integer may be
  written `4.0` (JSON Schema's view) and is forwarded as `4`; text input is
  one of OpenAI's four forms.
- Every number a client sends is checked against a range, and the problem
  names it (`max_tokens: must be an integer from 1 to 2147483647`): OpenAI's
  ranges where it publishes one (temperature, top_p, penalties, logit_bias),
  a signed 32-bit count otherwise (MAX_COUNT), a signed 64-bit seed. Nothing
  beyond reaches the limit arithmetic or a backend. (NaN and Infinity are not
  JSON; the parser refuses them before validation.)
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from router_core.problems import Catalog, ClientError


class Operation(enum.Enum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    # Anthropic Messages (`/v1/messages`) and OpenAI Responses (`/v1/responses`):
    # sent as they are to a backend that speaks them, else translated to chat
    # (router_core.protocols).
    MESSAGES = "messages"
    RESPONSES = "responses"
    # No route takes it: the call to a Google Gemini backend
    # (`generateContent`) that chat, Messages and Responses are translated to.
    GEMINI = "gemini"
    # Nor this one: the call to an AWS Bedrock backend (Converse).
    BEDROCK = "bedrock"
    # Nor this: embeddings to a provider with its own embedding call (Gemini's
    # embedContent, Vertex AI's predict, Bedrock's InvokeModel), as the calls
    # of `protocols.embeddings_over_providers`.
    PROVIDER_EMBEDDING = "provider_embedding"

    @property
    def backend_path(self) -> str:
        return _BACKEND_PATHS[self]


_BACKEND_PATHS = {
    Operation.CHAT: "/chat/completions",
    Operation.COMPLETION: "/completions",
    Operation.EMBEDDING: "/embeddings",
    Operation.MESSAGES: "/messages",
    Operation.RESPONSES: "/responses",
    Operation.GEMINI: ":generateContent",
    Operation.BEDROCK: "/converse",
    Operation.PROVIDER_EMBEDDING: "/embeddings",
}

# The operations `/v1/inference` takes in its `operation` field.
INFERENCE_OPERATIONS = (Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING)


@attrs.frozen
class InferenceRequest:
    operation: Operation
    model: str
    # The body to forward, as the client sent it (the model is rewritten later).
    body: Mapping[str, Any] = attrs.field(repr=False)
    stream: bool = False
    max_tokens: int | None = None
    request_id: str | None = None
    # Protocol headers passed on to a backend that speaks the request's
    # protocol natively (`anthropic-version`, `anthropic-beta`).
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class FieldProblem:
    path: str
    message: str


Problems = list[FieldProblem]


def join(prefix: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name


def type_of(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


MAX_TOKEN_ID = 2**32 - 1
# Counts (max_tokens, n, dimensions, ...) are at most a signed 32-bit integer:
# every backend can parse one, no real request needs more, and the limit
# arithmetic on them (prompt bound + max_tokens, priced) stays exact.
MAX_COUNT = 2**31 - 1
# A seed is only forwarded; backends take a signed 64-bit one, as OpenAI does.
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1


MAX_EXACT_FLOAT = 2**53


def _as_int(value: object) -> int | None:
    """`value` as an int if JSON Schema would call it an integer, else None.

    An int is returned as is, for the caller to check its range. A float only
    up to 2**53: beyond it, it is not the number the client wrote (the JSON
    parser makes a float of any integer outside 64 bits: -2**63 - 1 arrives
    as -2**63 exactly).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_FLOAT:
        return int(value)
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_str(body: Mapping[str, Any], name: str, prefix: str, out: Problems) -> str | None:
    path = join(prefix, name)
    if name not in body:
        out.append(FieldProblem(path, "required"))
        return None
    value = body[name]
    if not isinstance(value, str) or not value:
        out.append(FieldProblem(path, f"must be a non-empty string, not {type_of(value)}"))
        return None
    return value


def optional_bool(body: Mapping[str, Any], name: str, prefix: str, out: Problems) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        out.append(FieldProblem(join(prefix, name), f"must be a boolean, not {type_of(value)}"))
        return False
    return value


def optional_int(
    body: Mapping[str, Any], name: str, prefix: str, out: Problems, low: int, high: int
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    number = _as_int(value)
    if number is None or not low <= number <= high:
        out.append(FieldProblem(join(prefix, name), f"must be an integer from {low} to {high}"))
        return None
    if isinstance(body, dict):
        body[name] = number  # forward 4.0 as 4: backends are stricter than JSON Schema
    return number


def optional_count(
    body: Mapping[str, Any], name: str, prefix: str, out: Problems, low: int = 1
) -> int | None:
    return optional_int(body, name, prefix, out, low, MAX_COUNT)


def optional_range(
    body: Mapping[str, Any], name: str, low: float, high: float, prefix: str, out: Problems
) -> None:
    value = body.get(name)
    if value is not None and (not _is_number(value) or not low <= value <= high):
        out.append(FieldProblem(join(prefix, name), f"must be a number from {low} to {high}"))


def _check_logit_bias(body: Mapping[str, Any], prefix: str, out: Problems) -> None:
    path = join(prefix, "logit_bias")
    value = body.get("logit_bias")
    if value is None:
        return
    if not isinstance(value, dict):
        out.append(FieldProblem(path, f"must be an object, not {type_of(value)}"))
        return
    for token, bias in value.items():
        if not _is_number(bias) or not -100 <= bias <= 100:
            out.append(FieldProblem(join(path, token), "must be a number from -100 to 100"))


def _check_sampling(body: Mapping[str, Any], prefix: str, out: Problems) -> None:
    """The sampling numbers chat and completions share, in OpenAI's ranges."""
    optional_count(body, "n", prefix, out)
    optional_range(body, "temperature", 0, 2, prefix, out)
    optional_range(body, "top_p", 0, 1, prefix, out)
    optional_range(body, "presence_penalty", -2, 2, prefix, out)
    optional_range(body, "frequency_penalty", -2, 2, prefix, out)
    optional_int(body, "seed", prefix, out, MIN_SEED, MAX_SEED)
    _check_logit_bias(body, prefix, out)


def optional_object(body: Mapping[str, Any], name: str, prefix: str, out: Problems) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        out.append(FieldProblem(join(prefix, name), f"must be an object, not {type_of(value)}"))


def _check_messages(body: Mapping[str, Any], prefix: str, out: Problems) -> None:
    path = join(prefix, "messages")
    messages = body.get("messages")
    if "messages" not in body:
        out.append(FieldProblem(path, "required"))
        return
    if not isinstance(messages, list) or not messages:
        out.append(FieldProblem(path, "must be a non-empty array of messages"))
        return
    for i, message in enumerate(messages):
        where = join(path, i)
        if not isinstance(message, dict):
            out.append(FieldProblem(where, f"must be an object, not {type_of(message)}"))
            continue
        require_str(message, "role", where, out)
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            out.append(FieldProblem(join(where, "content"), "must be a string, an array or null"))


def _token_ids(value: object) -> list[int] | None:
    """`value` as a non-empty list of token ids, or None."""
    if not isinstance(value, list) or not value:
        return None
    ids = [_as_int(v) for v in value]
    if any(i is None or not 0 <= i <= MAX_TOKEN_ID for i in ids):
        return None
    return [i for i in ids if i is not None]


def _text_input(value: object) -> object | None:
    """One of OpenAI's four input forms, normalized; None if it is none of them.

    A string, a non-empty array of strings, an array of token ids, or a
    non-empty array of arrays of token ids.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return value
    ids = _token_ids(value)
    if ids is not None:
        return ids
    nested = [_token_ids(v) for v in value]
    if all(n is not None for n in nested):
        return nested
    return None


def _check_text_input(body: Mapping[str, Any], name: str, prefix: str, out: Problems) -> None:
    path = join(prefix, name)
    if name not in body:
        out.append(FieldProblem(path, "required"))
        return
    normalized = _text_input(body[name])
    if normalized is None:
        out.append(
            FieldProblem(
                path,
                "must be a string, an array of strings, an array of token ids, "
                "or an array of arrays of token ids",
            )
        )
    elif isinstance(body, dict):
        body[name] = normalized


def _check_chat(body: Mapping[str, Any], prefix: str, out: Problems) -> tuple[bool, int | None]:
    _check_messages(body, prefix, out)
    stream = optional_bool(body, "stream", prefix, out)
    max_tokens = optional_count(body, "max_tokens", prefix, out)
    max_completion = optional_count(body, "max_completion_tokens", prefix, out)
    _check_sampling(body, prefix, out)
    optional_bool(body, "logprobs", prefix, out)
    optional_count(body, "top_logprobs", prefix, out, low=0)
    optional_object(body, "stream_options", prefix, out)
    return stream, max_completion if max_completion is not None else max_tokens


def _check_completion(
    body: Mapping[str, Any], prefix: str, out: Problems
) -> tuple[bool, int | None]:
    _check_text_input(body, "prompt", prefix, out)
    stream = optional_bool(body, "stream", prefix, out)
    max_tokens = optional_count(body, "max_tokens", prefix, out)
    _check_sampling(body, prefix, out)
    optional_count(body, "best_of", prefix, out)
    # The legacy API's logprobs is a count, not chat's boolean.
    optional_count(body, "logprobs", prefix, out, low=0)
    optional_object(body, "stream_options", prefix, out)
    return stream, max_tokens


def _check_embedding(
    body: Mapping[str, Any], prefix: str, out: Problems
) -> tuple[bool, int | None]:
    _check_text_input(body, "input", prefix, out)
    optional_count(body, "dimensions", prefix, out)
    return False, None


_CHECKS: dict[Operation, Callable[[Mapping[str, Any], str, Problems], tuple[bool, int | None]]] = {
    Operation.CHAT: _check_chat,
    Operation.COMPLETION: _check_completion,
    Operation.EMBEDDING: _check_embedding,
}


def fail(problems: Problems) -> ClientError:
    shown = "; ".join(f"{p.path}: {p.message}" for p in problems)
    return ClientError(
        Catalog.VALIDATION_FAILED,
        f"Invalid request: {shown}",
        param=problems[0].path,
        extra={"errors": [{"path": p.path, "message": p.message} for p in problems]},
    )


def not_an_object(body: object) -> ClientError:
    return fail([FieldProblem("", f"the body must be a JSON object, not {type_of(body)}")])


def validate_openai(operation: Operation, body: object) -> InferenceRequest:
    """An OpenAI-compatible body for `operation`, or a 422 listing every problem."""
    if not isinstance(body, dict):
        raise not_an_object(body)
    problems: Problems = []
    model = require_str(body, "model", "", problems)
    stream, max_tokens = _CHECKS[operation](body, "", problems)
    if problems or model is None:
        raise fail(problems)
    return InferenceRequest(operation, model, body, stream=stream, max_tokens=max_tokens)


def validate_inference(body: object) -> InferenceRequest:
    """The platform's own `/v1/inference` body: {request_id, model, operation?, payload}."""
    if not isinstance(body, dict):
        raise not_an_object(body)
    problems: Problems = []
    request_id = require_str(body, "request_id", "", problems)
    if request_id is not None:
        try:
            request_id = str(uuid.UUID(request_id))
        except ValueError:
            problems.append(FieldProblem("request_id", "must be a UUID"))
    model = require_str(body, "model", "", problems)
    operation = Operation.CHAT
    raw_op = body.get("operation", "chat")
    try:
        operation = Operation(raw_op)
    except ValueError:
        operation = Operation.CHAT
        problems.append(FieldProblem("operation", "must be one of chat, completion, embedding"))
    if operation not in INFERENCE_OPERATIONS:
        operation = Operation.CHAT
        problems.append(FieldProblem("operation", "must be one of chat, completion, embedding"))
    payload = body.get("payload")
    stream, max_tokens = False, None
    if "payload" not in body:
        problems.append(FieldProblem("payload", "required"))
    elif not isinstance(payload, dict):
        problems.append(FieldProblem("payload", f"must be an object, not {type_of(payload)}"))
    else:
        stream, max_tokens = _CHECKS[operation](payload, "payload", problems)
        if stream:
            problems.append(
                FieldProblem(
                    "payload.stream",
                    "streaming is served on /v1/chat/completions and /v1/completions",
                )
            )
        if "model" in payload:
            problems.append(FieldProblem("payload.model", "set the model at the top level"))
    if problems or model is None or request_id is None or not isinstance(payload, dict):
        raise fail(problems)
    forwarded = {**payload, "model": model}
    return InferenceRequest(
        operation, model, forwarded, stream=False, max_tokens=max_tokens, request_id=request_id
    )
