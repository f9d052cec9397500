"""The authentication matrix for OIDC tokens, against a real JWKS server: `alg: none`,
HS/RS key confusion, audience, issuer, expiry, unknown `kid`, with expected status,
code and reason; per-user limits and usage attribution."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from tests.helpers.auth_support import AppFactory, auth_app, auth_config, bearer, post, refused
from tests.helpers.canary_fixture import Canaries
from tests.helpers.jwks_fixture import FromNow, IdentityProvider

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process


@pytest.fixture
def app(
    make_client: AppFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    tmp_path: Path,
    canaries: Canaries,
) -> TestClient:
    return auth_app(make_client, config_data, idp, tmp_path, canaries)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- OIDC tokens --------------------------------------------------------------


def test_token_is_served(app: TestClient, idp: IdentityProvider, canaries: Canaries) -> None:
    token = canaries.add(idp.token(), "oidc-token")
    assert post(app, bearer(token)).status_code == 200


def test_alg_none(app: TestClient, idp: IdentityProvider) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "kid-1"}).encode())
    token = f"{header}.{b64(json.dumps(idp.claims()).encode())}."
    refused(post(app, bearer(token)), 401, "invalid_token", "token_algorithm")


def test_hs256_signed_with_the_public_key(app: TestClient, idp: IdentityProvider) -> None:
    """Key confusion: an HMAC token keyed with the RSA public key the router knows."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "kid-1"}).encode())
    payload = b64(json.dumps(idp.claims()).encode())
    mac = hmac.new(idp.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    refused(
        post(app, bearer(f"{header}.{payload}.{b64(mac)}")), 401, "invalid_token", "token_algorithm"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "someone-else"}, "token_audience"),
        ({"iss": "https://evil.example"}, "token_issuer"),
        ({"exp": FromNow(-60)}, "token_expired"),
        ({"nbf": FromNow(120)}, "token_not_yet_valid"),
        ({"org": "initech"}, "token_organization"),
        ({"sub": None}, "token_claims"),
        ({"exp": None}, "token_claims"),
    ],
    ids=["aud", "iss", "expired", "nbf", "org", "no-sub", "no-exp"],
)
def test_bad_claims(
    app: TestClient, idp: IdentityProvider, changes: dict[str, Any], reason: str
) -> None:
    refused(post(app, bearer(idp.token(**changes))), 401, "invalid_token", reason)


def test_unknown_kid_refetches_at_most_once_per_interval(
    app: TestClient, idp: IdentityProvider
) -> None:
    assert post(app, bearer(idp.token())).status_code == 200
    idp.add_key("kid-unpublished", publish=False)
    before = idp.fetches
    for _ in range(5):
        refused(
            post(app, bearer(idp.token(kid="kid-unpublished"))),
            401,
            "invalid_token",
            "token_unknown_kid",
        )
    assert idp.fetches - before <= 1


def test_a_new_kid_is_fetched(app: TestClient, idp: IdentityProvider) -> None:
    assert post(app, bearer(idp.token())).status_code == 200
    time.sleep(1.05)  # past jwks_refetch_s (1 s): the rate limit, not a boundary of ours
    idp.add_key("kid-2")
    assert post(app, bearer(idp.token(kid="kid-2"))).status_code == 200


def test_signature_by_another_key_under_a_known_kid(app: TestClient, idp: IdentityProvider) -> None:
    idp.add_key("kid-forger", publish=False)
    forged = jwt.encode(
        idp.claims(), idp.private["kid-forger"], algorithm="RS256", headers={"kid": "kid-1"}
    )
    refused(post(app, bearer(forged)), 401, "invalid_token", "token_signature")


@pytest.mark.parametrize("token", ["eyJhbGciOi.e30.x", "eyJ.e30.", "eyJub3Q.anNvbg.sig"])
def test_malformed_tokens(app: TestClient, token: str) -> None:
    response = post(app, bearer(token))
    assert response.status_code == 401
    assert response.json()["error"]["reason"] == "token_malformed"


def test_limits_are_per_user(
    make_client: AppFactory, config_data: dict[str, Any], idp: IdentityProvider, tmp_path: Path
) -> None:
    data = auth_config(config_data, idp, tmp_path)
    data["organizations"]["acme"]["user_limits"] = {"requests": {"rate": 1, "per": "minute"}}
    app = make_client(data)
    assert post(app, bearer(idp.token(sub="ada"))).status_code == 200
    refused(post(app, bearer(idp.token(sub="ada"))), 429, "rate_limit_exceeded", None)
    assert post(app, bearer(idp.token(sub="grace"))).status_code == 200


def test_usage_records_name_the_user(
    app: TestClient, idp: IdentityProvider, tmp_path: Path, canaries: Canaries
) -> None:
    token = canaries.add(idp.token(sub="ada@example.com"), "usage-token")
    assert post(app, bearer(token)).status_code == 200
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
    assert b'"key_id":"user:ada@example.com"' in spooled
    assert b'"user":"ada@example.com"' in spooled


def test_an_unreachable_jwks_is_503_not_401(
    make_client: AppFactory, config_data: dict[str, Any], idp: IdentityProvider, tmp_path: Path
) -> None:
    data = auth_config(config_data, idp, tmp_path)
    data["auth"]["issuers"] = [idp.issuer_config(jwks_url="http://127.0.0.1:9/jwks.json")]
    response = post(make_client(data), bearer(idp.token()))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "credentials_unavailable"


def test_a_token_without_a_configured_issuer(
    make_client: AppFactory, config_data: dict[str, Any], idp: IdentityProvider
) -> None:
    refused(post(make_client(config_data), bearer(idp.token())), 401, "invalid_token",
            "token_issuer")  # fmt: skip
