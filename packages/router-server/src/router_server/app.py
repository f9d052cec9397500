"""The Starlette application: routes, lifespan, and error handlers.

Clients to backends are opened in the lifespan and handed to handlers as
typed state (`pipeline.RouterState`); nothing is opened per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router_core import routing
from router_core.config import RouterConfig
from router_core.config_enums import StateStoreKind
from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.requests import Operation, validate_inference, validate_openai
from router_core.retry_budget import RetryBudget
from router_server import gc_watch, openapi, protocol_routes, tracing
from router_server.admin.book import OverrideBook
from router_server.affinity import Affinity
from router_server.backends import close_clients, open_clients
from router_server.backpressure import Backpressure
from router_server.conversations import Conversations
from router_server.credentials.store import KeyEvent, event_detail
from router_server.credentials.verify import open_credentials
from router_server.dispatch import Dispatcher
from router_server.group import WorkerSlot
from router_server.health import Health
from router_server.limits import LimitGate, LimitStore
from router_server.load_scraper import LoadScraper
from router_server.metrics import StateCollector
from router_server.middleware import RouterMiddleware
from router_server.ops import Ops
from router_server.ops import routes as ops_routes
from router_server.ops import status as probes
from router_server.pipeline import (
    RouterState,
    authenticate_request,
    serve,
    shape_inference,
    shape_openai,
    state_of,
)
from router_server.probes import probe_all, probe_forever
from router_server.reload import Reloader
from router_server.responses import error_response, json_response
from router_server.runtime import Runtime
from router_server.settlements import OUTBOX_FILE, SettlementOutbox
from router_server.state.layer import StateLayer
from router_server.usage.setup import drain_removed_slots, open_usage
from router_server.usage.sink import UsageSink


async def chat_completions(request: Request) -> Response:
    return await serve(request, partial(validate_openai, Operation.CHAT), shape_openai)


async def completions(request: Request) -> Response:
    return await serve(request, partial(validate_openai, Operation.COMPLETION), shape_openai)


async def embeddings(request: Request) -> Response:
    return await serve(request, partial(validate_openai, Operation.EMBEDDING), shape_openai)


async def inference(request: Request) -> Response:
    return await serve(request, validate_inference, shape_inference)


async def list_models(request: Request) -> Response:
    state = state_of(request)
    runtime = state.runtime
    config = runtime.config
    try:
        principal = await authenticate_request(request, state, runtime)
    except RouterError as exc:
        return error_response(exc, request.url.path)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "router"}
        for name in routing.visible_models(config, principal.org)
        if principal.allows_model(name)  # a key scoped to some models lists only those
    ]
    return json_response({"object": "list", "data": data})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = state_of(request)
    unserved = state.health.unserved_models(state.config)
    if unserved:
        error = DependencyError(
            Catalog.NO_BACKEND_AVAILABLE,
            "Not ready: no reachable backend for " + ", ".join(unserved) + ".",
            extra={"unserved_models": unserved},
        )
        return error_response(error, request.url.path)
    body: dict[str, Any] = {"status": "ready", "models": sorted(state.config.models)}
    # Still ready without all of Redis: the limits' failure policy answers for
    # what it cannot, and every replica shares one Redis, so turning them all
    # away at once would make a lost cluster master a total outage.
    redis = await probes.redis_component(state.stores)
    if redis["state"] in ("degraded", "down"):
        body["degraded"] = {"redis": redis["state"]}
    return json_response(body)


async def openapi_document(request: Request) -> Response:
    return json_response(openapi.document())


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: RouterError = ClientError(
            Catalog.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.url.path}.",
            headers=exc.headers,
        )
    else:
        error = ClientError(Catalog.NOT_FOUND, f"No route for {request.url.path}.")
    return error_response(error, request.url.path)


ROUTES = [
    Route("/v1/inference", inference, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/messages", protocol_routes.create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", protocol_routes.count_tokens, methods=["POST"]),
    Route("/v1/responses", protocol_routes.create_response, methods=["POST"]),
    Route(
        "/v1/responses/{response_id}", protocol_routes.stored_response, methods=["GET", "DELETE"]
    ),
    Route(
        "/v1/responses/{response_id}/input_items",
        protocol_routes.response_input_items,
        methods=["GET"],
    ),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/status/healthz", healthz, methods=["GET"]),
    Route("/v1/status/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET"]),
    *ops_routes.ROUTES,
]


@contextlib.contextmanager
def on_sighup(handler: Callable[[], None]) -> Iterator[None]:
    """Call `handler` on SIGHUP while inside; a no-op off the main thread (tests)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, handler)
    except (RuntimeError, ValueError, NotImplementedError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def _closing(opened: contextlib.AsyncExitStack, close: Callable[[], Awaitable[object]]) -> None:
    """Call `close` when `opened` unwinds, shielded: a cancelled lifespan still closes."""

    async def shielded() -> None:
        with anyio.CancelScope(shield=True):
            await close()

    opened.push_async_callback(shielded)


def _key_audit(usage: UsageSink) -> Callable[[KeyEvent], Awaitable[None]]:
    """Key changes made through this router as `audit.router.v1` records, in the
    one audit trail with override changes and limit denials."""

    async def record(event: KeyEvent) -> None:
        await usage.recorder.audit_event(
            str(event.change),
            organization=event.organization,
            key_id=event.key_id,
            detail=event_detail(event),
        )

    return record


def _open_ops(
    live: Callable[[], RouterState],
    usage: UsageSink,
    config: RouterConfig,
    environ: Mapping[str, str],
) -> Ops:
    """Metrics and the ops window, both fed by every answered request."""

    def sources() -> dict[str, Any]:
        state = live()
        return {
            "backends": state.health.describe(),
            "backpressure": state.backpressure.status(),
            "limits": state.limits.status(),
            "usage": state.usage.status(),
            "gc": gc_watch.watch().status(),
        }

    token_env = config.observability.ops_token_env
    ops = Ops(lambda: live().config, StateCollector(sources), environ.get(token_env or ""))
    usage.recorder.observers.append(ops)
    return ops


def create_app(
    config: RouterConfig,
    *,
    env: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
    limit_store: LimitStore | None = None,
    config_path: str | Path | None = None,
    state_ready: Callable[[RouterState], None] | None = None,
    backend_transport: httpx.AsyncBaseTransport | None = None,
    worker: WorkerSlot | None = None,
) -> Starlette:
    """The router as an ASGI app. Backend clients open when the app starts.

    With `config_path`, the config reloads from that file on SIGHUP (when the
    app runs in the main thread) and whenever the file changes. `state_ready`
    gets the opened state (the admin listener serves it too).
    `backend_transport` replaces the network under every backend call (health
    probes included), before and after a reload: tests pass an
    `httpx.MockTransport` answering as the backends would. The caller keeps
    it and closes it; by default each backend has a pool of its own.
    `worker`: this process's slot among `router serve --workers N` (its own
    usage spool, the group's /metrics).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        environ = os.environ if env is None else env
        # One unit: each resource is put on `opened` as soon as it exists, and
        # they close in reverse order whatever fails, opening the next included.
        async with contextlib.AsyncExitStack() as opened:
            live: RouterState | None = None
            backends = open_clients(config, environ, backend_transport)
            # A reload swaps in new clients (closing the old): close the current ones.
            _closing(opened, lambda: close_clients(backends if live is None else live.backends))
            # One state layer: one Redis client (or the data directory) for every store.
            stores = StateLayer.open(config, environ)
            _closing(opened, stores.aclose)
            store = stores.limit_store() if limit_store is None else limit_store
            outbox = None
            if stores.kind == StateStoreKind.REDIS:
                outbox = SettlementOutbox(stores.dir / OUTBOX_FILE)
                opened.callback(outbox.close)
            slot = 0 if worker is None else worker.slot
            usage = await opened.enter_async_context(open_usage(config, environ, stores, slot=slot))
            credentials = open_credentials(stores)
            _closing(opened, credentials.aclose)
            credentials.book.on_change = _key_audit(usage)
            override_store = stores.override_store()
            _closing(opened, override_store.aclose)
            response_store = stores.response_store(config.responses.max_bytes)
            _closing(opened, response_store.aclose)

            def current() -> RouterState:
                assert live is not None
                return live

            # Components read their settings from the running config (a reload
            # swaps the runtime), and keep only live state.
            health = Health(lambda: current().runtime.config)
            state = RouterState(
                runtime=Runtime.build(config, backends),
                health=health,
                limits=LimitGate(
                    store, stores.kind, outbox, processes=1 if worker is None else worker.count
                ),
                backpressure=Backpressure(lambda: current().runtime.config.server),
                dispatch=Dispatcher(
                    health,
                    lambda: state.backends,
                    RetryBudget(lambda: current().runtime.config.routing),
                ),
                rng=rng or random.Random(),
                overrides=OverrideBook(override_store, refresh_s=config.state.refresh_s),
                usage=usage,
                ops=_open_ops(current, usage, config, environ),
                credentials=credentials,
                stores=stores,
                conversations=Conversations(
                    response_store, lambda: current().runtime.config.responses, time.time
                ),
                affinity=Affinity(lambda: current().runtime.config),
                worker=worker,
            )
            live = state
            tracing.start(config.observability)
            opened.callback(tracing.stop)
            await probe_all(state.health, backends, config.health.probe_timeout_s)
            await state.overrides.refresh()
            await credentials.book.refresh()
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe_forever, state.health, lambda: state.backends)
                # Backends' own load metrics (those with `load_metrics`), off the request path.
                tg.start_soon(LoadScraper(state.health, backend_transport).run)
                tg.start_soon(state.backpressure.run)  # event-loop lag, adaptive limit
                tg.start_soon(state.overrides.follow)
                tg.start_soon(credentials.book.follow)
                state.status_sources["keys"] = credentials.book.status
                tg.start_soon(usage.run)
                if worker is not None and worker.slot == 0:
                    tg.start_soon(drain_removed_slots, config, environ, worker.count)
                tg.start_soon(state.limits.replay_forever)
                tg.start_soon(state.limits.reap_forever, state.rng)
                state.status_sources["overrides"] = state.overrides.status
                state.status_sources["usage"] = usage.status
                state.status_sources["responses"] = state.conversations.status
                state.status_sources["affinity"] = state.affinity.status
                if config_path is not None:
                    reloader = Reloader(Path(config_path), environ, backend_transport)
                    state.status_sources["config"] = reloader.status
                    tg.start_soon(reloader.watch, state, tg)
                    opened.enter_context(on_sighup(reloader.request))
                if state_ready is not None:
                    state_ready(state)
                yield {"router": state}
                await usage.drain()
                tg.cancel_scope.cancel()

    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(RouterMiddleware, max_body_bytes=config.server.max_body_bytes)],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
