"""The authentication matrix for API keys and signed requests, good and broken,
through the real app (in-process), each with its expected status, code and reason.
(OIDC tokens: test_auth_tokens.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from router_core import keys, signing

from tests.helpers.auth_support import (
    BODY,
    EXPIRED_KEY,
    LIVE_KEY,
    SCOPED_KEY,
    SIGNING_KEY,
    AppFactory,
    auth_app,
    nonce,
    post,
    refused,
    signed,
)
from tests.helpers.canary_fixture import Canaries
from tests.helpers.jwks_fixture import IdentityProvider
from tests.helpers.support import ACME_KEY, CHAT, REVOKED_KEY, auth

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
    # The model list shows what the key may use, not all its organization may.
    listed = app.get("/v1/models", headers=auth(SCOPED_KEY)).json()["data"]
    assert [m["id"] for m in listed] == ["embed"]


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


def test_hmac_nonce_is_remembered_across_a_restart(
    make_client: AppFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    tmp_path: Path,
    canaries: Canaries,
) -> None:
    """Embedded nonces live in SQLite: a new router on the same files refuses a replay."""
    headers = signed(SIGNING_KEY, "signer1", BODY)
    first = auth_app(make_client, config_data, idp, tmp_path, canaries)
    assert post(first, headers).status_code == 200
    assert (tmp_path / "nonces.sqlite3").exists()
    first.__exit__(None, None, None)  # the restart: one router on a data directory at a time
    second = auth_app(make_client, config_data, idp, tmp_path, canaries)
    refused(post(second, headers), 401, "invalid_signature", "hmac_replay")
    # A fresh nonce still passes on the new router.
    assert post(second, signed(SIGNING_KEY, "signer1", BODY)).status_code == 200


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
