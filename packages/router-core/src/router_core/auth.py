"""Authentication: from request headers to the organization and key behind them.

Rules:
- The credential comes from `Authorization: Bearer <key>` or `X-API-Key`;
  a request carrying neither is `missing_api_key`, anything else that fails
  is `invalid_api_key`. The message never echoes what was presented.
- Unknown key id, wrong secret and revoked key all answer the same way, so
  the response does not tell an attacker which part was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from router_core import keys
from router_core.config import ApiKey, Organization, RouterConfig
from router_core.problems import Catalog, ClientError

INVALID_DETAIL = "The API key is invalid or revoked."


@attrs.frozen
class Principal:
    """Who is calling: attributed in usage records and limits."""

    organization: str
    key_id: str
    org: Organization = attrs.field(repr=False, eq=False)


@attrs.frozen
class KeyIndex:
    """Keys of every organization, by key id."""

    by_id: Mapping[str, tuple[str, ApiKey, Organization]]

    @classmethod
    def from_config(cls, config: RouterConfig) -> KeyIndex:
        return cls(
            {
                key.id: (org_name, key, org)
                for org_name, org in config.organizations.items()
                for key in org.keys
            }
        )


def credential_from_headers(authorization: str | None, x_api_key: str | None) -> str:
    """The presented key; raises `missing_api_key` when there is none."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ClientError(
                Catalog.INVALID_API_KEY,
                "The Authorization header must be 'Bearer <API key>'.",
            )
        return value.strip()
    if x_api_key:
        return x_api_key.strip()
    raise ClientError(
        Catalog.MISSING_API_KEY,
        "No API key: send 'Authorization: Bearer <API key>' or 'X-API-Key: <API key>'.",
    )


def authenticate(presented: str, index: KeyIndex) -> Principal:
    parsed = keys.parse(presented)
    if parsed is None:
        raise ClientError(
            Catalog.INVALID_API_KEY, "The API key is malformed: expected rk_<key id>_<secret>."
        )
    entry = index.by_id.get(parsed.key_id)
    if entry is None:
        # Still hash and compare, so unknown ids cost the same as wrong secrets.
        keys.verify(presented, "sha256:" + "0" * 64)
        raise ClientError(Catalog.INVALID_API_KEY, INVALID_DETAIL)
    org_name, key, org = entry
    if not keys.verify(presented, key.hash) or key.revoked:
        raise ClientError(Catalog.INVALID_API_KEY, INVALID_DETAIL)
    return Principal(org_name, key.id, org)
