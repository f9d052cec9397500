"""What a limit counts, and for whom: scopes, measures and windows as values.

Rules:
- A limit is named by a `LimitKey`: its `Scope` (an organization, one of its
  API keys, one of its OIDC users, or the organization on one model), its
  `Measure` (requests, tokens, nano-USD) and its window (None for a rate,
  which GCRA spreads over its period, or a calendar `WindowKind`: day, month,
  total).
- Plans, specs, holds and denials carry these values, so nothing ever parses
  a name back into its parts (a model called `llama3:8b` stays one name).
- The strings a store keeps them under are built from them only at the store
  boundary (`router_core.limits.ledger.storage_key`).
"""

from __future__ import annotations

import enum

import attrs

from router_core.limits.windows import WindowKind


class ScopeKind(enum.StrEnum):
    ORGANIZATION = "organization"
    KEY = "key"
    USER = "user"
    MODEL = "model"


def _scope_id(scope: Scope, attribute: attrs.Attribute[str], value: str) -> None:
    if (scope.kind is ScopeKind.ORGANIZATION) != (value == ""):
        raise ValueError("a scope has an id (key, user or model) unless it is the organization")


@attrs.frozen(cache_hash=True)
class Scope:
    """Whose usage a limit counts; every scope lies within one organization."""

    organization: str
    kind: ScopeKind = ScopeKind.ORGANIZATION
    # The key id, the user's subject or the model's public name ("" for the organization).
    id: str = attrs.field(default="", validator=_scope_id)

    @classmethod
    def key(cls, organization: str, key_id: str) -> Scope:
        return cls(organization, ScopeKind.KEY, key_id)

    @classmethod
    def user(cls, organization: str, subject: str) -> Scope:
        return cls(organization, ScopeKind.USER, subject)

    @classmethod
    def model(cls, organization: str, model: str) -> Scope:
        return cls(organization, ScopeKind.MODEL, model)


class Measure(enum.StrEnum):
    """What a limit counts (the short names are those of logs and stored keys)."""

    REQUESTS = "req"
    TOKENS = "tok"
    # nano-USD
    USD = "usd"


@attrs.frozen(cache_hash=True)
class LimitKey:
    scope: Scope
    measure: Measure
    # None: a rate limit (requests or tokens per period), not a calendar window.
    window: WindowKind | None = None

    def __attrs_post_init__(self) -> None:
        if self.window is None and self.measure is Measure.USD:
            raise ValueError("spend is limited per window (a budget), never as a rate")

    @property
    def is_rate(self) -> bool:
        return self.window is None


# A store names its state by a planned `LimitKey`, or by a key string given as
# is (store-level tests and operator tools, which name keys directly).
Key = LimitKey | str
