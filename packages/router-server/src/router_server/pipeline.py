"""The request pipeline: one readable path from HTTP request to answer.

authenticate -> read and validate -> resolve model -> plan -> forward with
failover -> answer (JSON, or an SSE relay). Rate limits, budgets and usage
export slot in between these steps as they arrive; each step raises a
`RouterError`, which the route renders in its own envelope.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs
import orjson
from starlette.requests import Request
from starlette.responses import Response

from router_core import routing, usage
from router_core.auth import KeyIndex, Principal, authenticate, credential_from_headers
from router_core.config import RouterConfig
from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.requests import InferenceRequest
from router_server.backends import BackendClient
from router_server.forwarding import Opened, RelayResponse, StreamTally, open_first, read_json
from router_server.health import Health
from router_server.limits import LimitGate, Ticket
from router_server.responses import error_response, json_response
from router_server.usage.sink import UsageSink
from router_server.usage.trace import UsageTrace

log = logging.getLogger("router.access")
audit = logging.getLogger("router.audit")


@attrs.define
class RouterState:
    """Everything a request needs, opened in the lifespan and shared by all requests."""

    config: RouterConfig
    keys: KeyIndex
    backends: dict[str, BackendClient]
    health: Health
    limits: LimitGate
    rng: random.Random
    usage: UsageSink


def state_of(request: Request) -> RouterState:
    state: RouterState = request.state.router
    return state


def authenticate_request(request: Request, state: RouterState) -> Principal:
    headers = request.headers
    presented = credential_from_headers(headers.get("authorization"), headers.get("x-api-key"))
    return authenticate(presented, state.keys)


async def read_json_body(request: Request) -> object:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ClientError(
            Catalog.UNSUPPORTED_MEDIA_TYPE,
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
        )
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(
            Catalog.MALFORMED_JSON,
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(byte {exc.pos}).",
        ) from None


Validator = Callable[[object], InferenceRequest]
Shaper = Callable[[InferenceRequest, Opened, dict[str, Any], float], Any]


async def serve(request: Request, validate: Validator, shape: Shaper) -> Response:
    """The pipeline for every inference route; `shape` builds the route's JSON answer."""
    started = time.perf_counter()
    state = state_of(request)
    path = request.url.path
    request_id: str = request.scope["state"]["request_id"]
    principal: Principal | None = None
    ticket: Ticket | None = None
    trace = state.usage.trace(request_id, path, started)
    try:
        principal = trace.principal = authenticate_request(request, state)
        inference = trace.inference = validate(await read_json_body(request))
        model = routing.resolve_model(state.config, principal.org, inference.model)
        replay = await state.usage.claim(trace, request.headers)
        if replay is not None:
            return replay
        ticket = await state.limits.admit(
            request_id, principal.organization, principal.key_id, inference
        )
        candidates = routing.plan(inference.model, model, state.rng)
        headers = dict(ticket.headers)
        try:
            with anyio.fail_after(state.config.server.request_timeout_s):
                if inference.stream:
                    return await _stream(state, inference, ticket, candidates, headers, trace)
                opened = await open_first(
                    _forwarded(inference, ticket), candidates, state.backends,
                    state.health.record,
                )  # fmt: skip
                body = await read_json(opened)
        except TimeoutError:
            raise DependencyError(
                Catalog.REQUEST_TIMEOUT,
                f"The request did not complete within {state.config.server.request_timeout_s:g} s.",
            ) from None
        await _settle(state, ticket, usage.from_backend(body), served=True)
        ticket = None
        headers["x-router-backend"] = opened.candidate.backend
        latency_ms = (time.perf_counter() - started) * 1000
        answer = shape(inference, opened, body, latency_ms)
        _access(request_id, principal, inference, opened, 200, started)
        response = json_response(answer, headers=headers)
        await state.usage.answered(trace, response, opened=opened, body=body)
        return response
    except RouterError as exc:
        _denied(request_id, principal, path, exc, started)
        if ticket is not None:
            exc.headers = {**ticket.headers, **exc.headers}
        response = error_response(exc, path)
        await state.usage.answered(trace, response, error=exc)
        return response
    finally:
        if ticket is not None and not ticket.streaming:
            await _settle(state, ticket, None, served=False)
        await state.usage.abandoned(trace)


