"""Routes of the operator surfaces on the public listener.

- `GET /metrics`: Prometheus text; open, or behind the ops token when one is set.
- `GET /v1/status`: every component with its state (see `ops.status`).
- `GET /ops`: the operator page (static HTML and JS, no data in it).
- `GET /ops/summary`: the page's data, behind the ops token
  (`observability.ops_token_env`); 404 when no token is configured.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from router_core.problems import Catalog, ClientError
from router_server import gc_watch
from router_server.group import LOCAL_SCRAPE, group_metrics, single_status
from router_server.metrics import CONTENT_TYPE, render
from router_server.ops import status as probes
from router_server.pipeline import RouterState, state_of
from router_server.responses import error_response, json_response

_PAGE = resources.files("router_server.ops").joinpath("page.html").read_bytes()


def _authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return False
    presented = request.headers.get("authorization", "")
    return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())


def _denied(request: Request) -> Response:
    error = ClientError(Catalog.INVALID_API_KEY, "This endpoint needs the operator token.")
    return error_response(error, request.url.path)


async def metrics(request: Request) -> Response:
    state = state_of(request)
    if state.ops.token is not None and not _authorized(request, state.ops.token):
        return _denied(request)
    body = render(state.ops.registry)
    if state.worker is not None and LOCAL_SCRAPE not in request.headers:
        # Any worker answers for the group (see `group`); the peers check the token too.
        forwarded = {k: v for k, v in request.headers.items() if k == "authorization"}
        body = await group_metrics(state.worker, body, forwarded)
    return Response(body, media_type=CONTENT_TYPE)


async def components(state: RouterState) -> dict[str, Any]:
    usage = state.usage.status()
    out: dict[str, Any] = {
        "config": {"state": "ok", "version": state.config.version},
        "backends": probes.backends_component(state.health.describe()),
        "kafka": probes.kafka_component(usage),
        "spool": probes.spool_component(usage),
    }
    out["redis"] = await probes.redis_component(state.stores)
    return out


async def status(request: Request) -> Response:
    state = state_of(request)
    found = await components(state)  # the only wait, Redis' ping, is bounded
    unserved = state.health.unserved_models(state.config)
    return json_response(
        {
            "status": probes.overall(found, unserved),
            "config_version": state.config.version,
            "unserved_models": unserved,
            "components": found,
            # The flat fields earlier clients read (backends as the admin API shows them):
            "backends": state.health.describe(),
            "backpressure": state.backpressure.status(),
            "retries": {
                "retries": state.dispatch.retries,
                "refused_by_budget": state.dispatch.retries_refused,
                "hedges": state.dispatch.hedges,
            },
            "limits": state.limits.status(),
            # Which process answered: its pid and its slot among the box's workers.
            "process": single_status() if state.worker is None else state.worker.status(),
            # That process's cycle collector: its pauses stop every request in flight.
            "gc": gc_watch.watch().status(),
            **{name: source() for name, source in state.status_sources.items()},
        }
    )


async def page(request: Request) -> Response:
    return HTMLResponse(_PAGE, headers={"cache-control": "no-store"})


async def summary(request: Request) -> Response:
    state = state_of(request)
    if state.ops.token is None:
        return error_response(ClientError(Catalog.NOT_FOUND, "No ops page."), request.url.path)
    if not _authorized(request, state.ops.token):
        return _denied(request)
    usage = state.usage.status()
    return json_response(
        {
            "config_version": state.config.version,
            "backends": probes.backends_component(state.health.describe()),
            "backpressure": state.backpressure.status(),
            "export": {
                "spool": probes.spool_component(usage),
                "ledger_lag_s": (usage.get("ledger") or {}).get("lag_s"),
                "kafka": probes.kafka_component(usage),
            },
            **state.ops.traffic.snapshot(),
        }
    )


ROUTES = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    Route("/ops", page, methods=["GET"]),
    Route("/ops/summary", summary, methods=["GET"]),
]
