"""Routing: from a public model name to an ordered plan of backends to try.

Rules:
- Only models the caller's organization may use are visible; an unknown or
  forbidden model is `model_not_found`, naming the models the caller may use.
- The plan lists every target of the model once, in weighted random order
  (Efraimidis-Spirakis: sort by u ** (1 / weight)), so the first choice
  follows the weights and failover walks the rest. Randomness is passed in.
"""

from __future__ import annotations

import random

import attrs

from router_core.config import Model, Organization, RouterConfig
from router_core.problems import Catalog, ClientError


@attrs.frozen
class Candidate:
    backend: str
    # The model name the backend knows.
    model: str


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


def plan(public_name: str, model: Model, rng: random.Random) -> tuple[Candidate, ...]:
    """Every target of `model`, in weighted random order."""
    targets = model.backends
    if len(targets) == 1:
        only = targets[0]
        return (Candidate(only.backend, only.model or public_name),)
    keyed = sorted(
        ((rng.random() ** (1.0 / t.weight), i) for i, t in enumerate(targets)), reverse=True
    )
    return tuple(Candidate(targets[i].backend, targets[i].model or public_name) for _, i in keyed)
