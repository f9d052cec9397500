"""The request pipeline: one readable path from HTTP request to answer.

authenticate -> read and validate -> resolve model -> take an in-flight slot
(or be shed) -> admit against limits -> route -> forward with failover,
retries and hedging -> settle limits -> answer (JSON, or an SSE relay that
settles when the stream ends). Each step raises a `RouterError`, which the
route renders in its own envelope.
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
from router_core.accounting.records import (
    TokenCounts,
    completion_chars,
    estimate_tokens,
    outcome_of,
    token_counts,
)
from router_core.auth import KeyIndex, Principal
from router_core.config import Model, RouterConfig
from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.requests import InferenceRequest
from router_server import tracing
from router_server.admin.book import OverrideBook
from router_server.backends import BackendClient
from router_server.backpressure import Gate, overloaded
from router_server.credentials import verify
from router_server.dispatch import Dispatcher, Opened
from router_server.forwarding import RelayResponse, StreamTally
from router_server.health import Health
from router_server.limits import LimitGate, Ticket
from router_server.ops import Ops
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
    gate: Gate
    dispatch: Dispatcher
    rng: random.Random
    overrides: OverrideBook
    usage: UsageSink
    # More components for /v1/status, by name (config reload, overrides, ...).
    status_sources: dict[str, Callable[[], object]] = attrs.field(factory=dict)
    # Metrics and the operator page's window (set in the lifespan).
    ops: Ops | None = None
    # Managed keys, nonces of signed requests and OIDC tokens (None: config keys only).
    credentials: verify.Credentials | None = None


def state_of(request: Request) -> RouterState:
    state: RouterState = request.state.router
    return state


async def authenticate_request(
    request: Request, state: RouterState, config: RouterConfig
) -> Principal:
    return await verify.authenticate_request(request, config, state.keys, state.credentials)


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
    with tracing.request_span(request.headers, request.url.path):  # a no-op unless on
        return await _serve(request, validate, shape)


async def _serve(request: Request, validate: Validator, shape: Shaper) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    # One config for the whole request, even across a reload: everything below,
    # down to the price on its usage record, reads this snapshot, never state.config.
    config = state.config
    path = request.url.path
    request_id: str = request.scope["state"]["request_id"]
    principal: Principal | None = None
    ticket: Ticket | None = None
    gate = state.gate
    holds_slot = False
    trace = state.usage.trace(request_id, path, started, config)
    try:
        with tracing.span("router.auth"):
            principal = trace.principal = await authenticate_request(request, state, config)
        inference = trace.inference = validate(await read_json_body(request))
        model = routing.resolve_model(config, principal.org, inference.model)
        if not principal.allows_model(inference.model):
            raise ClientError(
                Catalog.FORBIDDEN_MODEL,
                f"This API key may not use model {inference.model!r}.",
                param="model",
            )
        # A retry of a completed request is answered from the store, before
        # taking a slot or charging a limit.
        replay = await state.usage.claim(trace, request.headers)
        if replay is not None:
            return replay
        await gate.enter()
        holds_slot = True
        with tracing.span("router.limits"):
            ticket = await state.limits.admit(
                config, request_id, principal.organization, principal.key_id, inference
            )
        with tracing.span("router.route"):
            candidates = await _route(state, config, inference.model, model, principal)
        headers = dict(ticket.headers)
        forwarded = _forwarded(inference, ticket)
        try:
            with anyio.fail_after(config.server.request_timeout_s):
                if inference.stream:
                    response = await _stream(
                        state, config, forwarded, ticket, candidates, headers, trace
                    )
                    holds_slot = False  # the relay gives it back when the stream ends
                    return response
                hedge = model.hedge_after_ms / 1000 if model.hedge_after_ms else None
                sent = time.perf_counter()
                opened, body = await state.dispatch.fetch(
                    forwarded, candidates, hedge, config.routing.max_attempts
                )
                backend_s = time.perf_counter() - sent
        except TimeoutError:
            raise DependencyError(
                Catalog.REQUEST_TIMEOUT,
                f"The request did not complete within {config.server.request_timeout_s:g} s.",
            ) from None
        counts = token_counts(
            inference.body, body.get("usage"), estimate_tokens(completion_chars(body))
        )
        await _settle(state, ticket, counts, served=True)
        ticket = None
        headers["x-router-backend"] = opened.candidate.backend
        latency_ms = (time.perf_counter() - started) * 1000
        answer = shape(inference, opened, body, latency_ms)
        content = _content(config, inference, body)
        _access(request_id, principal, inference, opened, 200, started, content=content)
        if state.ops is not None:  # ops: router-added latency = total - backend wait
            total_s = time.perf_counter() - started
            state.ops.requests.observe_backend(path, opened.candidate.backend, total_s, backend_s)
        response = json_response(answer, headers=headers)
        await state.usage.answered(trace, response, opened=opened, body=body)
        return response
    except RouterError as exc:
        _denied(request_id, principal, path, exc, started)
        if principal is None and state.ops is not None:  # ops: no usage record without one
            seconds = time.perf_counter() - started
            state.ops.requests.observe_unauthenticated(path, exc.status, exc.problem.code, seconds)
        if ticket is not None:
            exc.headers = {**ticket.headers, **exc.headers}
        response = error_response(exc, path)
        await state.usage.answered(trace, response, error=exc)
        return response
    finally:
        if ticket is not None and not ticket.streaming:
            await _settle(state, ticket, TokenCounts(), served=False)
        if holds_slot:
            gate.leave()
        await state.usage.abandoned(trace)


async def _route(
    state: RouterState, config: RouterConfig, name: str, model: Model, principal: Principal
) -> tuple[routing.Candidate, ...]:
    """The candidates for this request; waits (bounded) when every one is full."""

    applied = state.overrides.applicable(name, principal.organization, time.time())

    def decide() -> routing.Decision:
        return routing.decide(
            name, model, principal.organization, principal.key_id, state.rng,
            state.health.views(), applied,
        )  # fmt: skip

    decision = decide()
    if decision.only_capacity_skips():
        with anyio.move_on_after(state.gate.queue_timeout_s):
            while not decision.candidates:
                await state.health.wait_for_capacity()
                decision = decide()
        if not decision.candidates:
            state.gate.shed += 1
            raise overloaded(
                f"Every backend for model {name!r} is at its in-flight cap. Retry shortly.",
                state.gate.queue_timeout_s,
            )
    if not decision.candidates:
        reasons = "; ".join(f"{s.backend}: {s.reason} ({s.detail})" for s in decision.skipped)
        raise DependencyError(
            Catalog.NO_BACKEND_AVAILABLE,
            f"No backend can take model {name!r} now: {reasons}.",
            headers={"retry-after": str(max(1, round(config.health.open_s)))},
        )
    return decision.candidates


def _forwarded(inference: InferenceRequest, ticket: Ticket) -> InferenceRequest:
    if ticket.body is inference.body:
        return inference
    return attrs.evolve(inference, body=ticket.body)


async def _stream(
    state: RouterState,
    config: RouterConfig,
    forwarded: InferenceRequest,
    ticket: Ticket,
    candidates: tuple[routing.Candidate, ...],
    headers: dict[str, str],
    trace: UsageTrace,
) -> Response:
    """Open the stream (failing over before the first byte) and hand it to the relay,
    which settles the ticket and frees the slots when the stream ends, however it ends."""
    tally = StreamTally()
    if not _asks_usage(forwarded.body):  # usage records need the counts of every stream
        options = {**(forwarded.body.get("stream_options") or {}), "include_usage": True}
        forwarded = attrs.evolve(forwarded, body={**forwarded.body, "stream_options": options})
        tally.strip_usage = True
    opened = await state.dispatch.open(forwarded, candidates, config.routing.max_attempts)
    ticket.streaming = True

    async def on_close(tally: StreamTally) -> None:
        state.dispatch.done(opened, tally.broken)
        state.gate.leave()
        if trace.principal is not None:  # the stream's access line, when it ends
            outcome = (
                "success" if tally.done else "backend_error" if tally.broken else "client_cancelled"
            )
            content = _content(config, forwarded, None)
            _access(trace.request_id, trace.principal, forwarded, opened, 200, trace.started,
                    outcome, content)  # fmt: skip
        # Cancelled or broken before the backend reported usage: count what was
        # relayed (about a token per content event), as the usage record does.
        counts = token_counts(forwarded.body, tally.usage, tally.content_events)
        await _settle(state, ticket, counts, served=tally.content_events > 0)

    headers["x-router-backend"] = opened.candidate.backend
    return state.usage.relay(
        trace, RelayResponse(opened, forwarded.model, headers, tally, on_close)
    )


def _asks_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _settle(state: RouterState, ticket: Ticket, counts: TokenCounts, *, served: bool) -> None:
    if ticket.settled:
        return
    ticket.settled = True
    with anyio.CancelScope(shield=True):
        await state.limits.settle(ticket, counts, served=served)


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
    outcome: str = "success",
    content: Mapping[str, Any] | None = None,
) -> None:
    """The request's one access line (no secrets; no prompt or completion unless
    `observability.log_content` put them in `content`)."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "organization": principal.organization,
                "key_id": principal.key_id,
                "operation": inference.operation.value,
                "model": inference.model,
                "backend": opened.candidate.backend,
                "status": status,
                "outcome": outcome,
                "stream": inference.stream,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                **(content or {}),
            },
        )


def _content(
    config: RouterConfig, inference: InferenceRequest, body: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Prompt and completion for the access line, only when the config asks for them."""
    if not config.observability.log_content:
        return None
    asked = inference.body
    prompt = asked.get("messages", asked.get("prompt", asked.get("input")))
    return {"prompt": prompt, "completion": None if body is None else body.get("choices")}


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
                "outcome": outcome_of(exc.problem.code).value,
                # Why a credential was refused (never the credential itself).
                "reason": exc.extra.get("reason"),
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
