"""Google Cloud for Vertex AI backends: OAuth access tokens from a service account.

Rules:
- The service account's JSON key file (`vertex.credentials_file`, else
  `GOOGLE_APPLICATION_CREDENTIALS`) is read when the backend's client is
  built. google-auth (the `vertex` extra) signs the JWT assertion with its
  private key; the router trades it at the key's `token_uri` for an access
  token (RFC 7523, scope cloud-platform), with httpx, off no thread.
- A token is used until `REFRESH_BEFORE_S` before it expires, then minted
  again by the first call that needs it; calls meanwhile wait for that one
  mint rather than each minting their own.
- A mint that fails (the token endpoint down, the key refused) fails the
  call before anything is sent to the backend. The key and the tokens
  never appear in an error or a log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

EXTRA = "pip install 'inference-router-server[vertex]'"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_BEFORE_S = 300.0
LIFETIME_S = 3600


def available() -> bool:
    """Whether google-auth (the `vertex` extra) is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec("google.auth") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


class MintFailed(Exception):
    """No access token could be had; the message is safe to log."""


def read_key(path: str | Path) -> dict[str, Any]:
    """The service account key at `path`, checked for what minting needs."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MintFailed(f"cannot read the service account key: {type(exc).__name__}") from None
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if not isinstance(info, dict) or missing:
        raise MintFailed(f"the service account key lacks {', '.join(missing) or 'its fields'}")
    return info


class ServiceAccountToken:
    """Access tokens for one service account, minted and kept until near expiry."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        from google.auth import crypt  # the vertex extra

        # A key that went missing since start-up (or a reload's check) fails
        # each call, not the client's construction.
        self._broken: MintFailed | None = None
        self.info: dict[str, Any] = {}
        self._signer: Any = None
        try:
            self.info = read_key(path)
            self._signer = crypt.RSASigner.from_service_account_info(self.info)  # type: ignore[no-untyped-call]
        except MintFailed as exc:
            self._broken = exc
        except ValueError:  # a private key that does not parse
            self._broken = MintFailed("the service account's private key does not parse")
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = anyio.Lock()
        self.minted = 0

    async def token(self) -> str:
        if self._broken is not None:
            raise self._broken
        if self._token is not None and self._clock() < self._expires_at - REFRESH_BEFORE_S:
            return self._token
        async with self._lock:  # one mint for every call that needs one
            if self._token is None or self._clock() >= self._expires_at - REFRESH_BEFORE_S:
                self._token, self._expires_at = await self._mint()
                self.minted += 1
        return self._token

    def _assertion(self, now: int) -> bytes:
        from google.auth import jwt

        email = self.info["client_email"]
        payload = {"iss": email, "sub": email, "scope": SCOPE, "aud": self.info["token_uri"],
                   "iat": now, "exp": now + LIFETIME_S}  # fmt: skip
        assertion: bytes = jwt.encode(self._signer, payload)  # type: ignore[no-untyped-call]
        return assertion

    async def _mint(self) -> tuple[str, float]:
        now = int(self._clock())
        form = {"grant_type": GRANT, "assertion": self._assertion(now).decode()}
        try:
            async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
                answer = await http.post(self.info["token_uri"], data=form)
        except httpx.HTTPError as exc:
            raise MintFailed(f"the token endpoint did not answer ({type(exc).__name__})") from None
        if answer.status_code != 200:
            raise MintFailed(f"the token endpoint refused the key (HTTP {answer.status_code})")
        try:
            body = answer.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise MintFailed("the token endpoint's answer has no access_token") from None
        return token, now + lifetime
