"""Routing: from a public model name to an ordered plan of backends to try.

Rules:
- Only models the caller's organization may use are visible; an unknown or
  forbidden model is `model_not_found`, naming the models the caller may use.
- The targets are the first route rule matching the caller's organization or
  key, else the model's own list. A pin override replaces them with one backend.
- A target is skipped, with the reason recorded, when it cannot take the
  request's protocol (`unable`: a backend without `openai` that does not
  speak it natively), when it is drained by an
  override, its circuit is open (or half-open with its trial slot taken), or
  it is at its in-flight cap.
- The rest are ordered tier by tier (0 = primary first). Within a tier the
  order is weighted random (Efraimidis-Spirakis: sort by u ** (1 / weight),
  computed as log(u) / weight so that small weights do not underflow to 0),
  with weights from the config or a weight override, scaled by the backend's
  ramp while it is being re-admitted after recovery. `least_latency` then
  puts the lower-latency of the first two first (power of two choices).
- `least_load` scores each backend's load (`load_score`: the fullest of its
  in-flight requests against its cap, its outstanding tokens against its
  token capacity, and the load its own metrics report, 0 = idle, 1 = full).
  Backends at or past 1 go after every other; of the rest, the less loaded
  of the first two weighted picks goes first (power of two choices: good
  across replicas that do not share their counts, where always taking the
  least loaded would send them all to the same backend).
- With affinity (`router_core.affinity`), the request's home backend goes
  first when its load is within the bound, else the next one in its
  prefix's rendezvous order that is; the rest follow in the strategy's order.
- Every decision explains itself: which rule applied, the candidates in
  order with their load, each skipped backend with why, and affinity's
  home, depth and spills. Randomness is passed in.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from router_core.affinity import AffinityChoice, AffinityRequest, choose
from router_core.config import Model, ModelTarget, Organization, RouterConfig
from router_core.overrides import NO_OVERRIDES, Applied
from router_core.problems import Catalog, ClientError


@attrs.frozen
class Candidate:
    backend: str
    # The model name the backend knows.
    model: str
    tier: int = 0


@attrs.frozen
class BackendView:
    """What routing needs to know about a backend at the moment of the decision."""

    available: bool = True
    circuit: str = "closed"
    in_flight: int = 0
    max_in_flight: int = 2**31
    latency_ms: float | None = None
    # Share of its weight while being re-admitted after recovery (1 = fully).
    ramp: float = 1.0
    # Asked for no requests for now (its Retry-After); its circuit is not in doubt.
    throttled: bool = False
    # Tokens of the requests in flight (each: its prompt bound plus its most
    # output), and how many the backend takes at once (None: no token cap).
    outstanding_tokens: int = 0
    max_outstanding_tokens: int | None = None
    # The load the backend's own metrics report (0 = idle, 1 = full), None
    # when it has none or they are stale.
    reported_load: float | None = None


HEALTHY = BackendView()


def load_score(view: BackendView) -> float:
    """How full a backend is, 0 = idle, 1 = full: the fullest of its request
    slots, its token capacity and what its own metrics report."""
    score = view.in_flight / view.max_in_flight
    if view.max_outstanding_tokens:
        score = max(score, view.outstanding_tokens / view.max_outstanding_tokens)
    if view.reported_load is not None:
        score = max(score, view.reported_load)
    return score


class SkipReason(enum.StrEnum):
    DRAINING = "draining"
    OVERRIDDEN = "overridden"
    CIRCUIT_OPEN = "circuit_open"
    THROTTLED = "throttled"
    AT_CAPACITY = "at_capacity"
    PROTOCOL = "protocol"


@attrs.frozen
class Skipped:
    backend: str
    reason: SkipReason
    detail: str


@attrs.frozen
class RouteChoice:
    """Routing's answer for one request: the candidates in the order to try, and
    the backends it left out (with why)."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...]
    # Which targets applied: "model", "routes[N]" or "override:<id>".
    rule: str
    # Each candidate's load score (`least_load` or affinity only).
    loads: Mapping[str, float] = attrs.field(factory=dict)
    affinity: AffinityChoice | None = None

    def explain(self) -> dict[str, Any]:
        explained: dict[str, Any] = {
            "rule": self.rule,
            "candidates": [
                {"backend": c.backend, "model": c.model, "tier": c.tier}
                | ({"load": round(self.loads[c.backend], 4)} if c.backend in self.loads else {})
                for c in self.candidates
            ],
            "skipped": [
                {"backend": s.backend, "reason": str(s.reason), "detail": s.detail}
                for s in self.skipped
            ],
        }
        if self.affinity is not None:
            explained["affinity"] = self.affinity.explain()
        return explained

    def only_capacity_skips(self) -> bool:
        """No candidate, but some backend was skipped for being full (others may
        be out for other reasons): a slot may free up soon, so waiting is worth it."""
        return not self.candidates and any(s.reason is SkipReason.AT_CAPACITY for s in self.skipped)


def visible_models(config: RouterConfig, org: Organization) -> list[str]:
    return sorted(name for name in config.models if org.allows(name))


def resolve_model(config: RouterConfig, org: Organization, name: str) -> Model:
    model = config.models.get(name)
    if model is None or not org.allows(name):
        allowed = visible_models(config, org)
        listing = ", ".join(allowed) if allowed else "none"
        raise ClientError(
            Catalog.MODEL_NOT_FOUND,
            f"The model {name!r} does not exist or you do not have access to it. "
            f"Models available to you: {listing}.",
            param="model",
        )
    return model


