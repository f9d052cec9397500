"""The routes of Anthropic Messages and OpenAI Responses.

Rules:
- `POST /v1/messages` and `POST /v1/responses` are inference routes: the one
  pipeline (`pipeline.serve`) authenticates, limits (the worst case reserved
  from `max_tokens` / `max_output_tokens`), routes, forwards natively or
  translated, and records usage, exactly as for chat completions. Errors
  come in each protocol's own envelope (see `responses.envelope_for`).
- A key's route scope `/v1/messages` covers `/v1/messages/count_tokens`, and
  `/v1/responses` covers reading, listing the input of, and deleting the
  caller's stored responses.
- `count_tokens` asks the first candidate backend that speaks Messages
  natively; when none does (or it fails), the count is estimated and marked
  so (`"estimated": true` and `x-router-estimated: true`). It is not an
  inference: nothing is charged and no usage record is written.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router_core.auth import permit_model
from router_core.config_enums import Protocol
from router_core.problems import RouterError
from router_core.protocols import messages
from router_core.protocols.responses import validate_responses
from router_server.backends import BackendFailure
from router_server.candidates import route_candidates
from router_server.conversations import input_items_page
from router_server.pipeline import (
    authenticate_request,
    read_json_body,
    serve,
    shape_protocol,
    state_of,
)
from router_server.responses import MESSAGES_PATH, error_response, json_response

RESPONSES_PATH = "/v1/responses"


async def create_message(request: Request) -> Response:
    return await serve(request, messages.validate_messages, shape_protocol)


async def create_response(request: Request) -> Response:
    return await serve(request, validate_responses, shape_protocol)


async def count_tokens(request: Request) -> Response:
    state = state_of(request)
    runtime = state.runtime
    config = runtime.config
    try:
        principal = await authenticate_request(request, state, runtime, route=MESSAGES_PATH)
        counted = messages.validate_count_tokens(await read_json_body(request))
        model = permit_model(principal, config, counted.model)
        candidates = await route_candidates(
            state, runtime, counted.operation, counted.model, model, principal
        )
    except RouterError as exc:
        return error_response(exc, request.url.path)
    for candidate in candidates:
        client = runtime.backends[candidate.backend]
        if Protocol.ANTHROPIC_MESSAGES not in client.settings.speaks or client.settings.vertex:
            continue  # Claude on Vertex AI counts elsewhere: estimated here
        body = {**counted.body, "model": candidate.model}
        headers = {k: v for k, v in request.headers.items() if k.startswith("anthropic-")}
        try:
            answer = await client.open("/messages/count_tokens", body, headers)
            raw = await client.read(answer)
        except BackendFailure:
            continue
        if answer.status_code != 200:
            continue
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("input_tokens"), int):
            return json_response({"input_tokens": parsed["input_tokens"]})
    estimate = {"input_tokens": messages.estimate_input_tokens(counted.body), "estimated": True}
    return json_response(estimate, headers={"x-router-estimated": "true"})


async def _stored(request: Request) -> tuple[str, str]:
    """The caller's organization and the response id in the path."""
    state = state_of(request)
    principal = await authenticate_request(request, state, state.runtime, route=RESPONSES_PATH)
    return principal.organization, request.path_params["response_id"]


async def stored_response(request: Request) -> Response:
    """`GET` or `DELETE /v1/responses/{response_id}`."""
    if request.method == "DELETE":
        return await delete_response(request)
    return await get_response(request)


async def get_response(request: Request) -> Response:
    try:
        organization, response_id = await _stored(request)
        stored = await state_of(request).conversations.get(organization, response_id)
    except RouterError as exc:
        return error_response(exc, request.url.path)
    return json_response(stored.response)


async def response_input_items(request: Request) -> Response:
    try:
        organization, response_id = await _stored(request)
        stored = await state_of(request).conversations.get(organization, response_id)
    except RouterError as exc:
        return error_response(exc, request.url.path)
    return json_response(input_items_page(stored))


async def delete_response(request: Request) -> Response:
    try:
        organization, response_id = await _stored(request)
        await state_of(request).conversations.delete(organization, response_id)
    except RouterError as exc:
        return error_response(exc, request.url.path)
    return json_response({"id": response_id, "object": "response", "deleted": True})
