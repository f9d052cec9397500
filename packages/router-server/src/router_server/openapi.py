"""The OpenAPI 3.1 document of the public listener, served at /openapi.json.

Written by hand from small helpers rather than generated, so the document
states exactly the contract the handlers enforce (and tests hold both to it).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from router_core.requests import MAX_COUNT, MAX_SEED, MAX_TOKEN_ID, MIN_SEED
from router_server import __version__

JSON = "application/json"
PROBLEM = "application/problem+json"

_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
        }
    },
}
_SEED_ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
}

_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
# The Anthropic route's statuses (router_core.problems.anthropic_status).
_ANTHROPIC_ERRORS = (400, 401, 402, 403, 404, 409, 413, 415, 429, 500, 504, 529)
# Messages and Responses bodies are checked by router_core.protocols, and held
# to the official SDKs by tests (tests/system/e2e/test_e2e_protocols.py) rather
# than by a schema here: the document names their required fields only.
_MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        "stream": {"type": "boolean"},
    },
}
_COUNT_TOKENS_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1},
    },
}
_RESPONSES_REQUEST = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"type": ["string", "array"]},
        "stream": {"type": ["boolean", "null"]},
        "store": {"type": ["boolean", "null"]},
        "previous_response_id": {"type": ["string", "null"]},
    },
}
_RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "minLength": 1},
        "content": {"type": ["string", "array", "null"]},
    },
}
_TOKEN_IDS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID},
}
# OpenAI's four forms of `prompt` / `input`.
_TEXT_INPUT = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
        _TOKEN_IDS,
        {"type": "array", "minItems": 1, "items": _TOKEN_IDS},
    ]
}
_STREAM = {"type": ["boolean", "null"]}
_STREAM_OPTIONS = {"type": ["object", "null"]}


# Integers may be written 4.0 (JSON Schema's view); optional fields may be null.
def _nullable_integer(low: int, high: int) -> dict[str, Any]:
    return {"type": ["integer", "null"], "minimum": low, "maximum": high}


def _nullable_number(low: float, high: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": low, "maximum": high}


_COUNT = _nullable_integer(1, MAX_COUNT)
# What chat and completions share (router_core.requests._check_sampling).
_SAMPLING: dict[str, Any] = {
    "n": _COUNT,
    "temperature": _nullable_number(0, 2),
    "top_p": _nullable_number(0, 1),
    "presence_penalty": _nullable_number(-2, 2),
    "frequency_penalty": _nullable_number(-2, 2),
    "seed": _nullable_integer(MIN_SEED, MAX_SEED),
    "logit_bias": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
    },
}
_CHAT_FIELDS: dict[str, Any] = {
    "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
    "max_tokens": _COUNT,
    "max_completion_tokens": _COUNT,
    **_SAMPLING,
    "logprobs": {"type": ["boolean", "null"]},
    "top_logprobs": _nullable_integer(0, MAX_COUNT),
    "stream_options": _STREAM_OPTIONS,
}
_COMPLETION_FIELDS: dict[str, Any] = {
    "prompt": _TEXT_INPUT,
    "max_tokens": _COUNT,
    **_SAMPLING,
    "best_of": _COUNT,
    "logprobs": _nullable_integer(0, MAX_COUNT),
    "stream_options": _STREAM_OPTIONS,
}
_EMBEDDING_FIELDS: dict[str, Any] = {"input": _TEXT_INPUT, "dimensions": _COUNT}
_MODEL = {"type": "string", "minLength": 1, "description": "A public model name."}


def _payload(required: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The `/v1/inference` payload of one operation: no model, never streamed."""
    return {
        "type": "object",
        "required": [required],
        "properties": {**fields, "stream": {"enum": [False, None]}},
        "not": {"required": ["model"]},
    }


def _when_operation(operation: str, then: dict[str, Any], otherwise: dict[str, Any]) -> Any:
    return {
        "if": {"properties": {"operation": {"const": operation}}, "required": ["operation"]},
        "then": {"properties": {"payload": then}},
        "else": otherwise,
    }


SCHEMAS: dict[str, Any] = {
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {"model": _MODEL, "stream": _STREAM, **_CHAT_FIELDS},
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {"model": _MODEL, "stream": _STREAM, **_COMPLETION_FIELDS},
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {"model": _MODEL, **_EMBEDDING_FIELDS},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["request_id", "model", "payload"],
        "properties": {
            "request_id": {"type": "string", "format": "uuid"},
            "model": _MODEL,
            "operation": {"type": "string", "enum": ["chat", "completion", "embedding"]},
            "payload": {
                "type": "object",
                "description": "The OpenAI-style body of the operation, without `model`.",
            },
        },
        "allOf": [
            _when_operation(
                "embedding",
                _payload("input", _EMBEDDING_FIELDS),
                _when_operation(
                    "completion",
                    _payload("prompt", _COMPLETION_FIELDS),
                    {"properties": {"payload": _payload("messages", _CHAT_FIELDS)}},
                ),
            )
        ],
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["request_id", "model", "backend", "output", "usage"],
        "properties": {
            "request_id": {"type": "string"},
            "model": {"type": "string"},
            "backend": {"type": "string"},
            "output": {"type": "object"},
            "usage": {
                "type": "object",
                "required": [
                    "prompt_tokens",
                    "completion_tokens",
                    "total_tokens",
                    "latency_ms",
                    "backend",
                ],
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                    "latency_ms": {"type": "number"},
                    "backend": {"type": "string"},
                },
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object"],
                    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
                },
            },
        },
    },
    "OpenAIError": _OPENAI_ERROR,
    "AnthropicError": _ANTHROPIC_ERROR,
    "MessagesRequest": _MESSAGES_REQUEST,
    "CountTokensRequest": _COUNT_TOKENS_REQUEST,
    "ResponsesRequest": _RESPONSES_REQUEST,
    "InferenceError": _SEED_ERROR,
    "Problem": _PROBLEM,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(schema: str, media: str, codes: tuple[int, ...]) -> dict[str, Any]:
    return {
        str(code): {"description": "Error", "content": {media: {"schema": _ref(schema)}}}
        for code in codes
    }


