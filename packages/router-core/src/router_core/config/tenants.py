"""Organizations, their API keys, and how callers authenticate."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from router_core.config.fields import (
    KEY_HASH_RE,
    KEY_ID_RE,
    FieldError,
    _check_fields,
    _checked,
    _matches,
    _non_negative,
    _one_of,
    _optional_one_of,
    _positive,
    _url,
)
from router_core.config.limits import Limits
from router_core.config_enums import (
    Priority,
    TokenAlgorithm,
    is_member,
    not_one_of,
)


@attrs.frozen
class ApiKey:
    """An API key declared in the file, by the hash of its secret."""

    # The key's public id (the part of `rk_live_<id>_...` before the secret).
    id: str = _checked(validator=_matches(KEY_ID_RE, "4 to 32 letters or digits"))
    # The secret's SHA-256; the key itself is never stored (`router keys create`).
    hash: str = _checked(
        validator=_matches(KEY_HASH_RE, "'sha256:' followed by 64 lowercase hex digits"),
        repr=False,
    )
    # A revoked key is refused with 401.
    revoked: bool = False
    # Limits of this key alone, besides its organization's.
    limits: Limits = Limits()
    # Scopes: the public model names and the routes (paths) this key may use.
    models: tuple[str, ...] = ("*",)
    routes: tuple[str, ...] = ("*",)
    # Epoch seconds after which the key is refused (rotation sets it on the old key).
    expires_at: float | None = None
    # "high", "normal" or "low": this key's requests go ahead of (or behind)
    # its organization's others in the queue, and are shed for event-loop lag
    # later (or sooner). null: the organization's priority.
    priority: Priority | None = _checked(default=None, validator=_optional_one_of(Priority))

    __attrs_post_init__ = _check_fields

    def allows_model(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    def allows_route(self, route: str) -> bool:
        return "*" in self.routes or route in self.routes

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@attrs.frozen
class Organization:
    """A tenant: its API keys, the models it may use, and its limits."""

    # API keys declared in the file (managed keys live in the key store).
    keys: tuple[ApiKey, ...] = ()
    # Public model names this organization may use; "*" means all.
    models: tuple[str, ...] = ("*",)
    # Limits of the whole organization.
    limits: Limits = Limits()
    # Limits of this organization on one model (public name).
    model_limits: Mapping[str, Limits] = attrs.field(factory=dict)
    # Limits of each interactive (OIDC) user of this organization, apart.
    user_limits: Limits = Limits()
    # "high", "normal" or "low": the organization's weight (4, 2, 1) in the
    # fair shares of in-flight slots and of the queue when the router is at
    # capacity, and how soon its requests are shed for event-loop lag.
    priority: Priority = _checked(default=Priority.NORMAL, validator=_one_of(Priority))

    __attrs_post_init__ = _check_fields

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


def _algorithms(_: object, attribute: attrs.Attribute[Any], value: tuple[object, ...]) -> None:
    if not value:
        raise FieldError(attribute.name, "must name at least one of " + ", ".join(TokenAlgorithm))
    bad = [a for a in value if not is_member(a, TokenAlgorithm)]
    if bad:
        raise FieldError(attribute.name, f"each {not_one_of(TokenAlgorithm, bad[0])}")


@attrs.frozen
class OidcIssuer:
    """An identity provider whose JWT bearer tokens identify interactive users."""

    # The exact `iss` claim.
    issuer: str = _checked(validator=_url)
    # Where the issuer publishes its signing keys (JWKS).
    jwks_url: str = _checked(validator=_url)
    # The `aud` claim the router requires.
    audience: str = _checked(validator=_matches(re.compile(r"^\S+$"), "a non-empty string"))
    # Signature algorithms accepted; others are refused.
    algorithms: tuple[TokenAlgorithm, ...] = _checked(
        default=(TokenAlgorithm.RS256,), validator=_algorithms
    )
    # Clock skew tolerated on exp, nbf and iat.
    leeway_s: float = _checked(default=30.0, validator=_non_negative)
    # Claims naming the organization (must exist in this config) and the user.
    organization_claim: str = "org"
    user_claim: str = "sub"
    # The JWKS is re-read this often, and at most this often on an unknown `kid`.
    jwks_cache_s: float = _checked(default=300.0, validator=_positive)
    jwks_refetch_s: float = _checked(default=10.0, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class AuthSettings:
    """HMAC request signing and OIDC issuers (managed keys live in `state`)."""

    # Signed requests older or newer than this are refused; nonces are kept as long.
    hmac_max_skew_s: int = _checked(default=300, validator=_positive)
    # Identity providers whose JWTs are accepted as bearer tokens.
    issuers: tuple[OidcIssuer, ...] = ()

    __attrs_post_init__ = _check_fields
