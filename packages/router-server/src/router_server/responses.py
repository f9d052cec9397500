"""Building HTTP responses: JSON via orjson, and errors in each route's envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from router_core.problems import Envelope, RouterError, anthropic_status, content_type, render

INFERENCE_PATH = "/v1/inference"
MESSAGES_PATH = "/v1/messages"


def envelope_for(path: str) -> Envelope:
    """Which error body the route at `path` speaks."""
    if path == INFERENCE_PATH:
        return Envelope.SEED
    if path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/"):
        return Envelope.ANTHROPIC
    if path.startswith("/v1/") and not path.startswith("/v1/status"):
        return Envelope.OPENAI
    return Envelope.PROBLEM


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(error: RouterError, path: str) -> Response:
    """`error` in the envelope of the route at `path` (the middleware adds x-request-id)."""
    envelope = envelope_for(path)
    body = render(error, envelope, instance=path)
    status = anthropic_status(error) if envelope is Envelope.ANTHROPIC else error.status
    return Response(
        orjson.dumps(body), status, dict(error.headers), media_type=content_type(envelope)
    )