_INFERENCE_ERRORS = (400, 401, 402, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)
# OpenAI routes: a retry with the same key gets the stored answer (docs/usage.md).
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"},
}


def _post(
    summary: str,
    request: str,
    response: dict[str, Any],
    error: str,
    media: str,
    *,
    stream: bool = False,
    codes: tuple[int, ...] = _INFERENCE_ERRORS,
) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": response}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    parameters = [_IDEMPOTENCY_KEY] if error == "OpenAIError" else []
    return {
        "post": {
            "summary": summary,
            "parameters": parameters,
            "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {
                "200": {"description": "The backend's answer", "content": content},
                **_errors(error, media, codes),
            },
        }
    }


def _stored_response() -> dict[str, Any]:
    """`/v1/responses/{response_id}`: read or delete one of the caller's stored responses."""
    errors = _errors("OpenAIError", JSON, (401, 403, 404, 503))

    def operation(summary: str) -> dict[str, Any]:
        ok = {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}
        return {
            "summary": summary,
            "parameters": [_RESPONSE_ID],
            "security": [{"bearer": []}, {"apiKey": []}],
            "responses": {"200": ok, **errors},
        }

    return {
        "get": operation("A stored response of the caller's organization"),
        "delete": operation("Delete a stored response"),
    }


def _get(
    summary: str, response: dict[str, Any], errors: dict[str, Any], *, secured: bool = False
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {JSON: {"schema": response}}},
            **errors,
        },
    }
    if secured:
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return {"get": operation}


def _text(summary: str, media: str, errors: dict[str, Any]) -> dict[str, Any]:
    ok = {"description": "OK", "content": {media: {"schema": {"type": "string"}}}}
    return {"get": {"summary": summary, "responses": {"200": ok, **errors}}}


@cache
def document() -> dict[str, Any]:
    openai_object = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inference router",
            "version": __version__,
            "description": "One inference entrypoint in front of many model backends.",
        },
        "paths": {
            "/v1/inference": _post(
                "Run an inference (the platform's own contract)",
                "InferenceRequest",
                _ref("InferenceResponse"),
                "InferenceError",
                JSON,
            ),
            "/v1/chat/completions": _post(
                "OpenAI-compatible chat completion",
                "ChatCompletionRequest",
                openai_object,
                "OpenAIError",
                JSON,
                stream=True,
            ),
            "/v1/completions": _post(
                "OpenAI-compatible text completion",
                "CompletionRequest",
                openai_object,
                "OpenAIError",
                JSON,
                stream=True,
            ),
            "/v1/embeddings": _post(
                "OpenAI-compatible embeddings",
                "EmbeddingRequest",
                openai_object,
                "OpenAIError",
                JSON,
            ),
            "/v1/messages": _post(
                "Anthropic Messages (native to a backend that speaks it, else translated)",
                "MessagesRequest",
                openai_object,
                "AnthropicError",
                JSON,
                stream=True,
                codes=_ANTHROPIC_ERRORS,
            ),
            "/v1/messages/count_tokens": _post(
                "Anthropic token counting (estimated, and marked so, without a native backend)",
                "CountTokensRequest",
                openai_object,
                "AnthropicError",
                JSON,
                codes=_ANTHROPIC_ERRORS,
            ),
            "/v1/responses": _post(
                "OpenAI Responses (conversation state kept by the router)",
                "ResponsesRequest",
                openai_object,
                "OpenAIError",
                JSON,
                stream=True,
            ),
            "/v1/responses/{response_id}": _stored_response(),
            "/v1/responses/{response_id}/input_items": {
                "get": {
                    **_stored_response()["get"],
                    "summary": "The input items of a stored response (its conversation so far)",
                }
            },
            "/v1/models": _get(
                "Models the caller's organization may use",
                _ref("ModelList"),
                _errors("OpenAIError", JSON, (401, 403)),
                secured=True,
            ),
            "/v1/status": _get(
                "Every component with its state (config, backends, Redis, Kafka, spool), "
                "answered within a second; status is degraded when any is not ok",
                {"type": "object"},
                {},
            ),
            "/v1/status/healthz": _get(
                "Liveness",
                {"type": "object"},
                {},
            ),
            "/v1/status/readyz": _get(
                "Readiness: config loaded and every model has a reachable backend "
                "(`degraded` names a shared store that is short of some data, or down)",
                {"type": "object"},
                _errors("Problem", PROBLEM, (503,)),
            ),
            "/openapi.json": _get("This document", {"type": "object"}, {}),
            "/metrics": _text(
                "Prometheus metrics (behind the ops token when observability.ops_token_env is set)",
                "text/plain",
                _errors("Problem", PROBLEM, (401,)),
            ),
            "/ops": _text(
                "The operator page (HTML; its data comes from /ops/summary)", "text/html", {}
            ),
            "/ops/summary": _get(
                "The operator page's data: backends, recent rates, spend, denials, export",
                {"type": "object"},
                _errors("Problem", PROBLEM, (401, 404)),
                secured=True,
            ),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (rk_live_...) or an OIDC JWT from a configured "
                    "issuer. Signed requests send 'Authorization: RK-HMAC-SHA256 ...' instead "
                    "(see docs/credentials.md, 'Signed requests').",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
