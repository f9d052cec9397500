"""Bad admin input gets a clear problem+json answer, never a 500; a router whose
admin listener cannot start says why and exits 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.helpers.support import redis_state, write_config
from tests.helpers.tls_fixture import AdminCerts, RouterFactory, with_admin

VALID = {"action": "drain", "backend": "mock-a", "ttl_s": 60, "reason": "maintenance"}

# (body, status, code, words the message must contain)
OVERRIDE_CASES: list[tuple[Any, int, str, list[str]]] = [
    ({}, 422, "validation_failed", ["action: is required", "ttl_s: is required"]),
    ({**VALID, "backend": "nope"}, 422, "validation_failed", ["unknown backend 'nope'", "mock-a"]),
    ({**VALID, "ttl_s": 0}, 422, "validation_failed", ["ttl_s must be > 0"]),
    ({**VALID, "ttl_s": 10**9}, 422, "validation_failed", ["at most 2592000"]),
    ({**VALID, "ttl_s": "60"}, 422, "validation_failed", ["ttl_s: must be a number"]),
    ({**VALID, "ttl_s": True}, 422, "validation_failed", ["ttl_s: must be a number"]),
    ({k: v for k, v in VALID.items() if k != "reason"}, 422, "validation_failed",
     ["reason: is required"]),
    ({**VALID, "reason": "   "}, 422, "validation_failed", ["reason is required"]),
    ({**VALID, "action": "pin"}, 422, "validation_failed", ["a pin needs a model"]),
    ({**VALID, "action": "weight"}, 422, "validation_failed", ["needs weight > 0"]),
    ({**VALID, "action": "evict"}, 422, "validation_failed", ["action must be one of"]),
    ({**VALID, "model": "gpt-99"}, 422, "validation_failed", ["unknown model 'gpt-99'"]),
    ({**VALID, "organization": "initech"}, 422, "validation_failed",
     ["unknown organization 'initech'"]),
    ({**VALID, "colour": "red"}, 422, "validation_failed", ["colour: unknown field"]),
    ({**VALID, "action": "pin", "model": "embed", "backend": "mock-b"}, 422,
     "validation_failed", ["backend 'mock-b' does not serve model 'embed' (its backends: mock-a)"]),
    ([VALID], 422, "validation_failed", ["must be a JSON object"]),
]  # fmt: skip


def test_bad_admin_input_is_refused_with_a_clear_problem(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    admin_certs: AdminCerts,
    tmp_path: Path,
) -> None:
    config, port = with_admin(config_data, admin_certs)
    start_router(config)
    with admin_certs.ready_client(port) as client:
        for body, status, code, words in OVERRIDE_CASES:
            answer = client.post("/admin/v1/overrides", json=body)
            problem = answer.json()
            assert (answer.status_code, problem["type"]) == (
                status,
                f"urn:router:problem:{code}",
            ), body
            assert answer.headers["content-type"] == "application/problem+json"
            for word in words:
                assert word in problem["detail"], (body, problem["detail"])

        def check(method: str, path: str, status: int, code: str, **kwargs: Any) -> None:
            answer = client.request(method, path, **kwargs)
            assert answer.status_code == status, (path, answer.text)
            assert answer.json()["type"] == f"urn:router:problem:{code}", path

        json_type = {"content-type": "application/json"}
        check("POST", "/admin/v1/overrides", 400, "malformed_json", content=b"{", headers=json_type)
        check("POST", "/admin/v1/overrides", 415, "unsupported_media_type", content=b"x=1")
        big = {**VALID, "reason": "x" * 70_000}
        check("POST", "/admin/v1/overrides", 413, "payload_too_large", json=big)
        check("DELETE", "/admin/v1/overrides/ovr_nope", 404, "override_not_found")
        check("GET", "/admin/v1/audit?limit=0", 422, "validation_failed")
        check("GET", "/admin/v1/audit?limit=lots", 422, "validation_failed")
        check("POST", "/admin/v1/explain", 422, "validation_failed", json={"model": "chat"})
        explain = {"model": "chat", "organization": "initech"}
        check("POST", "/admin/v1/explain", 422, "validation_failed", json=explain)
        explain = {"model": "b-only", "organization": "globex"}
        check("POST", "/admin/v1/explain", 404, "model_not_found", json=explain)
        check("PUT", "/admin/v1/overrides", 405, "method_not_allowed", json=VALID)
        check("GET", "/admin/v2/overrides", 404, "not_found")
        # Nothing above changed anything.
        assert client.get("/admin/v1/audit").json()["entries"] == []
        assert client.get("/admin/v1/overrides").json()["overrides"] == []


def run_server(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_server", "--config", str(config_path), "--port", "0"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ({"cert_file": "/nonexistent/server.pem"}, "listeners.admin.cert_file: cannot read"),
        ({"ca_file": "/nonexistent/ca.pem"}, "listeners.admin.ca_file: cannot read"),
        ("swap", "are not a PEM certificate and its unencrypted private key"),
        ("encrypt", "are not a PEM certificate and its unencrypted private key"),
    ],
    ids=["missing-cert", "missing-ca", "key-is-not-the-cert", "encrypted-key"],
)
def test_a_misconfigured_admin_listener_stops_start_up(
    config_data: dict[str, Any],
    backend_env: dict[str, str],
    admin_certs: AdminCerts,
    tmp_path: Path,
    breakage: Any,
    message: str,
) -> None:
    config, _ = with_admin(config_data, admin_certs)
    admin = config["listeners"]["admin"]
    if breakage == "swap":
        admin["cert_file"], admin["key_file"] = admin["key_file"], admin["cert_file"]
    elif breakage == "encrypt":
        key = serialization.load_pem_private_key(Path(admin["key_file"]).read_bytes(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        (tmp_path / "encrypted.key").write_bytes(encrypted)
        admin["key_file"] = str(tmp_path / "encrypted.key")
    else:
        admin.update(breakage)
    result = run_server(write_config(tmp_path / "router.yaml", config), backend_env)
    assert result.returncode == 1
    assert "is not a valid config" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "PRIVATE KEY" not in result.stderr
    # `router config validate --check-env` finds the same problem.
    validate = subprocess.run(
        [sys.executable, "-m", "router_cli.main", "config", "validate", "--check-env",
         str(tmp_path / "router.yaml")],
        env={**os.environ, **backend_env}, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert validate.returncode == 1
    assert message in validate.stderr


def test_redis_overrides_need_the_redis_url_variable(
    config_data: dict[str, Any],
    backend_env: dict[str, str],
    admin_certs: AdminCerts,
    tmp_path: Path,
) -> None:
    config, _ = with_admin(config_data, admin_certs, **redis_state("ROUTER_TEST_NO_SUCH_VAR"))
    result = run_server(write_config(tmp_path / "router.yaml", config), backend_env)
    assert result.returncode == 1
    assert "state.redis.url_env: environment variable ROUTER_TEST_NO_SUCH_VAR" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_admin_port_in_use_stops_start_up(
    config_data: dict[str, Any],
    backend_env: dict[str, str],
    admin_certs: AdminCerts,
    tmp_path: Path,
) -> None:
    config, port = with_admin(config_data, admin_certs)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_server(write_config(tmp_path / "router.yaml", config), backend_env)
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_start_with_an_admin_listener_is_one_line_not_a_hang(
    config_data: dict[str, Any],
    backend_env: dict[str, str],
    admin_certs: AdminCerts,
    tmp_path: Path,
) -> None:
    # The admin app waits for the public app's state; the public app cannot open.
    config, _ = with_admin(config_data, admin_certs)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spool").write_text("not a directory")
    config["state"] = {"dir": str(tmp_path / "data")}
    result = run_server(write_config(tmp_path / "router.yaml", config), backend_env)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"router-server: cannot start: the usage spool {tmp_path / 'data' / 'spool'} cannot be "
        "opened (File exists); make it a writable directory or set state.dir to one"
    ]
    assert "listening" not in result.stdout
