"""Routing overrides: operator changes with a reason and an expiry, no deploy needed.

Rules:
- An override is an immutable record; it is never edited, only replaced or
  deleted. It applies to one model or to every model (`model is None`), and
  to one organization or to everyone (`organization is None`).
- Three actions:
  - `drain`: the backend gets no new requests (in-flight ones finish);
  - `pin`: the model goes only to this backend (and its fallbacks are not
    tried: a pin is an operator saying "only there");
  - `weight`: the backend's weight for the model becomes `weight`.
- Expiry is wall-clock time (epoch seconds), because overrides are shared by
  replicas and survive restarts; `now` is passed in like everywhere in the core.
- When several overrides of one action match, the most specific wins
  (organization over everyone, model over all models), then the newest.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import attrs

from router_core.config import NAME_RE

OVERRIDE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TTL_S = 30 * 86_400
MAX_REASON = 500


class Action(enum.StrEnum):
    DRAIN = "drain"
    PIN = "pin"
    WEIGHT = "weight"


class OverrideInvalid(ValueError):
    """An override request that cannot be applied; the message says why."""


@attrs.frozen
class Override:
    id: str
    action: Action
    backend: str
    reason: str
    created_at: float
    expires_at: float
    created_by: str
    model: str | None = None
    organization: str | None = None
    weight: float | None = None

    def active(self, now: float) -> bool:
        # Not "created_at <= now": a replica whose clock runs a little behind
        # must still honour an override made a moment ago elsewhere.
        return now < self.expires_at

    def matches(self, model: str, organization: str) -> bool:
        return (self.model is None or self.model == model) and (
            self.organization is None or self.organization == organization
        )

    def specificity(self) -> tuple[int, int, float, str]:
        # The id breaks ties, so replicas that list overrides in another order agree.
        return (self.organization is not None, self.model is not None, self.created_at, self.id)


def new_override(
    *,
    id: str,
    action: str,
    backend: str,
    reason: str,
    ttl_s: float,
    now: float,
    created_by: str,
    model: str | None = None,
    organization: str | None = None,
    weight: float | None = None,
    known_backends: Iterable[str] = (),
    known_models: Iterable[str] = (),
) -> Override:
    """A validated override; raises `OverrideInvalid` naming every problem."""
    problems: list[str] = []
    try:
        kind = Action(action)
    except ValueError:
        problems.append(f"action must be one of drain, pin, weight, not {action!r}")
        kind = Action.DRAIN
    if not OVERRIDE_ID_RE.match(id):
        problems.append("id must be 1 to 64 letters, digits, '_' or '-'")
    backends = set(known_backends)
    if backends and backend not in backends:
        problems.append(f"unknown backend {backend!r}; defined: {', '.join(sorted(backends))}")
    models = set(known_models)
    if model is not None and models and model not in models:
        problems.append(f"unknown model {model!r}")
    if organization is not None and not NAME_RE.match(organization):
        problems.append("organization must be a name (letters, digits and . _ : / -)")
    if not reason.strip() or len(reason) > MAX_REASON:
        problems.append(f"reason is required (1 to {MAX_REASON} characters)")
    if not 0 < ttl_s <= MAX_TTL_S:
        problems.append(f"ttl_s must be > 0 and at most {MAX_TTL_S} (30 days)")
    if kind is Action.PIN and model is None:
        problems.append("a pin needs a model")
    # `not weight > 0` so that NaN, which fails every comparison, is refused too.
    if kind is Action.WEIGHT and (weight is None or not weight > 0):
        problems.append("a weight override needs weight > 0")
    if kind is not Action.WEIGHT and weight is not None:
        problems.append("weight is only for action 'weight'")
    if problems:
        raise OverrideInvalid("; ".join(problems))
    return Override(
        id=id,
        action=kind,
        backend=backend,
        reason=reason.strip(),
        created_at=now,
        expires_at=now + ttl_s,
        created_by=created_by,
        model=model,
        organization=organization,
        weight=weight,
    )


@attrs.frozen
class Applied:
    """What the active overrides say about one model for one organization."""

    drained: frozenset[str] = frozenset()
    pinned: Override | None = None
    # backend -> the override that sets its weight
    weights: dict[str, Override] = attrs.field(factory=dict)

    @property
    def empty(self) -> bool:
        return not self.drained and self.pinned is None and not self.weights


NO_OVERRIDES = Applied()


def applicable(overrides: Iterable[Override], model: str, organization: str, now: float) -> Applied:
    """The overrides in force for `model` and `organization` at `now`."""
    drained: set[str] = set()
    pinned: Override | None = None
    weights: dict[str, Override] = {}
    for override in overrides:
        if not override.active(now) or not override.matches(model, organization):
            continue
        if override.action is Action.DRAIN:
            drained.add(override.backend)
        elif override.action is Action.PIN:
            if pinned is None or override.specificity() > pinned.specificity():
                pinned = override
        else:
            held = weights.get(override.backend)
            if held is None or override.specificity() > held.specificity():
                weights[override.backend] = override
    if not drained and pinned is None and not weights:
        return NO_OVERRIDES
    return Applied(frozenset(drained), pinned, weights)
