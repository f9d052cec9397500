"""Two router processes sharing Redis: a key created through one replica's admin API
works on the other, and a revocation reaches the other within 5 s (pub/sub; the
timed refresh is set to 60 s so only pub/sub can carry it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from router_server.process import RouterProcess

from tests.helpers.auth_support import auth_config
from tests.helpers.canary_fixture import Canaries
from tests.helpers.jwks_fixture import IdentityProvider
from tests.helpers.support import CHAT, auth, redis_state
from tests.helpers.tls_fixture import AdminCerts, RouterFactory, with_admin
from tests.helpers.usage_support import wait_ledger

REDIS_ENV = "ROUTER_TEST_KEYS_REDIS"


def replica(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    admin_certs: AdminCerts,
    tmp_path: Path,
    redis_url: str,
) -> tuple[RouterProcess, int]:
    state = redis_state(REDIS_ENV, refresh_s=60)
    data = auth_config(config_data, idp, None, **state)  # the keys are in Redis
    data, port = with_admin(data, admin_certs, **state)
    router = start_router(data, env={REDIS_ENV: redis_url})
    admin_certs.wait_ready(port)
    return router, port


def answer(router: RouterProcess, key: str) -> tuple[int, str | None]:
    with httpx.Client(base_url=router.url, timeout=10) as client:
        response = client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    reason = response.json()["error"].get("reason") if response.status_code != 200 else None
    return response.status_code, reason


def test_revocation_reaches_the_other_replica_within_5_s(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    admin_certs: AdminCerts,
    tmp_path: Path,
    redis_url: str,
    canaries: Canaries,
) -> None:
    one, one_port = replica(start_router, config_data, idp, admin_certs, tmp_path, redis_url)
    two, two_port = replica(start_router, config_data, idp, admin_certs, tmp_path, redis_url)
    with admin_certs.client(one_port) as admin:
        created = admin.post("/admin/v1/keys", json={"organization": "acme", "reason": "test"})
        assert created.status_code == 201, created.text
        key = canaries.add(created.json()["key"], "admin-created-key")
        key_id = created.json()["id"]
        assert created.json()["state"] == "active"

        deadline = time.monotonic() + 5
        while answer(two, key) != (200, None):
            assert time.monotonic() < deadline, "the new key did not reach replica two"
            time.sleep(0.05)

        started = time.monotonic()
        revoked = admin.post(f"/admin/v1/keys/{key_id}/revoke", json={"reason": "leaked"})
        assert revoked.status_code == 200, revoked.text
        while answer(two, key) != (401, "key_revoked"):
            assert time.monotonic() - started < 5, "the revocation did not reach replica two"
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        print(f"revocation reached replica two in {elapsed * 1000:.0f} ms")
        assert answer(one, key) == (401, "key_revoked")

    with admin_certs.client(two_port) as admin:
        listed = admin.get("/admin/v1/keys").json()["keys"]
        assert [(k["id"], k["state"]) for k in listed] == [(key_id, "revoked")]
        assert "hash" not in listed[0]
        audit = admin.get("/admin/v1/keys/audit").json()["entries"]
        assert [(e["change"], e["actor"]) for e in audit][:2] == [
            ("key_revoked", "CN=alice,OU=SRE,O=Example Ops"),
            ("key_created", "CN=alice,OU=SRE,O=Example Ops"),
        ]


def test_rotation_through_the_admin_api(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    admin_certs: AdminCerts,
    tmp_path: Path,
    redis_url: str,
    canaries: Canaries,
) -> None:
    router, port = replica(start_router, config_data, idp, admin_certs, tmp_path, redis_url)
    with admin_certs.client(port) as admin:
        created = admin.post(
            "/admin/v1/keys",
            json={"organization": "acme", "reason": "t", "models": ["chat"], "expires_in_s": 600},
        ).json()
        old = canaries.add(created["key"], "admin-old-key")
        rotated = admin.post(
            f"/admin/v1/keys/{created['id']}/rotate", json={"reason": "yearly", "overlap_s": 0}
        )
        assert rotated.status_code == 201, rotated.text
        new = canaries.add(rotated.json()["new"]["key"], "admin-new-key")
        assert rotated.json()["new"]["models"] == ["chat"]
        assert rotated.json()["old"]["state"] == "expired"
        missing = admin.post("/admin/v1/keys/nosuchkey1/revoke", json={"reason": "x"})
        assert missing.status_code == 404
        bad = admin.post("/admin/v1/keys", json={"organization": "initech", "reason": "x"})
        assert bad.status_code == 422
        with admin_certs.client(port, client_cert=admin_certs.stranger) as stranger:
            try:
                refused = stranger.get("/admin/v1/keys").status_code
            except httpx.TransportError:
                refused = 0  # the handshake itself failed: mutual TLS refused it
            assert refused in (0, 403)
    assert answer(router, old) == (401, "key_expired")
    assert answer(router, new) == (200, None)
    # Each change is an `audit.router.v1` record too, beside override changes and
    # limit denials (the ledger holds them; Kafka gets the same records).
    records = wait_ledger(tmp_path / "router-0-data", 2, table="audit_records")
    changes = [(r["event"], r["key_id"], r["detail"]["actor"]) for r in records]
    assert sorted(changes) == [
        ("key_created", created["id"], "CN=alice,OU=SRE,O=Example Ops"),
        ("key_rotated", created["id"], "CN=alice,OU=SRE,O=Example Ops"),
    ]
    rotated_record = next(r for r in records if r["event"] == "key_rotated")
    assert rotated_record["detail"]["new_key_id"] == rotated.json()["new"]["id"]
    assert rotated_record["organization"] == "acme"
