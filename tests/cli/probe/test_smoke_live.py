"""`router smoke` against a real router with mock backends: every check passing,
and each way one fails (router down, bad key, unknown model, erroring backend,
no limit headers, metrics unreachable or behind the ops token, TLS)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from router_cli.main import main
from router_server.exit_codes import Exit
from router_server.mock_backend import MockBackendProcess, free_port
from router_server.process import RouterProcess

from tests.cli.probe.conftest import with_limits
from tests.helpers.ops_support import OPS_TOKEN, OPS_TOKEN_ENV, with_ops_token
from tests.helpers.support import ACME_KEY, GLOBEX_KEY, REVOKED_KEY

Live = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHECKS = ["healthz", "readyz", "status", "models", "chat", "limits", "stream", "metrics"]


def smoke(
    capsys: pytest.CaptureFixture[str], url: str, *args: str, key: str = ACME_KEY
) -> tuple[int, dict[str, Any], str]:
    code = main(["smoke", url, "--key", key, "--format", "json", *args])
    out, err = capsys.readouterr()
    assert key not in out + err  # the key is never printed
    return code, json.loads(out), err


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def detail(report: dict[str, Any], name: str) -> str:
    return next(str(c["detail"]) for c in report["checks"] if c["name"] == name)


def test_a_healthy_deployment_passes_every_check(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    code, report, err = smoke(capsys, router.url, "--model", "chat")
    assert code == Exit.OK, report
    assert statuses(report) == dict.fromkeys(CHECKS, "pass")
    assert report["passed"] is True
    assert report["failed"] == []
    assert detail(report, "limits").startswith("x-ratelimit-limit-requests: 1000")
    assert "then [DONE]" in detail(report, "stream")
    assert "all 8 checks passed" in err


def test_the_table_has_one_line_per_check_and_the_url_may_end_in_v1(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    assert main(["smoke", router.url + "/v1/", "--key", ACME_KEY, "--model", "chat"]) == Exit.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["PASS", name] for name in CHECKS]


def test_without_model_the_first_the_key_may_use_is_tried(
    live_router: Live, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = live_router()
    monkeypatch.setenv("ROUTER_API_KEY", GLOBEX_KEY)  # the key from the environment
    code = main(["smoke", router.url, "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert "trying 'chat'" in detail(report, "models")  # globex may use only chat
    # globex has no rate limit: no limit header to find, and the check says why.
    assert code == Exit.FAILED
    assert report["failed"] == ["limits"]
    assert "rate limit" in detail(report, "limits")


def test_nothing_listening_is_unavailable_and_nothing_else_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report, err = smoke(capsys, f"http://127.0.0.1:{free_port()}")
    assert code == Exit.UNAVAILABLE
    assert statuses(report)["healthz"] == "fail"
    assert "cannot connect" in detail(report, "healthz")
    assert {s for name, s in statuses(report).items() if name != "healthz"} == {"skip"}
    assert "failed: healthz" in err


def test_a_refused_key_fails_models_and_skips_what_needs_it(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    code, report, _ = smoke(capsys, router.url, key=REVOKED_KEY)
    assert code == Exit.FAILED
    found = statuses(report)
    assert found["models"] == "fail"
    assert "401" in detail(report, "models")
    assert "the key was refused" in detail(report, "models")
    assert [found[n] for n in ("chat", "limits", "stream")] == ["skip"] * 3
    assert [found[n] for n in ("healthz", "readyz", "status", "metrics")] == ["pass"] * 4


def test_a_model_the_key_may_not_use_is_named_with_those_it_may(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    code, report, _ = smoke(capsys, router.url, "--model", "no-such-model")
    assert code == Exit.FAILED
    assert report["failed"] == ["models"]
    assert "'no-such-model' is not offered" in detail(report, "models")
    assert "chat" in detail(report, "models")


def test_a_failing_backend_fails_chat_and_stream(
    live_router: Live, mocks: Mocks, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    mocks[1].configure(error_rate=1.0, error_status=400)  # b-only: served by mock-b alone
    code, report, _ = smoke(capsys, router.url, "--model", "b-only")
    assert code == Exit.FAILED
    assert "chat" in report["failed"]
    assert "stream" in report["failed"]
    assert detail(report, "chat").startswith("/v1/chat/completions: 4")  # the router's status
    assert statuses(report)["limits"] == "skip"


def test_metrics_unreachable_or_behind_the_ops_token(
    live_router: Live, config_data: dict[str, Any], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(OPS_TOKEN_ENV, OPS_TOKEN)
    router = live_router(with_ops_token(with_limits(config_data)), {OPS_TOKEN_ENV: OPS_TOKEN})
    nowhere = f"http://127.0.0.1:{free_port()}/metrics"
    code, report, _ = smoke(capsys, router.url, "--model", "chat", "--metrics-url", nowhere)
    assert code == Exit.FAILED
    assert report["failed"] == ["metrics"]
    assert detail(report, "metrics").startswith(f"{nowhere}: cannot connect")

    code, report, _ = smoke(capsys, router.url, "--model", "chat")
    assert code == Exit.FAILED
    assert report["failed"] == ["metrics"]
    assert "pass --ops-token-env" in detail(report, "metrics")

    code, report, err = smoke(
        capsys, router.url, "--model", "chat", "--ops-token-env", OPS_TOKEN_ENV
    )
    assert code == Exit.OK, report
    assert OPS_TOKEN not in json.dumps(report) + err


def test_an_unset_ops_token_variable_or_no_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROUTER_API_KEY", raising=False)
    assert main(["smoke", "http://127.0.0.1:1"]) == Exit.USAGE
    assert "no API key" in capsys.readouterr().err
    args = [
        "smoke",
        "http://127.0.0.1:1",
        "--key",
        ACME_KEY,
        "--ops-token-env",
        "ROUTER_TEST_UNSET",
    ]
    assert main(args) == Exit.USAGE
    assert "ROUTER_TEST_UNSET, which is not set" in capsys.readouterr().err
    assert main(["smoke", "ftp://x", "--key", ACME_KEY]) == Exit.USAGE


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https server whose certificate a private CA signed: (its URL, the CA's PEM)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/status/healthz" else 404)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", ca_file
    server.shutdown()
    server.server_close()


def test_a_certificate_the_client_does_not_trust_is_a_tls_error(
    tls_server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, ca_file = tls_server
    code, report, _ = smoke(capsys, url)
    assert code == Exit.UNAVAILABLE
    assert detail(report, "healthz").startswith("TLS error: certificate verify failed")
    # Trusting its CA, the same server is reached (and found to be no router).
    code, report, _ = smoke(capsys, url, "--ca-cert", str(ca_file))
    assert code == Exit.FAILED
    assert statuses(report)["healthz"] == "pass"
    assert statuses(report)["readyz"] == "fail"
    assert main(["smoke", url, "--key", ACME_KEY, "--ca-cert", str(ca_file) + ".missing"]) == 2