def decide(
    public_name: str,
    model: Model,
    organization: str,
    key_id: str | None,
    rng: random.Random,
    views: Mapping[str, BackendView] | None = None,
    applied: Applied = NO_OVERRIDES,
    unable: Mapping[str, str] | None = None,
    affinity: AffinityRequest | None = None,
) -> RouteChoice:
    """The ordered candidates for one request, and why any backend was left out.

    `unable` names the backends that cannot take the request's protocol, with
    why; `affinity`, the request's prefix blocks when its model has affinity on.
    """
    views = views or {}
    unable = unable or {}
    targets, rule = _targets(model, organization, key_id)
    skipped: list[Skipped] = []
    pin = applied.pinned
    if pin is not None:
        rule = f"override:{pin.id}"
        for target in targets:
            if target.backend != pin.backend:
                skipped.append(
                    Skipped(
                        target.backend,
                        SkipReason.OVERRIDDEN,
                        f"model pinned to {pin.backend!r} by override {pin.id!r}: {pin.reason}",
                    )
                )
        targets = (_pinned_target(model, targets, pin.backend),)
    eligible: list[tuple[ModelTarget, float]] = []
    for target in targets:
        backend = target.backend
        view = views.get(backend, HEALTHY)
        if backend in unable:
            skipped.append(Skipped(backend, SkipReason.PROTOCOL, unable[backend]))
        elif backend in applied.drained:
            skipped.append(Skipped(backend, SkipReason.DRAINING, "drained by an override"))
        elif not view.available:
            skipped.append(Skipped(backend, SkipReason.CIRCUIT_OPEN, f"circuit {view.circuit}"))
        elif view.throttled:
            skipped.append(Skipped(backend, SkipReason.THROTTLED, "its Retry-After has not passed"))
        elif view.in_flight >= view.max_in_flight:
            skipped.append(
                Skipped(backend, SkipReason.AT_CAPACITY, f"{view.in_flight} in flight (the cap)")
            )
        else:
            weight_override = applied.weights.get(backend)
            weight = (
                weight_override.weight
                if weight_override and weight_override.weight
                else (target.weight)
            )
            eligible.append((target, weight * view.ramp))
    by_load = model.strategy == "least_load" or affinity is not None
    loads = {t.backend: load_score(views.get(t.backend, HEALTHY)) for t, _ in eligible if by_load}
    ordered: list[Candidate] = []
    chosen: AffinityChoice | None = None
    for tier in sorted({t.tier for t, _ in eligible}):
        in_tier = [(t, w) for t, w in eligible if t.tier == tier]
        picks = _weighted_order(in_tier, rng)
        if model.strategy == "least_latency":
            picks = _two_choices(picks, lambda t: _latency(views, t))
        elif model.strategy == "least_load":
            picks = _least_load(picks, loads)
        if affinity is not None and chosen is None:
            chosen = choose(
                affinity,
                {t.backend: loads[t.backend] for t in picks},
                {t.backend: 1 / views.get(t.backend, HEALTHY).max_in_flight for t in picks},
            )
            if chosen is not None:
                picks.sort(key=lambda t: t.backend != chosen.chosen)  # stable: the rest keep order
        ordered.extend(Candidate(t.backend, t.model or public_name, t.tier) for t in picks)
    return RouteChoice(tuple(ordered), tuple(skipped), rule, loads, chosen)


def _targets(
    model: Model, organization: str, key_id: str | None
) -> tuple[tuple[ModelTarget, ...], str]:
    for i, route in enumerate(model.routes):
        if route.matches(organization, key_id):
            return route.backends, f"routes[{i}]"
    return model.backends, "model"


def _pinned_target(model: Model, targets: Sequence[ModelTarget], backend: str) -> ModelTarget:
    """The pinned backend's target, keeping its model name when the model lists it."""
    for target in (*targets, *model.backends, *(t for r in model.routes for t in r.backends)):
        if target.backend == backend:
            return attrs.evolve(target, tier=0)
    return ModelTarget(backend=backend)


def _weighted_order(
    weighted: Sequence[tuple[ModelTarget, float]], rng: random.Random
) -> list[ModelTarget]:
    if len(weighted) == 1:
        return [weighted[0][0]]
    keyed = sorted(
        # -expovariate(1) is log(u) for u uniform in (0, 1].
        ((-rng.expovariate(1.0) / w, i) for i, (_, w) in enumerate(weighted)),
        reverse=True,
    )
    return [weighted[i][0] for _, i in keyed]


def _latency(views: Mapping[str, BackendView], target: ModelTarget) -> float:
    """A backend with no latency yet counts as fastest, so it gets measured."""
    view = views.get(target.backend, HEALTHY)
    return 0.0 if view.latency_ms is None else view.latency_ms


def _two_choices(
    picks: list[ModelTarget], cost: Callable[[ModelTarget], float]
) -> list[ModelTarget]:
    """Of the first two weighted picks, the cheaper first."""
    if len(picks) < 2:
        return picks
    first, second = picks[0], picks[1]
    if cost(second) < cost(first):
        return [second, first, *picks[2:]]
    return picks


def _least_load(picks: list[ModelTarget], loads: Mapping[str, float]) -> list[ModelTarget]:
    """Full backends last; of the others, the less loaded of the first two first."""
    free = [t for t in picks if loads[t.backend] < 1.0]
    full = sorted((t for t in picks if loads[t.backend] >= 1.0), key=lambda t: loads[t.backend])
    return _two_choices(free, lambda t: loads[t.backend]) + full
