"""The admin listener: mutual TLS against a real router process, and absent from
the public listener."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import (
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    base_config,
    with_data_dir,
    write_config,
)
from tests.helpers.tls_fixture import AdminCerts, with_admin

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def raw_get(port: int, context: ssl.SSLContext) -> tuple[str, bytes]:
    """One request over a fresh TLS connection: ("answer", bytes), or where the
    server refused it: ("handshake" | "read", b"")."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            # Ragged EOFs not suppressed: a dropped connection is an error, not b"".
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
        except ssl.SSLError:
            return "handshake", b""
        with tls:
            tls.sendall(b"GET /admin/v1/backends HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            try:
                return "answer", tls.recv(65536)
            except ssl.SSLError:
                return "read", b""


def client_context(certs: AdminCerts, cert: Path | None, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = certs.context(cert)
    context.maximum_version = version
    return context


class Served(NamedTuple):
    router: RouterProcess
    admin_port: int


@pytest.fixture(scope="module")
def served(
    mock_a: MockBackendProcess,
    mock_b: MockBackendProcess,
    admin_certs: AdminCerts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """One router process for the module: every test only connects to its listeners."""
    for backend in (mock_a, mock_b):
        if not backend.running:
            backend.start()
    directory = tmp_path_factory.mktemp("admin-mtls")
    data = with_data_dir(base_config(mock_a.url, mock_b.url), directory / "data")
    config, port = with_admin(data, admin_certs)
    path = write_config(directory / "router.yaml", config)
    env = {BACKEND_SECRET_ENV: BACKEND_SECRET}
    with (
        (directory / "router.log").open("wb") as log,
        RouterProcess(path, env=env, log=log) as router,
    ):
        admin_certs.wait_ready(port)
        yield Served(router, port)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=str)
def test_a_valid_client_certificate_is_served(
    served: Served, admin_certs: AdminCerts, version: ssl.TLSVersion
) -> None:
    admin_port = served.admin_port
    stage, answer = raw_get(admin_port, client_context(admin_certs, admin_certs.alice, version))
    assert stage == "answer"
    assert answer.startswith(b"HTTP/1.1 200")
    with admin_certs.client(admin_port) as client:
        backends = {b["name"]: b for b in client.get("/admin/v1/backends").json()["backends"]}
    assert set(backends) == {"mock-a", "mock-b"}
    # The same health, field for field, as the public status shows.
    status = httpx.get(f"{served.router.url}/v1/status", timeout=5).json()["backends"]
    assert backends["mock-a"]["health"]
    assert set(backends["mock-a"]["health"]) == set(status["mock-a"])


# The server drops a connection whose client certificate is missing or not from
# its CA: with TLS 1.2 inside the handshake; with TLS 1.3, where the client's
# handshake ends before the server has checked its certificate, on the first
# read. Either way no HTTP answer.
REFUSED_AT = {ssl.TLSVersion.TLSv1_2: "handshake", ssl.TLSVersion.TLSv1_3: "read"}


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=str)
def test_no_client_certificate_is_refused(
    served: Served, admin_certs: AdminCerts, version: ssl.TLSVersion
) -> None:
    admin_port = served.admin_port
    assert raw_get(admin_port, client_context(admin_certs, None, version)) == (
        REFUSED_AT[version],
        b"",
    )


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=str)
def test_a_certificate_from_another_ca_is_refused(
    served: Served, admin_certs: AdminCerts, version: ssl.TLSVersion
) -> None:
    admin_port = served.admin_port
    context = client_context(admin_certs, admin_certs.stranger, version)
    assert raw_get(admin_port, context) == (REFUSED_AT[version], b"")
    with (
        admin_certs.client(admin_port, admin_certs.stranger) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get("/admin/v1/backends")


def test_plain_http_on_the_admin_port_gets_no_answer(served: Served) -> None:
    admin_port = served.admin_port
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{admin_port}/admin/v1/backends", timeout=5)


def test_admin_routes_are_absent_from_the_public_listener(served: Served) -> None:
    router = served.router
    for method, path in [
        ("GET", "/admin/v1/backends"),
        ("GET", "/admin/v1/overrides"),
        ("POST", "/admin/v1/overrides"),
        ("DELETE", "/admin/v1/overrides/x"),
        ("POST", "/admin/v1/explain"),
        ("GET", "/admin/v1/audit"),
    ]:
        answer = httpx.request(method, router.url + path, json={}, timeout=5)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["type"] == "urn:router:problem:not_found"
    paths = httpx.get(router.url + "/openapi.json", timeout=5).json()["paths"]
    assert "/v1/chat/completions" in paths
    assert not [p for p in paths if p.startswith("/admin")]
