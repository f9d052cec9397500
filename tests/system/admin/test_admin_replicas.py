"""Two router processes sharing Redis: an override made through one replica's
admin API reaches the other within 5 s, and outlives both."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import redis

from router_core.overrides import new_override
from router_server.admin import codec
from router_server.process import RouterProcess

from tests.helpers.support import CHAT, auth, eventually, redis_state
from tests.helpers.tls_fixture import AdminCerts, RouterFactory, with_admin

REDIS_ENV = "ROUTER_TEST_OVERRIDES_REDIS"


def served_by(router: RouterProcess, n: int = 20) -> set[str]:
    with httpx.Client(base_url=router.url, headers=auth(), timeout=10) as client:
        answers = [client.post("/v1/chat/completions", json=CHAT) for _ in range(n)]
    assert {a.status_code for a in answers} == {200}
    return {a.headers["x-router-backend"] for a in answers}


def replica(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    admin_certs: AdminCerts,
    tmp_path: Path,
    redis_url: str,
    refresh_s: float = 2.0,
) -> tuple[RouterProcess, int]:
    config, port = with_admin(
        config_data, admin_certs, **redis_state(REDIS_ENV, refresh_s=refresh_s)
    )
    router = start_router(config, env={REDIS_ENV: redis_url})
    admin_certs.wait_ready(port)
    return router, port


def override_ids(admin_certs: AdminCerts, port: int) -> list[str]:
    with admin_certs.client(port) as client:
        return [o["id"] for o in client.get("/admin/v1/overrides").json()["overrides"]]


def test_an_override_reaches_the_other_replica_within_5_s_and_survives_restarts(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    admin_certs: AdminCerts,
    tmp_path: Path,
    redis_url: str,
) -> None:
    # A long timed refresh: within 5 s only pub/sub can have carried the change.
    one, one_port = replica(start_router, config_data, admin_certs, tmp_path, redis_url, 60)
    two, two_port = replica(start_router, config_data, admin_certs, tmp_path, redis_url, 60)
    assert served_by(two) == {"mock-a", "mock-b"}
    body = {"action": "drain", "backend": "mock-a", "ttl_s": 300, "reason": "replica test"}
    with admin_certs.client(one_port) as client:
        started = time.monotonic()
        created = client.post("/admin/v1/overrides", json=body).json()
    assert eventually(lambda: override_ids(admin_certs, two_port) == [created["id"]], 5, 0.01)
    print(f"override propagated between replicas in {time.monotonic() - started:.3f} s")
    assert served_by(two) == {"mock-b"}
    # Deleting it on the second replica frees the first.
    with admin_certs.client(two_port) as client:
        assert client.delete(f"/admin/v1/overrides/{created['id']}").status_code == 204
    assert eventually(lambda: override_ids(admin_certs, one_port) == [], 5, 0.01)
    # Both audit trails are the one in Redis.
    with admin_certs.client(one_port) as client:
        changes = [e["change"] for e in client.get("/admin/v1/audit").json()["entries"]]
    assert changes == ["override_deleted", "override_created"]

    # An override outlives every replica: Redis keeps it.
    with admin_certs.client(one_port) as client:
        kept = client.post("/admin/v1/overrides", json=body).json()
    one.stop()
    two.stop()
    three, three_port = replica(start_router, config_data, admin_certs, tmp_path, redis_url)
    assert override_ids(admin_certs, three_port) == [kept["id"]]
    assert served_by(three) == {"mock-b"}


def test_a_missed_notification_is_caught_by_the_timed_refresh(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    admin_certs: AdminCerts,
    tmp_path: Path,
    redis_url: str,
) -> None:
    router, port = replica(start_router, config_data, admin_certs, tmp_path, redis_url, 0.5)
    override = new_override(
        id="ovr_written_by_hand", action="drain", backend="mock-a", reason="no publish",
        ttl_s=300, now=time.time(), created_by="CN=script",
    )  # fmt: skip
    # Written straight into the hash, with no message on the channel.
    with redis.Redis.from_url(redis_url) as client:
        client.hset("router:{overrides}", override.id, codec.dumps(override))
    assert eventually(lambda: override_ids(admin_certs, port) == [override.id], 3, 0.05)
    assert served_by(router) == {"mock-b"}
