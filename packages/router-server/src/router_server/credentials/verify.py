"""Authenticating one request: an API key, a signed request or an OIDC token.

`Authorization: RK-HMAC-SHA256 ...` is a signed request (the body is read here,
once: Starlette keeps it for `read_json_body`); a bearer credential that looks
like a JWT is an OIDC token; anything else is an API key. Keys come from the
config and from the key store's live view.
"""

from __future__ import annotations

import time

import attrs
import httpx
from starlette.requests import Request

from router_core import signing
from router_core.auth import (
    KeyIndex,
    Principal,
    authenticate,
    authorize,
    credential_from_headers,
    lookup,
)
from router_core.config import RouterConfig
from router_core.problems import Catalog, ClientError
from router_server.credentials.book import KeyBook
from router_server.credentials.nonces import NonceStore
from router_server.credentials.oidc import TokenVerifier, looks_like_jwt
from router_server.credentials.oidc import refused as token_refused
from router_server.state.layer import StateLayer

JWKS_TIMEOUT_S = 5.0


@attrs.define
class Credentials:
    """Managed keys, nonces and token checks, opened in the lifespan."""

    book: KeyBook
    nonces: NonceStore
    tokens: TokenVerifier

    async def aclose(self) -> None:
        await self.tokens.client.aclose()
        await self.book.store.aclose()
        await self.nonces.aclose()


def open_credentials(stores: StateLayer) -> Credentials:
    return Credentials(
        KeyBook(stores.key_store(), refresh_s=stores.settings.refresh_s),
        stores.nonce_store(),
        TokenVerifier(httpx.AsyncClient(timeout=JWKS_TIMEOUT_S, follow_redirects=False)),
    )


def _signed_path(request: Request) -> str:
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    path = raw.decode("latin-1")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _signature_refused(reason: str, detail: str) -> ClientError:
    return ClientError(Catalog.INVALID_SIGNATURE, detail, extra={"reason": reason})


async def authenticate_request(
    request: Request,
    config: RouterConfig,
    keys: KeyIndex,
    credentials: Credentials,
    *,
    route: str | None = None,
) -> Principal:
    headers = request.headers
    authorization = headers.get("authorization")
    now = time.time()
    route = route or request.url.path
    managed = credentials.book.managed
    if authorization and authorization.lstrip().startswith(signing.SCHEME):
        return await _signed(request, authorization, config, keys, credentials, now)
    presented = credential_from_headers(authorization, headers.get("x-api-key"))
    if looks_like_jwt(presented):
        if not config.auth.issuers:
            raise token_refused("token_issuer", "No identity provider is configured.")
        return await credentials.tokens.verify(presented, config.auth.issuers, config.organizations)
    return authenticate(
        presented, keys, now=now, route=route, managed=managed,
        organizations=config.organizations,
    )  # fmt: skip


async def _signed(
    request: Request,
    authorization: str,
    config: RouterConfig,
    keys: KeyIndex,
    credentials: Credentials,
    now: float,
) -> Principal:
    try:
        header = signing.parse_header(authorization)
        entry = lookup(header.key_id, keys, credentials.book.managed, config.organizations)
        if entry is None:
            raise signing.SignatureRejected(
                "hmac_signature", "The request signature does not match."
            )
        body = await request.body()
        window = config.auth.hmac_max_skew_s
        signing.check(
            header, signing.signing_key_from_hash(entry[1].hash), request.method,
            _signed_path(request), body, now, window,
        )  # fmt: skip
    except signing.SignatureRejected as exc:
        raise _signature_refused(exc.reason, exc.detail) from None
    # After the signature, so only the key's holder can spend its nonces.
    if not await credentials.nonces.claim(header.key_id, header.nonce, 2 * window):
        raise _signature_refused("hmac_replay", "This nonce was already used: a replayed request.")
    return authorize(entry, now, request.url.path)
