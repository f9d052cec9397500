"""Overrides through the admin API of a real router process, observed in where its
traffic goes (counted by the mock backends)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, CHAT, GLOBEX_KEY, auth, eventually
from tests.helpers.tls_fixture import ALICE_SUBJECT, AdminCerts, RouterFactory, with_admin
from tests.helpers.usage_support import schema_errors, wait_ledger

Mocks = tuple[MockBackendProcess, MockBackendProcess]


def chat_hits(mocks: Mocks) -> tuple[int, int]:
    a, b = (m.stats()["by_path"].get("/v1/chat/completions", 0) for m in mocks)
    return a, b


def send(router: RouterProcess, n: int, key: str = ACME_KEY) -> list[str]:
    """The backend of each of `n` chat completions (each must succeed)."""
    served = []
    with httpx.Client(base_url=router.url, headers=auth(key), timeout=10) as client:
        for _ in range(n):
            answer = client.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200, answer.text
            served.append(answer.headers["x-router-backend"])
    return served


class Admin:
    def __init__(self, router: RouterProcess, client: httpx.Client) -> None:
        self.router = router
        self.client = client

    def create(self, **body: Any) -> dict[str, Any]:
        answer = self.client.post("/admin/v1/overrides", json={"reason": "test", **body})
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


@pytest.fixture
def admin(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    admin_certs: AdminCerts,
    tmp_path: Path,
) -> Iterator[Admin]:
    config, port = with_admin(config_data, admin_certs)
    router = start_router(config)
    with admin_certs.ready_client(port) as client:
        yield Admin(router, client)


def audit_log(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "router.audit"]


def test_drain_moves_traffic_off_the_backend_until_deleted(
    admin: Admin, mocks: Mocks, tmp_path: Path
) -> None:
    assert set(send(admin.router, 20)) == {"mock-a", "mock-b"}
    created = admin.create(action="drain", backend="mock-a", ttl_s=300)
    # The admin is the subject of the client certificate they connected with.
    assert created["created_by"] == ALICE_SUBJECT
    for mock in mocks:
        mock.reset_stats()
    assert set(send(admin.router, 20)) == {"mock-b"}
    assert chat_hits(mocks) == (0, 20)
    deleted = admin.client.delete(f"/admin/v1/overrides/{created['id']}?reason=done")
    assert deleted.status_code == 204
    assert set(send(admin.router, 20)) == {"mock-a", "mock-b"}
    entries = admin.client.get("/admin/v1/audit").json()["entries"]
    assert [(e["change"], e["reason"]) for e in entries] == [
        ("override_deleted", "done"),
        ("override_created", "test"),
    ]
    assert [e["actor"] for e in entries] == [ALICE_SUBJECT, ALICE_SUBJECT]
    assert entries[0]["override"]["id"] == created["id"]
    # Each change is also one JSON event on the router.audit logger.
    logged = audit_log(tmp_path / "router-0.log")
    assert [(e["event"], e["actor"], e["override_id"], e["reason"]) for e in logged] == [
        ("override_created", ALICE_SUBJECT, created["id"], "test"),
        ("override_deleted", ALICE_SUBJECT, created["id"], "done"),
    ]
    # ...and one `audit.router.v1` record, beside the usage records.
    records = wait_ledger(tmp_path / "router-0-data", 2, table="audit_records")
    assert [(r["event"], r["detail"]["actor"], r["detail"]["override_id"]) for r in records] == [
        ("override_created", ALICE_SUBJECT, created["id"]),
        ("override_deleted", ALICE_SUBJECT, created["id"]),
    ]
    assert all(schema_errors(r) == [] for r in records)


def test_pin_sends_all_of_a_model_to_one_backend(admin: Admin, mocks: Mocks) -> None:
    admin.create(action="pin", backend="mock-b", model="chat", ttl_s=300)
    assert set(send(admin.router, 20)) == {"mock-b"}
    assert chat_hits(mocks) == (0, 20)
    explained = admin.client.post(
        "/admin/v1/explain", json={"model": "chat", "organization": "acme"}
    ).json()
    assert explained["decision"]["candidates"] == [
        {"backend": "mock-b", "model": "mock-gpt", "tier": 0}
    ]
    assert explained["decision"]["rule"].startswith("override:ovr_")
    assert explained["decision"]["skipped"][0]["backend"] == "mock-a"
    assert explained["decision"]["skipped"][0]["reason"] == "overridden"


def test_an_override_for_one_organization_leaves_the_others_alone(admin: Admin) -> None:
    admin.create(action="drain", backend="mock-a", organization="globex", ttl_s=300)
    assert set(send(admin.router, 20, GLOBEX_KEY)) == {"mock-b"}
    assert set(send(admin.router, 20, ACME_KEY)) == {"mock-a", "mock-b"}


def test_weight_override_shifts_the_share(admin: Admin) -> None:
    admin.create(action="weight", backend="mock-b", model="chat", weight=1000, ttl_s=300)
    served = send(admin.router, 30)
    # 1000:1, so mock-a gets about one request in a thousand.
    assert served.count("mock-b") >= 29


def test_traffic_returns_when_the_override_expires(admin: Admin) -> None:
    created = admin.create(action="drain", backend="mock-a", ttl_s=1.5)
    assert set(send(admin.router, 10)) == {"mock-b"}
    # Expiry is wall-clock time, checked per request: once past, A serves again.
    time.sleep(max(0.0, created["expires_at"] - time.time()))
    assert eventually(lambda: "mock-a" in send(admin.router, 10), timeout=5)
    assert admin.client.get("/admin/v1/overrides").json()["overrides"] == []


def test_overrides_survive_a_restart(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    admin_certs: AdminCerts,
    tmp_path: Path,
) -> None:
    # One data directory for both: the restarted router reads what the first wrote.
    config, port = with_admin(config_data, admin_certs, dir=str(tmp_path / "data"))
    first = start_router(config)
    with admin_certs.ready_client(port) as client:
        created = client.post(
            "/admin/v1/overrides",
            json={"action": "drain", "backend": "mock-a", "ttl_s": 300, "reason": "disk swap"},
        ).json()
    first.stop()
    second = start_router(config)
    with admin_certs.ready_client(port) as client:
        assert [o["id"] for o in client.get("/admin/v1/overrides").json()["overrides"]] == [
            created["id"]
        ]
    assert set(send(second, 20)) == {"mock-b"}
    assert (tmp_path / "data" / "overrides.sqlite3").exists()


def test_draining_every_backend_of_a_model_answers_503(admin: Admin) -> None:
    admin.create(action="drain", backend="mock-a", model="embed", ttl_s=300)
    with httpx.Client(base_url=admin.router.url, headers=auth(), timeout=10) as client:
        answer = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "no_backend_available"
