"""Keys and configs for the authentication tests."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from router_core import keys, signing

from tests.helpers.canary_fixture import Canaries
from tests.helpers.jwks_fixture import IdentityProvider
from tests.helpers.support import CHAT

LIVE_KEY = keys.format_live_key("live1abc", "L" * 32)
EXPIRED_KEY = keys.format_live_key("expired1", "E" * 32)
SCOPED_KEY = keys.format_live_key("scoped1", "S" * 32)
SIGNING_KEY = keys.format_live_key("signer1", "H" * 32)
ALL_KEYS = {
    "LIVE_KEY": LIVE_KEY, "EXPIRED_KEY": EXPIRED_KEY,
    "SCOPED_KEY": SCOPED_KEY, "SIGNING_KEY": SIGNING_KEY,
}  # fmt: skip


def auth_config(
    config: dict[str, Any], idp: IdentityProvider, data_dir: Path | None, **state: Any
) -> dict[str, Any]:
    """`config` with extra keys for acme, the identity provider, and its state
    (the key store, the usage spool) in `data_dir` (None: each router in its own),
    or as `state` says."""
    acme = config["organizations"]["acme"]
    extra = [
        {"id": "live1abc", "hash": keys.hash_key(LIVE_KEY)},
        {"id": "expired1", "hash": keys.hash_key(EXPIRED_KEY), "expires_at": time.time() - 60},
        {
            "id": "scoped1", "hash": keys.hash_key(SCOPED_KEY),
            "models": ["embed"], "routes": ["/v1/embeddings", "/v1/models"],
        },
        {"id": "signer1", "hash": keys.hash_key(SIGNING_KEY)},
    ]  # fmt: skip
    organizations = {**config["organizations"], "acme": {**acme, "keys": [*acme["keys"], *extra]}}
    return {
        **config,
        "organizations": organizations,
        "auth": {"issuers": [idp.issuer_config()]},
        "state": {
            **({} if data_dir is None else {"dir": str(data_dir)}),
            "refresh_s": 0.2,
            **state,
        },
    }


def nonce() -> str:
    return secrets.token_urlsafe(18)


def signed(
    api_key: str,
    key_id: str,
    body: bytes,
    *,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    now: float | None = None,
    nonce_value: str | None = None,
) -> dict[str, str]:
    header = signing.sign(
        api_key, key_id, method, path, body,
        time.time() if now is None else now, nonce_value or nonce(),
    )  # fmt: skip
    return {"authorization": header, "content-type": "application/json"}


AppFactory = Callable[[dict[str, Any]], TestClient]
BODY = json.dumps(CHAT).encode()


def auth_app(
    make_client: AppFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    data_dir: Path,
    canaries: Canaries,
) -> TestClient:
    """The app with `auth_config`, its keys registered as canaries."""
    for name, key in ALL_KEYS.items():
        canaries.add(key, name)
    return make_client(auth_config(config_data, idp, data_dir))


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


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
