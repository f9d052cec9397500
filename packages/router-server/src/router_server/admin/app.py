"""The admin API as an ASGI app, served only on the admin listener (mutual TLS).

It shares the public app's `RouterState` through `SharedRouter`: the public
app's lifespan hands its state over once opened (`create_app(state_ready=...)`),
and the admin app's lifespan waits for it, so the admin listener opens only
once the router is ready. Errors are RFC 9457 problem+json.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router_core import routing
from router_core.problems import Catalog, ClientError, RouterError
from router_server.admin import codec, keys, tls
from router_server.admin.audit import AuditEntry, Change, audit_detail
from router_server.admin.inputs import explain_query_from, override_from
from router_server.middleware import RouterMiddleware
from router_server.pipeline import RouterState, read_json_body
from router_server.responses import error_response, json_response

MAX_BODY_BYTES = 64 * 1024
MAX_AUDIT = 1000


class SharedRouter:
    """The router state both listeners serve, handed over by the public app."""

    def __init__(self) -> None:
        self._state: RouterState | None = None
        self._ready = anyio.Event()

    def set(self, state: RouterState) -> None:
        self._state = state
        self._ready.set()

    async def wait(self) -> RouterState:
        await self._ready.wait()
        assert self._state is not None
        return self._state

    @property
    def state(self) -> RouterState:
        if self._state is None:
            raise RuntimeError("the router state is not open yet")
        return self._state


def describe_backends(state: RouterState) -> dict[str, dict[str, Any]]:
    """Each backend's health: the one place that reads the health registry."""
    return state.health.describe()


def _backend_views(state: RouterState) -> Mapping[str, routing.BackendView]:
    return state.health.views()


def _shown_url(url: str) -> str:
    """The URL without any user:password it may carry."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _actor() -> str:
    subject = tls.client_subject()
    if not subject:
        # Only reachable when not served behind the admin TLS listener.
        raise ClientError(
            Catalog.ADMIN_IDENTITY_REQUIRED, "No verified client certificate on this connection."
        )
    return subject


def _state(request: Request) -> RouterState:
    shared: SharedRouter = request.app.state.shared
    return shared.state


async def backends(request: Request) -> Response:
    state = _state(request)
    now = time.time()
    health = describe_backends(state)
    active = state.overrides.active(now)
    data = [
        {
            "name": name,
            "base_url": _shown_url(backend.base_url),
            "health": health.get(name),
            "overrides": [codec.to_data(o) for o in active if o.backend == name],
        }
        for name, backend in state.config.backends.items()
    ]
    return json_response({"backends": data})


async def list_overrides(request: Request) -> Response:
    state = _state(request)
    active = state.overrides.active(time.time())
    return json_response(
        {"overrides": [codec.to_data(o) for o in active], "store": state.overrides.status()}
    )


async def create_override(request: Request) -> Response:
    state = _state(request)
    actor = _actor()
    now = time.time()
    override = override_from(await read_json_body(request), state.config, actor, now)
    entry = AuditEntry(_audit_id(), now, actor, Change.CREATED, override, override.reason)
    await state.overrides.create(override, entry)
    await _record(state, entry)
    return json_response(codec.to_data(override), status=201)


async def delete_override(request: Request) -> Response:
    state = _state(request)
    actor = _actor()
    override_id: str = request.path_params["override_id"]
    reason = request.query_params.get("reason", "").strip() or "deleted before expiry"
    now = time.time()
    override = state.overrides.get(override_id, now)
    if override is None:
        # The view may lag another replica's change by up to refresh_s: ask the store.
        await state.overrides.refresh()
        override = state.overrides.get(override_id, now)
    missing = ClientError(Catalog.OVERRIDE_NOT_FOUND, f"No active override {override_id!r}.")
    if override is None:
        raise missing
    entry = AuditEntry(_audit_id(), now, actor, Change.DELETED, override, reason[:500])
    if not await state.overrides.delete(override_id, entry):
        raise missing
    await _record(state, entry)
    return Response(status_code=204)


async def _record(state: RouterState, entry: AuditEntry) -> None:
    """The change as an `audit.router.v1` record, beside the usage records."""
    await state.usage.recorder.audit_event(
        str(entry.change),
        organization=entry.override.organization,
        detail=audit_detail(entry),
    )


async def explain(request: Request) -> Response:
    state = _state(request)
    query = explain_query_from(await read_json_body(request))
    org = state.config.organizations.get(query.organization)
    if org is None:
        raise ClientError(
            Catalog.VALIDATION_FAILED,
            f"Invalid request: organization: unknown organization {query.organization!r}",
            param="organization",
        )
    model = routing.resolve_model(state.config, org, query.model)
    now = time.time()
    applied = state.overrides.applicable(query.model, query.organization, now)
    decision = routing.decide(
        query.model, model, query.organization, query.key_id, random.Random(),
        _backend_views(state), applied=applied,
    )  # fmt: skip
    matching = [
        o for o in state.overrides.active(now) if o.matches(query.model, query.organization)
    ]
    return json_response(
        {
            "model": query.model,
            "organization": query.organization,
            "key_id": query.key_id,
            "decision": decision.explain(),
            "overrides": [codec.to_data(o) for o in matching],
        }
    )


async def audit(request: Request) -> Response:
    state = _state(request)
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT:
        raise ClientError(
            Catalog.VALIDATION_FAILED,
            f"Invalid request: limit: must be an integer from 1 to {MAX_AUDIT}",
            param="limit",
        )
    entries = await state.overrides.store.audit(int(raw))
    return json_response({"entries": [codec.to_data(e) for e in entries]})


def _audit_id() -> str:
    return "aud_" + secrets.token_hex(8)


async def _errors(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RouterError):
        return error_response(exc, request.url.path)
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = ClientError(
            Catalog.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.url.path}."
        )
    else:
        error = ClientError(Catalog.NOT_FOUND, f"No route for {request.url.path}.")
    return error_response(error, request.url.path)


ROUTES = [
    Route("/admin/v1/backends", backends, methods=["GET"]),
    Route("/admin/v1/overrides", list_overrides, methods=["GET"]),
    Route("/admin/v1/overrides", create_override, methods=["POST"]),
    Route("/admin/v1/overrides/{override_id}", delete_override, methods=["DELETE"]),
    Route("/admin/v1/explain", explain, methods=["POST"]),
    Route("/admin/v1/audit", audit, methods=["GET"]),
    *keys.ROUTES,
]


def create_admin_app(shared: SharedRouter) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await shared.wait()
        yield

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(RouterMiddleware, max_body_bytes=MAX_BODY_BYTES)],
        exception_handlers={HTTPException: _errors, RouterError: _errors},
        lifespan=lifespan,
    )
    app.state.shared = shared
    return app
