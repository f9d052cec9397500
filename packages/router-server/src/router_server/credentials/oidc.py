"""OIDC bearer tokens (JWT) for interactive users, checked against the issuer's JWKS.

Rules:
- The algorithm is pinned per issuer (asymmetric only, see
  `config_enums.TokenAlgorithm`): `alg: none` and HS* tokens (key confusion: a
  public key used as an HMAC secret) are refused before any key is looked up.
- The issuer is chosen by the token's `iss` among the configured ones, then
  `iss`, `aud`, `exp`, `nbf` are verified with the issuer's `leeway_s`.
- The JWKS is fetched with httpx and cached for `jwks_cache_s`; a `kid` it does
  not hold triggers a refetch at most every `jwks_refetch_s`, so a flood of
  forged kids cannot turn the router into a load generator against the issuer.
- The organization claim must name an organization of the config; the user
  claim becomes the principal's user, and its limits scope `user:<sub>`.
- Every refusal is 401 `invalid_token` with a `reason`; the token is never
  echoed or logged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx
import jwt

from router_core.auth import Principal
from router_core.config import OidcIssuer, Organization
from router_core.problems import Catalog, ClientError, DependencyError

log = logging.getLogger("router.auth")

_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$")
# Subjects become part of limit keys: no braces (Redis Cluster hash tags), no spaces.
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9._@:|+=/-]{1,128}$")
_MAPPED = (
    (jwt.ExpiredSignatureError, "token_expired", "The token has expired."),
    (jwt.ImmatureSignatureError, "token_not_yet_valid", "The token is not valid yet (nbf/iat)."),
    (jwt.InvalidAudienceError, "token_audience", "The token is not meant for this router (aud)."),
    (jwt.InvalidIssuerError, "token_issuer", "The token's issuer is not trusted."),
    (jwt.MissingRequiredClaimError, "token_claims", "The token lacks a required claim."),
    (jwt.InvalidSignatureError, "token_signature", "The token's signature does not verify."),
    (jwt.InvalidAlgorithmError, "token_algorithm", "The token's algorithm is not allowed."),
)


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and _JWT_RE.match(credential) is not None


def refused(reason: str, detail: str) -> ClientError:
    return ClientError(Catalog.INVALID_TOKEN, detail, extra={"reason": reason})


class Jwks:
    """One issuer's signing keys, by `kid`."""

    def __init__(
        self,
        issuer: OidcIssuer,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.client = client
        self.clock = clock
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        self.fetches = 0
        self._lock = anyio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        now = self.clock()
        stale = self.fetched_at is None or now - self.fetched_at > self.issuer.jwks_cache_s
        may_refetch = (
            self.attempted_at is None or now - self.attempted_at >= self.issuer.jwks_refetch_s
        )
        if stale or (kid not in self.keys and may_refetch):
            async with self._lock:
                if self.attempted_at is None or self.clock() - self.attempted_at >= min(
                    self.issuer.jwks_refetch_s, self.issuer.jwks_cache_s
                ):
                    await self._fetch()
        return self.keys.get(kid)

    async def _fetch(self) -> None:
        self.attempted_at = self.clock()
        self.fetches += 1
        try:
            response = await self.client.get(self.issuer.jwks_url)
            response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning(
                "JWKS not refreshed",
                extra={"issuer": self.issuer.issuer, "error": type(exc).__name__},
            )
            if not self.keys:
                raise DependencyError(
                    Catalog.CREDENTIALS_UNAVAILABLE,
                    "The identity provider's keys cannot be fetched; retry shortly.",
                ) from None
            return
        self.keys = {k.key_id: k for k in keyset.keys if k.key_id}
        self.fetched_at = self.attempted_at


class TokenVerifier:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self._jwks: dict[tuple[str, str], Jwks] = {}

    def jwks(self, issuer: OidcIssuer) -> Jwks:
        ident = (issuer.issuer, issuer.jwks_url)
        found = self._jwks.get(ident)
        if found is None or found.issuer != issuer:
            found = self._jwks[ident] = Jwks(issuer, self.client)
        return found

    async def verify(
        self,
        token: str,
        issuers: tuple[OidcIssuer, ...],
        organizations: Mapping[str, Organization],
    ) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise refused("token_malformed", "The bearer token is not a well-formed JWT.") from None
        issuer = next((i for i in issuers if i.issuer == unverified.get("iss")), None)
        if issuer is None:
            raise refused("token_issuer", "The token's issuer is not trusted.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise refused("token_algorithm", "The token's algorithm is not allowed.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise refused("token_unknown_kid", "The token names no signing key (kid).")
        key = await self.jwks(issuer).key(kid)
        if key is None:
            raise refused("token_unknown_kid", "The token's signing key (kid) is not known.")
        claims = self._decode(token, key, issuer)
        org_name = claims.get(issuer.organization_claim)
        user = claims.get(issuer.user_claim)
        if not isinstance(org_name, str) or org_name not in organizations:
            raise refused("token_organization", "The token names no known organization.")
        if not isinstance(user, str) or not _SUBJECT_RE.match(user):
            raise refused("token_claims", "The token names no valid user.")
        return Principal(org_name, f"user:{user}", organizations[org_name], user=user)

    @staticmethod
    def _decode(token: str, key: jwt.PyJWK, issuer: OidcIssuer) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(issuer.algorithms),
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=issuer.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as exc:
            for kind, reason, detail in _MAPPED:
                if isinstance(exc, kind):
                    raise refused(reason, detail) from None
            raise refused("token_invalid", "The token is not valid.") from None
        return claims
