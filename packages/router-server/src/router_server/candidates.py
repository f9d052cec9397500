"""Routing a request: its candidates from the core's decision, waiting (bounded)
while every backend is full, and the decision explained in the debug log.

Rules:
- The decision is `router_core.routing.decide` on the backends' live views
  (`Health.views`), the overrides in force and the request's affinity.
- When every candidate is skipped only for being full, the request waits for
  a freed slot within `server.queue_timeout_ms`, then is refused 503
  `overloaded` (shed reason `backend_capacity`); with no candidate for any
  other reason it is 503 `no_backend_available`, naming each backend's reason.
- At debug level the access log gets a `routed` line: candidates with their
  load, skipped backends with why, affinity's home, depth and spills, and
  the request's block count and first block hash (never its prompt).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

from router_core import routing
from router_core.affinity import AffinityRequest
from router_core.auth import Principal
from router_core.config import Model
from router_core.fair_share import ShedReason
from router_core.problems import Catalog, DependencyError
from router_core.requests import Operation
from router_server.backpressure import overloaded
from router_server.runtime import Runtime

if TYPE_CHECKING:
    from router_server.pipeline import RouterState

log = logging.getLogger("router.access")


async def route_candidates(
    state: RouterState,
    runtime: Runtime,
    operation: Operation,
    name: str,
    model: Model,
    principal: Principal,
    affinity: AffinityRequest | None = None,
    request_id: str | None = None,
) -> tuple[routing.Candidate, ...]:
    """The candidates for this request; waits (bounded) when every one is full.
    The decision's explanation goes to the access log at debug level."""
    config = runtime.config
    unable = runtime.unable.get(operation)

    applied = state.overrides.applicable(name, principal.organization, time.time())

    def decide() -> routing.RouteChoice:
        choice = routing.decide(
            name, model, principal.organization, principal.key_id, state.rng,
            state.health.views(), applied, unable, affinity,
        )  # fmt: skip
        if log.isEnabledFor(logging.DEBUG):
            _explained(request_id, name, model, choice, affinity)
        return choice

    decision = decide()
    if decision.only_capacity_skips():
        queue_timeout_s = config.server.queue_timeout_ms / 1000
        with anyio.move_on_after(queue_timeout_s):
            while not decision.candidates:
                await state.health.wait_for_capacity()
                decision = decide()
        if not decision.candidates:
            state.backpressure.count_shed(ShedReason.BACKEND_CAPACITY, principal.organization)
            raise overloaded(
                f"Every backend for model {name!r} is at its in-flight cap. Retry shortly.",
                queue_timeout_s,
                ShedReason.BACKEND_CAPACITY,
            )
    if not decision.candidates:
        reasons = "; ".join(f"{s.backend}: {s.reason} ({s.detail})" for s in decision.skipped)
        raise DependencyError(
            Catalog.NO_BACKEND_AVAILABLE,
            f"No backend can take model {name!r} now: {reasons}.",
            headers={"retry-after": str(max(1, round(config.health.open_s)))},
        )
    return decision.candidates


def _explained(
    request_id: str | None,
    name: str,
    model: Model,
    choice: routing.RouteChoice,
    affinity: AffinityRequest | None,
) -> None:
    """The routing decision, for the debug access log: candidates with their
    load, skipped backends with why, affinity's home and spills, and the
    request's block hashes (never its prompt)."""
    explained = choice.explain()
    if affinity is not None and "affinity" in explained:
        explained["affinity"]["blocks"] = len(affinity.blocks)
        explained["affinity"]["first_block"] = affinity.blocks[0]
    log.debug(
        "routed",
        extra={
            "request_id": request_id, "model": name, "strategy": str(model.strategy),
            "routing": explained,
        },
    )  # fmt: skip
