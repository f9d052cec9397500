"""Authentication: from a presented credential to the organization and key behind it.

Rules:
- The credential comes from `Authorization: Bearer <key>` or `X-API-Key`;
  a request carrying neither is `missing_api_key`, anything else that fails
  is `invalid_api_key` with a `reason`. The message never echoes what was
  presented.
- Unknown key id and wrong secret answer alike (`key_invalid`), so the
  response does not tell an attacker which part was wrong. Only a caller who
  proved they hold the secret learns that the key is revoked or expired.
- Keys come from the config file and from the key store (managed at run
  time); a key id names one key, and the config's wins.
- Once the secret is proven, the rules in order: not revoked, not expired,
  the key may call the route (`authorize`); then, once the model is known, the
  organization has the model and the key's scope includes it
  (`permit_model`). The router applies the two halves around reading the
  body (a bad credential is refused before a bad body); `router simulate`
  applies both at once (`check_access`): the same rules in the same order.
- Pure: `now` is passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from router_core import keys, routing
from router_core.config import ApiKey, Model, Organization, RouterConfig
from router_core.config_enums import Priority
from router_core.limits.scopes import Scope
from router_core.problems import Catalog, ClientError

INVALID_DETAIL = "The API key is invalid or revoked."


class PrincipalKind(enum.StrEnum):
    API_KEY = "api_key"
    # An interactive user, authenticated by an OIDC token.
    USER = "user"


@attrs.frozen
class Principal:
    """Who is calling: attributed in usage records and limits."""

    organization: str
    # The key's id; for an OIDC user `user:<subject>` (what usage records attribute).
    key_id: str
    org: Organization = attrs.field(repr=False, eq=False)
    # The interactive user (OIDC subject), when a token authenticated the request.
    user: str | None = None
    # The key's model scope ("*" for tokens: the organization's models apply).
    models: tuple[str, ...] = ("*",)
    # The key's own priority (None: the organization's).
    key_priority: Priority | None = None

    @property
    def kind(self) -> PrincipalKind:
        return PrincipalKind.USER if self.user is not None else PrincipalKind.API_KEY

    @property
    def limit_scope(self) -> Scope:
        """The scope of the caller's own limits: its key's, or its user's."""
        if self.user is not None:
            return Scope.user(self.organization, self.user)
        return Scope.key(self.organization, self.key_id)

    def allows_model(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    @property
    def priority(self) -> Priority:
        """This caller's requests' priority: its key's, else its organization's."""
        return self.key_priority if self.key_priority is not None else self.org.priority


@attrs.frozen
class ManagedKey:
    """A key created at run time (CLI or admin API), kept in the key store."""

    organization: str
    key: ApiKey
    created_at: float
    created_by: str
    # Set on the new key of a rotation: the key it replaces.
    rotated_from: str | None = None


# A key found by its id: the organization's name, the key, the organization.
KeyEntry = tuple[str, ApiKey, Organization]


@attrs.frozen
class KeyIndex:
    """Keys of every organization in the config, by key id."""

    by_id: Mapping[str, KeyEntry]

    @classmethod
    def from_config(cls, config: RouterConfig) -> KeyIndex:
        return cls(
            {
                key.id: (org_name, key, org)
                for org_name, org in config.organizations.items()
                for key in org.keys
            }
        )


def lookup(
    key_id: str,
    index: KeyIndex,
    managed: Mapping[str, ManagedKey],
    organizations: Mapping[str, Organization],
) -> KeyEntry | None:
    entry = index.by_id.get(key_id)
    if entry is not None:
        return entry
    stored = managed.get(key_id)
    if stored is None or stored.organization not in organizations:
        return None
    return stored.organization, stored.key, organizations[stored.organization]


def refused(reason: str, detail: str = INVALID_DETAIL) -> ClientError:
    return ClientError(Catalog.INVALID_API_KEY, detail, extra={"reason": reason})


def credential_from_headers(authorization: str | None, x_api_key: str | None) -> str:
    """The presented bearer credential; raises `missing_api_key` when there is none."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise refused(
                "authorization_malformed",
                "The Authorization header must be 'Bearer <API key or token>' "
                "or a signed request (RK-HMAC-SHA256).",
            )
        return value.strip()
    if x_api_key:
        return x_api_key.strip()
    raise ClientError(
        Catalog.MISSING_API_KEY,
        "No API key: send 'Authorization: Bearer <API key>' or 'X-API-Key: <API key>'.",
        extra={"reason": "missing"},
    )


def authorize(entry: KeyEntry, now: float | None, route: str | None) -> Principal:
    """The principal of a key whose secret was proven; refused if revoked, expired or
    out of scope."""
    org_name, key, org = entry
    if key.revoked:
        raise refused("key_revoked", "The API key has been revoked.")
    if now is not None and key.expired(now):
        raise refused("key_expired", "The API key has expired.")
    if route is not None and not key.allows_route(route):
        raise ClientError(
            Catalog.ROUTE_NOT_ALLOWED,
            f"This API key may not call {route}.",
            extra={"reason": "route_not_allowed"},
        )
    return Principal(org_name, key.id, org, models=key.models, key_priority=key.priority)


def permit_model(principal: Principal, config: RouterConfig, model: str) -> Model:
    """The model `principal` asked for, if its organization has it (else 404
    `model_not_found`) and its key's scope includes it (else 403)."""
    resolved = routing.resolve_model(config, principal.org, model)
    if not principal.allows_model(model):
        raise ClientError(
            Catalog.FORBIDDEN_MODEL,
            f"This API key may not use model {model!r}.",
            param="model",
        )
    return resolved


def check_access(
    entry: KeyEntry, config: RouterConfig, *, now: float | None, route: str | None, model: str
) -> tuple[Principal, Model]:
    """Every rule for a key whose secret was proven, calling `route` for `model`."""
    principal = authorize(entry, now, route)
    return principal, permit_model(principal, config, model)


def authenticate(
    presented: str,
    index: KeyIndex,
    *,
    now: float | None = None,
    route: str | None = None,
    managed: Mapping[str, ManagedKey] | None = None,
    organizations: Mapping[str, Organization] | None = None,
) -> Principal:
    parsed = keys.parse(presented)
    if parsed is None:
        raise refused(
            "key_malformed",
            "The API key is malformed: expected rk_live_<key id>_<secret><checksum>.",
        )
    if not parsed.checksum_ok:
        raise refused("key_checksum", "The API key's checksum does not match: it was mistyped.")
    entry = lookup(parsed.key_id, index, managed or {}, organizations or {})
    if entry is None:
        # Still hash and compare, so unknown ids cost the same as wrong secrets.
        keys.verify(presented, "sha256:" + "0" * 64)
        raise refused("key_invalid")
    if not keys.verify(presented, entry[1].hash):
        raise refused("key_invalid")
    return authorize(entry, now, route)
