"""The Starlette application: routes, lifespan, and error handlers.

Clients to backends are opened in the lifespan and handed to handlers as
typed state (`pipeline.RouterState`); nothing is opened per request.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router_core import routing
from router_core.auth import KeyIndex
from router_core.config import RouterConfig
from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.requests import Operation, validate_inference, validate_openai
from router_server import openapi
from router_server.backends import close_clients, open_clients
from router_server.health import Health, probe_all, probe_forever
from router_server.limits import LimitGate, LimitStore, MemoryStore
from router_server.middleware import RouterMiddleware
from router_server.pipeline import (
    RouterState,
    authenticate_request,
    serve,
    shape_inference,
    shape_openai,
    state_of,
)
from router_server.responses import error_response, json_response
from router_server.usage.setup import open_usage


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
    try:
        principal = authenticate_request(request, state)
    except RouterError as exc:
        return error_response(exc, request.url.path)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "router"}
        for name in routing.visible_models(state.config, principal.org)
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
    return json_response({"status": "ready", "models": sorted(state.config.models)})


async def status(request: Request) -> Response:
    state = state_of(request)
    return json_response(
        {
            "status": "degraded" if state.health.unserved_models(state.config) else "ok",
            "backends": {
                name: {"reachable": state.health.reachable.get(name)}
                for name in state.config.backends
            },
            "limits": state.limits.status(),
            "usage": state.usage.status(),
        }
    )


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
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/status/healthz", healthz, methods=["GET"]),
    Route("/v1/status/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET"]),
]


def open_limit_store(
    config: RouterConfig, env: Mapping[str, str], given: LimitStore | None
) -> tuple[LimitStore, Callable[[], Awaitable[None]]]:
    """The configured limit store, and how to close it."""

    async def nothing() -> None:
        return None

    if given is not None:
        return given, nothing
    if config.limits.store == "redis":
        from router_server.redis_limits import RedisLedger

        ledger = RedisLedger.from_url(
            env[config.limits.redis_url_env], timeout_s=config.limits.timeout_ms / 1000
        )
        return ledger, ledger.aclose
    return MemoryStore(), nothing


def create_app(
    config: RouterConfig,
    *,
    env: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
    limit_store: LimitStore | None = None,
) -> Starlette:
    """The router as an ASGI app. Backend clients open when the app starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        environ = os.environ if env is None else env
        backends = open_clients(config, environ)
        store, close_store = open_limit_store(config, environ, limit_store)
        usage = open_usage(config, environ)
        state = RouterState(
            config=config,
            keys=KeyIndex.from_config(config),
            backends=backends,
            health=Health(),
            limits=LimitGate(config, store),
            rng=rng or random.Random(),
            usage=usage,
        )
        probe = config.health
        try:
            await probe_all(state.health, backends, probe.probe_timeout_s)
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    probe_forever,
                    state.health,
                    backends,
                    probe.probe_interval_s,
                    probe.probe_timeout_s,
                )
                tg.start_soon(usage.run)
                yield {"router": state}
                await usage.drain()
                tg.cancel_scope.cancel()
        finally:
            await close_clients(backends)
            await close_store()
            await usage.aclose()

    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(RouterMiddleware, max_body_bytes=config.server.max_body_bytes)],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
