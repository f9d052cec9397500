"""Who the admin is: the verified certificate's subject, and nobody without one."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.admin.app import SharedRouter, create_admin_app
from router_server.admin.tls import subject_name
from router_server.app import create_app

from tests.helpers.support import with_data_dir


def test_subject_names_read_most_specific_first_and_escape_specials() -> None:
    cert = {
        "subject": (
            (("countryName", "DE"),),
            (("organizationName", "Acme, Inc."),),
            (("commonName", "#ops+1"), ("userId", "42")),
        )
    }
    assert subject_name(cert) == "CN=\\#ops\\+1+UID=42,O=Acme\\, Inc.,C=DE"
    assert subject_name({}) == ""


def test_without_a_verified_certificate_reads_work_and_changes_are_refused(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Any
) -> None:
    """Served without the TLS listener (no subject recorded), the admin app
    must not make anonymous changes."""
    config = structure(with_data_dir(config_data, tmp_path / "data"))
    shared = SharedRouter()
    with (
        TestClient(create_app(config, env=backend_env, state_ready=shared.set)),
        TestClient(create_admin_app(shared)) as admin,
    ):
        assert admin.get("/admin/v1/overrides").json()["overrides"] == []
        body = {"action": "drain", "backend": "mock-a", "ttl_s": 60, "reason": "x"}
        answer = admin.post("/admin/v1/overrides", json=body)
        assert answer.status_code == 403
        assert answer.json()["type"] == "urn:router:problem:admin_identity_required"
        assert admin.delete("/admin/v1/overrides/ovr_1").status_code == 403
    assert not (tmp_path / "o.sqlite3").exists()
