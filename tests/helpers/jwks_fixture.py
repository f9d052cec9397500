"""A real identity provider's JWKS endpoint over HTTP, and tokens signed by its keys.

A pytest plugin (`pytest_plugins` in tests/conftest.py) with the fixture `idp`: an
`http.server` on a free loopback port serving `/jwks.json` from RSA keys made
for the session, counting its fetches, and signing tokens (good or broken on
purpose) for the router to check. Never a mock of the fetch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "router-tests"
ORG_CLAIM = "org"


@attrs.frozen
class FromNow:
    """A time claim this many seconds from when the token is signed: a test's
    parameters are made at collection, long before the token on a loaded machine."""

    seconds: int


class IdentityProvider:
    def __init__(self) -> None:
        self.private: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                body = json.dumps(provider.jwks()).encode()
                with provider._lock:
                    provider.fetches += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.jwks_url = f"{self.issuer}/jwks.json"
        self.add_key("kid-1")

    def add_key(self, kid: str, *, publish: bool = True) -> None:
        self.private[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in list(self.published):
            jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private[kid].public_key()))
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def public_pem(self, kid: str = "kid-1") -> bytes:
        return (
            self.private[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": AUDIENCE, "sub": "user-ada", ORG_CLAIM: "acme",
            "iat": now, "nbf": now, "exp": now + 300,
        }  # fmt: skip
        claims.update(
            {k: now + v.seconds if isinstance(v, FromNow) else v for k, v in changes.items()}
        )
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "kid-1", alg: str = "RS256", **changes: Any) -> str:
        return jwt.encode(
            self.claims(**changes), self.private[kid], algorithm=alg, headers={"kid": kid}
        )

    def issuer_config(self, **changes: Any) -> dict[str, Any]:
        return {
            "issuer": self.issuer, "jwks_url": self.jwks_url, "audience": AUDIENCE,
            "algorithms": ["RS256"], "leeway_s": 5, "organization_claim": ORG_CLAIM,
            "jwks_refetch_s": 1, **changes,
        }  # fmt: skip

    def __enter__(self) -> IdentityProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def idp_server() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


@pytest.fixture
def idp(idp_server: IdentityProvider) -> IdentityProvider:
    """The session's identity provider, with only `kid-1` published."""
    idp_server.published[:] = ["kid-1"]
    return idp_server