def _forwarded(inference: InferenceRequest, ticket: Ticket) -> InferenceRequest:
    if ticket.body is inference.body:
        return inference
    return attrs.evolve(inference, body=ticket.body)


async def _stream(
    state: RouterState,
    inference: InferenceRequest,
    ticket: Ticket,
    candidates: tuple[routing.Candidate, ...],
    headers: dict[str, str],
    trace: UsageTrace,
) -> Response:
    """Open the stream (failing over before the first byte) and hand it to the relay,
    which settles the ticket when the stream ends, however it ends."""
    tally = StreamTally()
    forwarded = _forwarded(inference, ticket)
    if not _asks_usage(forwarded.body):  # usage records need the counts of every stream
        options = {**(forwarded.body.get("stream_options") or {}), "include_usage": True}
        forwarded = attrs.evolve(forwarded, body={**forwarded.body, "stream_options": options})
        tally.strip_usage = True
    opened = await open_first(forwarded, candidates, state.backends, state.health.record)
    ticket.streaming = True

    async def on_close(tally: StreamTally) -> None:
        await _settle(state, ticket, _stream_usage(ticket, tally), served=tally.content_events > 0)

    headers["x-router-backend"] = opened.candidate.backend
    return state.usage.relay(
        trace, RelayResponse(opened, inference.model, headers, tally, on_close)
    )


def _asks_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _stream_usage(ticket: Ticket, tally: StreamTally) -> usage.TokenUsage:
    if tally.usage is not None:
        return usage.from_backend({"usage": tally.usage})
    # Cancelled or broken before the backend reported usage: count what was
    # relayed (about a token per content event) against the prompt's bound.
    prompt = ticket.plan.prompt_bound
    return usage.TokenUsage(prompt, tally.content_events, prompt + tally.content_events)


async def _settle(
    state: RouterState, ticket: Ticket, used: usage.TokenUsage | None, *, served: bool
) -> None:
    if ticket.settled:
        return
    ticket.settled = True
    with anyio.CancelScope(shield=True):
        await state.limits.settle(ticket, used, served=served)


def shape_openai(
    inference: InferenceRequest, opened: Opened, body: dict[str, Any], latency_ms: float
) -> Any:
    """OpenAI routes answer with the backend's body, under the public model name."""
    if "model" in body:
        body["model"] = inference.model
    return body


def shape_inference(
    inference: InferenceRequest, opened: Opened, body: dict[str, Any], latency_ms: float
) -> Any:
    """`/v1/inference` answers with the completion and a usage summary."""
    if "model" in body:
        body["model"] = inference.model
    backend = opened.candidate.backend
    return {
        "request_id": inference.request_id,
        "model": inference.model,
        "backend": backend,
        "output": body,
        "usage": usage.summary(usage.from_backend(body), latency_ms=latency_ms, backend=backend),
    }


def _access(
    request_id: str,
    principal: Principal,
    inference: InferenceRequest,
    opened: Opened,
    status: int,
    started: float,
) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "organization": principal.organization,
                "key_id": principal.key_id,
                "model": inference.model,
                "backend": opened.candidate.backend,
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )


def _denied(
    request_id: str, principal: Principal | None, path: str, exc: RouterError, started: float
) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request failed",
            extra={
                "request_id": request_id,
                "organization": principal.organization if principal else None,
                "key_id": principal.key_id if principal else None,
                "path": path,
                "status": exc.status,
                "code": exc.problem.code,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
    if "limit_type" in exc.extra and principal is not None:
        # Limit denials are audit events (the durable audit sink reads this logger).
        audit.warning(
            "limit_denied",
            extra={
                "event": "limit_denied",
                "request_id": request_id,
                "organization": principal.organization,
                "key_id": principal.key_id,
                "code": exc.problem.code,
                **exc.extra,
            },
        )
