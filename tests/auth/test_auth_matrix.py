"""The authentication matrix: every credential type, good and broken, through the
real app (in-process), each with its expected status, problem code and reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from router_core import keys, signing

from auth_support import (
    ALL_KEYS,
    EXPIRED_KEY,
    LIVE_KEY,
    SCOPED_KEY,
    SIGNING_KEY,
    auth_config,
    nonce,
    signed,
)
from canary_fixture import Canaries
from jwks_fixture import IdentityProvider
from support import ACME_KEY, CHAT, REVOKED_KEY, auth

AppFactory = Callable[[dict[str, Any]], TestClient]
BODY = json.dumps(CHAT).encode()


@pytest.fixture
def app(
    make_client: AppFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    tmp_path: Path,
    canaries: Canaries,
) -> TestClient:
    for name, key in ALL_KEYS.items():
        canaries.add(key, name)
    return make_client(auth_config(config_data, idp, tmp_path))


def refused(response: Any, status: int, code: str, reason: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("reason") == reason


def post(app: TestClient, headers: dict[str, str], body: bytes = BODY) -> Any:
    return app.post(
        "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json", **headers},
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- API keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("presented", "status", "code", "reason"),
    [
        (ACME_KEY, 200, None, None),  # legacy rk_<id>_<secret>
        (LIVE_KEY, 200, None, None),
        (REVOKED_KEY, 401, "invalid_api_key", "key_revoked"),
        (EXPIRED_KEY, 401, "invalid_api_key", "key_expired"),
        (keys.format_live_key("live1abc", "X" * 32), 401, "invalid_api_key", "key_invalid"),
        (keys.format_live_key("nobody1", "X" * 32), 401, "invalid_api_key", "key_invalid"),
        (
            LIVE_KEY[:-1] + ("A" if LIVE_KEY[-1] != "A" else "B"),
            401,
            "invalid_api_key",
            "key_checksum",
        ),
        ("not-a-key", 401, "invalid_api_key", "key_malformed"),
        (SCOPED_KEY, 403, "route_not_allowed", "route_not_allowed"),
    ],
    ids=[
        "legacy",
        "live",
        "revoked",
        "expired",
        "wrong-secret",
        "unknown-id",
        "checksum",
        "malformed",
        "route-scope",
    ],
)
def test_api_keys(app: TestClient, presented: str, status: int, code: str, reason: str) -> None:
    response = post(app, auth(presented))
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        refused(response, status, code, reason)
    assert presented not in response.text


def test_scoped_key_works_in_scope(app: TestClient) -> None:
    ok = app.post(
        "/v1/embeddings", json={"model": "embed", "input": "hi"}, headers=auth(SCOPED_KEY)
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "authorization_malformed"),
        ({"authorization": "Bearer "}, "authorization_malformed"),
        ({"authorization": "Bearer \x7f\x00junk"}, "key_malformed"),
    ],
)
def test_malformed_credentials_are_401_never_500(
    app: TestClient, headers: dict[str, str], reason: str
) -> None:
    response = post(app, headers)
    assert response.status_code == 401
    assert response.json()["error"]["reason"] == reason


# --- HMAC-signed requests -----------------------------------------------------


def test_signed_request_is_served(app: TestClient, canaries: Canaries) -> None:
    headers = signed(SIGNING_KEY, "signer1", BODY)
    canaries.add(headers["authorization"].rpartition("sig=")[2], "hmac-signature")
    response = post(app, headers)
    assert response.status_code == 200, response.text


def test_signed_request_with_query_string(app: TestClient) -> None:
    headers = signed(SIGNING_KEY, "signer1", b"", path="/v1/models?limit=5", method="GET")
    assert app.get("/v1/models?limit=5", headers=headers).status_code == 200


def test_hmac_skew_over_300_s(app: TestClient) -> None:
    for skew in (-301, 301):
        response = post(app, signed(SIGNING_KEY, "signer1", BODY, now=time.time() + skew))
        refused(response, 401, "invalid_signature", "hmac_skew")


def test_hmac_replayed_nonce(app: TestClient) -> None:
    headers = signed(SIGNING_KEY, "signer1", BODY)
    assert post(app, headers).status_code == 200
    refused(post(app, headers), 401, "invalid_signature", "hmac_replay")


def test_hmac_tampered_body(app: TestClient) -> None:
    headers = signed(SIGNING_KEY, "signer1", BODY)
    tampered = json.dumps({**CHAT, "model": "b-only"}).encode()
    refused(post(app, headers, tampered), 401, "invalid_signature", "hmac_body_digest")


def test_hmac_wrong_key_or_signature(app: TestClient) -> None:
    forged = signed(LIVE_KEY, "signer1", BODY)  # signed with another key's secret
    refused(post(app, forged), 401, "invalid_signature", "hmac_signature")
    unknown = signed(LIVE_KEY, "nobody1", BODY)
    refused(post(app, unknown), 401, "invalid_signature", "hmac_signature")


def test_hmac_forged_request_does_not_burn_the_nonce(app: TestClient) -> None:
    value = nonce()
    refused(
        post(app, signed(LIVE_KEY, "signer1", BODY, nonce_value=value)),
        401,
        "invalid_signature",
        "hmac_signature",
    )
    assert post(app, signed(SIGNING_KEY, "signer1", BODY, nonce_value=value)).status_code == 200


def test_hmac_with_a_revoked_key(app: TestClient) -> None:
    refused(post(app, signed(REVOKED_KEY, "revoked1", BODY)), 401, "invalid_api_key", "key_revoked")


@pytest.mark.parametrize(
    "header",
    [
        "RK-HMAC-SHA256",
        "RK-HMAC-SHA256 keyId=signer1",
        "RK-HMAC-SHA256 keyId=signer1,ts=abc,nonce=aaaaaaaaaaaaaaaa,digest=x,sig=y",
        "RK-HMAC-SHA256 keyId=signer1,ts=1,nonce=short,digest=x,sig=y",
        "RK-HMAC-SHA256 keyId=signer1,keyId=x,ts=1,nonce=aaaaaaaaaaaaaaaa,digest=x,sig=y",
        "RK-HMAC-SHA256X keyId=signer1",
    ],
)
def test_hmac_malformed_header(app: TestClient, header: str) -> None:
    response = post(app, {"authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["reason"] in ("hmac_malformed", "authorization_malformed")


def test_sign_is_pure_and_checkable() -> None:
    header = signing.parse_header(
        signing.sign(SIGNING_KEY, "signer1", "POST", "/p", b"{}", 1000.0, "n" * 16)
    )
    key = signing.signing_key_from_hash(keys.hash_key(SIGNING_KEY))
    signing.check(header, key, "POST", "/p", b"{}", 1100.0, 300)
    with pytest.raises(signing.SignatureRejected) as info:
        signing.check(header, key, "POST", "/other", b"{}", 1100.0, 300)
    assert info.value.reason == "hmac_signature"


# --- OIDC tokens --------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


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
        ({"exp": int(time.time()) - 60}, "token_expired"),
        ({"nbf": int(time.time()) + 120}, "token_not_yet_valid"),
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
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "app-0-data").rglob("*") if p.is_file())
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
