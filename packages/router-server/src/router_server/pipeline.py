"""The request pipeline: one readable path from HTTP request to answer.

authenticate -> read and validate -> resolve model -> admission (shed when
the usage spool is full; take an in-flight slot, or be shed when the router
is saturated or the caller's organization is over its fair share; claim the
idempotency key, or replay its answer; admit against limits) -> route ->
forward with failover, retries and hedging -> answer (JSON, or an SSE relay
that finishes when the stream ends). Each step raises a `RouterError`, which
the route renders in its own envelope.

Every request runs under one `Runtime` (read once, here) and owns its
resources through one `Exchange`, whose `finish` is the one way out: it
settles the limits, writes the usage record and gives back the slot, the
claim and a relayed backend, with an `Ending` this module decides.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs
import orjson
from starlette.requests import Request
from starlette.responses import Response

from router_core import routing, usage
from router_core.accounting import idempotency as idem
from router_core.accounting.records import Outcome, TokenCounts, outcome_of, token_counts
from router_core.auth import KeyIndex, Principal, permit_model
from router_core.config import RouterConfig
from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.protocols.relay import relay_for
from router_core.protocols.wire import answer_counts, client_answer, stream_counts
from router_core.requests import InferenceRequest, Operation
from router_server import tracing
from router_server.admin.book import OverrideBook
from router_server.affinity import NO_PINNING, Affinity, Pinning
from router_server.backends import BackendClient
from router_server.backpressure import Backpressure
from router_server.candidates import route_candidates
from router_server.conversations import Conversations
from router_server.credentials import verify
from router_server.dispatch import Dispatcher, Opened
from router_server.exchange import CLIENT_CLOSED, Ending, Exchange
from router_server.forwarding import RelayResponse, StreamTally
from router_server.group import WorkerSlot
from router_server.health import Health
from router_server.limits import LimitGate
from router_server.ops import Ops
from router_server.responses import error_response, json_response
from router_server.runtime import Runtime
from router_server.state.layer import StateLayer
from router_server.usage.sink import UsageSink, replayed
from router_server.usage.trace import Claim, UsageTrace

log = logging.getLogger("router.access")
audit = logging.getLogger("router.audit")


@attrs.define
class RouterState:
    """Everything a request needs, opened in the lifespan and shared by all requests:
    the running `Runtime` (swapped whole on reload) and the live components."""

    runtime: Runtime
    health: Health
    limits: LimitGate
    backpressure: Backpressure
    dispatch: Dispatcher
    rng: random.Random
    overrides: OverrideBook
    usage: UsageSink
    # Metrics and the operator page's recent traffic.
    ops: Ops
    # Managed keys, nonces of signed requests and OIDC tokens.
    credentials: verify.Credentials
    # Where limits, idempotency keys, managed keys, nonces and overrides live.
    stores: StateLayer
    # Stored OpenAI Responses, for previous_response_id and GET /v1/responses/{id}.
    conversations: Conversations
    # Prefix and session affinity: where each model's recent prompts were served.
    affinity: Affinity
    # More components for /v1/status, by name (config reload, overrides, ...).
    status_sources: dict[str, Callable[[], object]] = attrs.field(factory=dict)
    # This process's slot in `router serve --workers N`; None: a single process.
    worker: WorkerSlot | None = None

    # The running snapshot's parts, for readers outside a request (status, admin).
    @property
    def config(self) -> RouterConfig:
        return self.runtime.config

    @property
    def keys(self) -> KeyIndex:
        return self.runtime.keys

    @property
    def backends(self) -> Mapping[str, BackendClient]:
        return self.runtime.backends


def state_of(request: Request) -> RouterState:
    state: RouterState = request.state.router
    return state


async def authenticate_request(
    request: Request, state: RouterState, runtime: Runtime, route: str | None = None
) -> Principal:
    """The caller, allowed `route` (the request's path unless given: a path
    covered by another route's scope)."""
    return await verify.authenticate_request(
        request, runtime.config, runtime.keys, state.credentials, route=route
    )


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
# (request, opened, backend's answer, latency in ms, the router's request id) -> the body.
Shaper = Callable[[InferenceRequest, Opened, dict[str, Any], float, str], Any]

# The protocol headers a backend speaking the request's protocol gets.
_PASSED_ON = {Operation.MESSAGES: ("anthropic-version", "anthropic-beta")}


def _passed_on(inference: InferenceRequest, headers: Mapping[str, str]) -> InferenceRequest:
    names = _PASSED_ON.get(inference.operation)
    if not names:
        return inference
    given = {name: headers[name] for name in names if name in headers}
    return attrs.evolve(inference, headers=given) if given else inference


def answer_id(operation: Operation, request_id: str) -> str:
    """The id of the answer the router gives when it writes the answer itself
    (Messages' message, Responses' response, a chat completion translated back)."""
    prefix = _ANSWER_PREFIXES.get(operation, "msg_")
    return prefix + request_id.replace("-", "")


_ANSWER_PREFIXES = {
    Operation.RESPONSES: "resp_",
    Operation.CHAT: "chatcmpl-",
    Operation.COMPLETION: "cmpl-",
}


async def serve(request: Request, validate: Validator, shape: Shaper) -> Response:
    """The pipeline for every inference route; `shape` builds the route's JSON answer."""
    with tracing.request_span(request.headers, request.url.path):  # a no-op unless on
        return await _serve(request, validate, shape)


def now_us() -> int:
    return time.time_ns() // 1000


async def _serve(request: Request, validate: Validator, shape: Shaper) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    # One runtime for the whole request, even across a reload: everything below,
    # down to the price on its usage record, reads this snapshot.
    runtime = state.runtime
    config = runtime.config
    path = request.url.path
    request_id: str = request.scope["state"]["request_id"]
    trace = UsageTrace(request_id, path, started, now_us(), config)
    exchange = Exchange(runtime, trace, state.usage, state.limits, state.dispatch)
    principal: Principal | None = None
    try:
        with tracing.span("router.auth"):
            principal = trace.principal = await authenticate_request(request, state, runtime)
        inference = _passed_on(validate(await read_json_body(request)), request.headers)
        trace.inference = inference
        model = permit_model(principal, config, inference.model)
        conversation = None
        if inference.operation is Operation.RESPONSES:  # the conversation, before limits
            inference, conversation = await state.conversations.expand(
                principal.organization, inference
            )
            trace.inference = inference
            if conversation is None:  # this turn starts one: named now, for affinity
                conversation = "conv_" + request_id.replace("-", "")
        stored = await _admit(state, exchange, request.headers)
        if stored is not None:  # a retry of a completed request, answered from the store
            backend = dict(stored.headers).get("x-router-backend")
            await exchange.finish(Ending(stored.status, Outcome.REPLAYED, backend=backend))
            return replayed(stored)
        ticket = exchange.ticket
        assert ticket is not None
        with tracing.span("router.route"):
            pinning = state.affinity.request(
                inference.model, model, inference, request.headers,
                principal.organization, conversation,
            )  # fmt: skip
            candidates = await route_candidates(
                state, runtime, inference.operation, inference.model, model, principal,
                pinning.routing, request_id,
            )  # fmt: skip
        exchange.routed()
        headers = dict(ticket.headers)
        forwarded = _forwarded(inference, ticket.body)
        try:
            with anyio.fail_after(config.server.request_timeout_s):
                if inference.stream:  # the relay finishes the exchange when the stream ends
                    return await _stream(
                        state, exchange, forwarded, candidates, headers, pinning, conversation
                    )
                hedge = model.hedge_after_ms / 1000 if model.hedge_after_ms else None
                sent = time.perf_counter()
                opened, body = await state.dispatch.fetch(
                    forwarded, candidates, hedge, config.routing.max_attempts
                )
                backend_s = time.perf_counter() - sent
                state.affinity.served(pinning, opened.candidate.backend)
        except TimeoutError:
            raise DependencyError(
                Catalog.REQUEST_TIMEOUT,
                f"The request did not complete within {config.server.request_timeout_s:g} s.",
            ) from None
        headers["x-router-backend"] = opened.candidate.backend
        elapsed_s = time.perf_counter() - started
        headers["server-timing"] = server_timing(elapsed_s, backend_s)
        latency_ms = elapsed_s * 1000
        counts = answer_counts(inference.body, opened.wire, body)
        answer = shape(inference, opened, body, latency_ms, request_id)
        if inference.operation is Operation.RESPONSES:
            await state.conversations.keep(principal.organization, inference, answer, conversation)
        content = _content(config, inference, body)
        _access(request_id, principal, inference, opened, 200, started, content=content)
        # ops: router-added latency = total - backend wait
        total_s = time.perf_counter() - started
        state.ops.requests.observe_backend(path, opened.candidate.backend, total_s, backend_s)
        response = json_response(answer, headers=headers)
        await exchange.finish(
            Ending(
                200, Outcome.SUCCESS, counts=counts, served=True,
                backend=opened.candidate.backend, backend_model=opened.candidate.model,
                stored=_storable(response, exchange.claim),
            )
        )  # fmt: skip
        return response
    except RouterError as exc:
        _denied(request_id, principal, path, exc, started)
        if exchange.ticket is not None:
            exc.headers = {**exchange.ticket.headers, **exc.headers}
        response = error_response(exc, path)
        code = exc.problem.code
        await exchange.finish(
            Ending(
                response.status_code, outcome_of(code), code, error=exc,
                stored=_storable(response, exchange.claim),
                # Refused for a full spool before anything was done: nothing to account.
                record=exc.problem is not Catalog.USAGE_SPOOL_FULL,
            )
        )  # fmt: skip
        return response
    except BaseException as exc:
        # The client went away (the server cancelled us), or a bug: either way
        # the prompt may have reached a backend, so it is counted.
        asked = trace.inference
        ending = _abandoned(exc, token_counts(asked.body, None, 0) if asked else TokenCounts())
        await exchange.finish(ending)
        raise


def server_timing(total_s: float, backend_s: float) -> str:
    """The `Server-Timing` field (W3C Server Timing, durations in ms): `router`,
    the router's own share (auth, limits, routing, translation), and `backend`,
    the wait on backends (every attempt, failovers and hedges included), so a
    client or `router loadtest` can tell one from the other per request."""
    router_ms = max(0.0, total_s - backend_s) * 1000
    return f"router;dur={router_ms:.3f}, backend;dur={backend_s * 1000:.3f}"


def _abandoned(exc: BaseException, counts: TokenCounts) -> Ending:
    """A request that ended without an answer: cancelled, or failed inside the router."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return Ending(CLIENT_CLOSED, Outcome.CLIENT_CANCELLED, counts=counts)
    return Ending(500, Outcome.BACKEND_ERROR, Catalog.INTERNAL_ERROR.code, counts=counts)


async def _admit(
    state: RouterState, exchange: Exchange, headers: Mapping[str, str]
) -> idem.StoredResponse | None:
    """Admission, in order: the spool has room; an in-flight slot (or 503
    `overloaded` at once: before any store is asked, so a saturated router
    refuses cheaply); then the idempotency key is ours (or its stored answer
    is returned) and the limits admit the request. The exchange holds what
    each step took.

    The claim and the limits are asked at once (with Redis, in one pipeline):
    the claim's outcome decides first, as if it had been asked first. A stored
    answer is replayed and a refused claim (409, 422, 503) answered even when
    the limits refused too; a ticket taken meanwhile is on the exchange, so
    `finish` gives it back unserved (a replay is not charged). The claim is
    sent before the limits are asked and read after, not run as a task: with
    Redis its reply comes in the limits' pipeline, so reading it takes no
    loop turn of its own (a task took two more, each a whole turn of a
    saturated loop)."""
    trace, config = exchange.trace, exchange.runtime.config
    spool = state.usage.recorder.spool
    if not spool.accepting:
        spool.refused += 1
        raise DependencyError(
            Catalog.USAGE_SPOOL_FULL,
            "Usage records cannot be delivered right now and the local spool is full; "
            "the request was not served. Retry later.",
            headers={"retry-after": "5"},
        )
    await exchange.enter(state.backpressure)
    principal, inference = trace.principal, trace.inference
    assert principal is not None
    assert inference is not None
    claiming = state.usage.start_claim(trace, headers, config.idempotency)
    try:
        with tracing.span("router.limits"):
            exchange.ticket = await state.limits.admit(
                config, trace.request_id, principal.limit_scope, inference
            )
    except Exception:
        if claiming is None:
            raise
        claimed = await _claimed(exchange, claiming)
        if isinstance(claimed, idem.StoredResponse):
            return claimed
        raise
    except BaseException:  # cancelled: whatever the claim took is given back
        if claiming is not None:
            with contextlib.suppress(Exception):
                await _claimed(exchange, claiming)
        raise
    if claiming is None:
        return None
    claimed = await _claimed(exchange, claiming)
    return claimed if isinstance(claimed, idem.StoredResponse) else None


async def _claimed(
    exchange: Exchange, claiming: Awaitable[Claim | idem.StoredResponse]
) -> Claim | idem.StoredResponse:
    """The claim's outcome, waited for even while the request is cancelled: a
    key it took is then on the exchange, for `finish` to release. Raises the
    claim's refusal. A task cancelled by asyncio itself (the server past its
    graceful timeout) stops waiting; the claim still goes ahead, and a key it
    took for nobody is given back (Redis) or lapses after its lease (SQLite)."""
    with anyio.CancelScope(shield=True):
        claimed = await claiming
    if isinstance(claimed, Claim):
        exchange.claim = claimed
    return claimed


def _storable(response: Response, claim: Claim | None) -> idem.StoredResponse | None:
    """The answer to keep for retries of an idempotent request (None: release its key)."""
    if claim is None or not idem.storable(response.status_code):
        return None
    return idem.StoredResponse(
        response.status_code,
        response.headers.get("content-type", "application/json"),
        tuple((k, v) for k, v in response.headers.items() if k == "x-router-backend"),
        bytes(memoryview(response.body)),
    )


def _forwarded(inference: InferenceRequest, body: Mapping[str, Any]) -> InferenceRequest:
    if body is inference.body:
        return inference
    return attrs.evolve(inference, body=body)


async def _stream(
    state: RouterState,
    exchange: Exchange,
    forwarded: InferenceRequest,
    candidates: tuple[routing.Candidate, ...],
    headers: dict[str, str],
    pinning: Pinning = NO_PINNING,
    conversation: str | None = None,
) -> Response:
    """Open the stream (failing over before the first byte) and hand it to the relay,
    which finishes the exchange when the stream ends, however it ends."""
    config, trace = exchange.runtime.config, exchange.trace
    strip_usage = False
    chat = forwarded.operation in (Operation.CHAT, Operation.COMPLETION)
    if chat and not _asks_usage(forwarded.body):  # usage records need every stream's counts
        options = {**(forwarded.body.get("stream_options") or {}), "include_usage": True}
        forwarded = attrs.evolve(forwarded, body={**forwarded.body, "stream_options": options})
        strip_usage = True
    sent = time.perf_counter()
    opened = exchange.opened = await state.dispatch.open(
        forwarded, candidates, config.routing.max_attempts
    )
    opened_at = time.perf_counter()
    state.affinity.served(pinning, opened.candidate.backend)
    relay = relay_for(
        forwarded.operation, opened.wire, forwarded.model, strip_usage=strip_usage,
        answer_id=answer_id(forwarded.operation, trace.request_id),
        created_at=trace.started_at_us // 1_000_000, request=forwarded.body,
    )  # fmt: skip
    tally = StreamTally(relay)
    if exchange.claim is not None:  # keep the events, to replay them to a retry
        tally.capture(config.idempotency.max_body_bytes)

    async def ended(tally: StreamTally) -> None:
        kept = tally.relay.response
        if kept is not None and trace.principal is not None:
            await state.conversations.keep(
                trace.principal.organization, forwarded, kept, conversation
            )
        ending = _stream_ending(exchange, opened, tally)
        trace.first_byte = tally.first_byte
        if trace.principal is not None:  # the stream's access line, when it ends
            content = _content(config, forwarded, None)
            _access(trace.request_id, trace.principal, forwarded, opened, 200, trace.started,
                    ending.outcome.value, content)  # fmt: skip
        await exchange.finish(ending)

    headers["x-router-backend"] = opened.candidate.backend
    # A stream's timing covers its start: accept to the backend's answer opening.
    headers["server-timing"] = server_timing(opened_at - trace.started, opened_at - sent)
    return RelayResponse(opened, headers, tally, ended)


def _stream_ending(exchange: Exchange, opened: Opened, tally: StreamTally) -> Ending:
    inference = exchange.trace.inference
    assert inference is not None
    # Cancelled or broken before the backend reported usage: count what was
    # relayed (about a token per content event).
    relay = tally.relay
    counts = stream_counts(inference.body, relay.reported, relay.content_events)
    stored = None
    if relay.done:
        outcome, code, status = Outcome.SUCCESS, None, 200
        if tally.captured is not None:
            stored = idem.StoredResponse(
                200, "text/event-stream",
                (("x-router-backend", opened.candidate.backend),),
                b"".join(tally.captured),
            )  # fmt: skip
    elif tally.broken:
        outcome, code, status = Outcome.BACKEND_ERROR, Catalog.BACKEND_ERROR.code, 200
    else:
        outcome, code, status = Outcome.CLIENT_CANCELLED, None, CLIENT_CLOSED
    return Ending(
        status, outcome, code, counts, served=relay.content_events > 0,
        backend=opened.candidate.backend, backend_model=opened.candidate.model,
        broken=tally.broken, stored=stored,
    )  # fmt: skip


def _asks_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def shape_openai(
    inference: InferenceRequest,
    opened: Opened,
    body: dict[str, Any],
    latency_ms: float,
    request_id: str,
) -> Any:
    """OpenAI routes answer with the backend's body, under the public model name
    (translated back from Messages when the backend is an Anthropic one)."""
    if opened.wire is not inference.operation:
        return shape_protocol(inference, opened, body, latency_ms, request_id)
    if "model" in body:
        body["model"] = inference.model
    return body


def shape_protocol(
    inference: InferenceRequest,
    opened: Opened,
    body: dict[str, Any],
    latency_ms: float,
    request_id: str,
) -> Any:
    """Messages and Responses answer in their own protocol, translated back
    from chat when the backend spoke chat."""
    return client_answer(
        inference, opened.wire, body, public_model=inference.model,
        answer_id=answer_id(inference.operation, request_id),
        created_at=int(time.time()),
    )  # fmt: skip


def shape_inference(
    inference: InferenceRequest,
    opened: Opened,
    body: dict[str, Any],
    latency_ms: float,
    request_id: str,
) -> Any:
    """`/v1/inference` answers with the completion and a usage summary."""
    if opened.wire is not inference.operation:
        body = shape_protocol(inference, opened, body, latency_ms, request_id)
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
