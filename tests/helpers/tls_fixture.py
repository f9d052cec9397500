"""Certificates for the admin listener's mutual TLS, made by `trustme` per session.

A pytest plugin (`pytest_plugins` in tests/conftest.py) with the fixture `admin_certs`:
a CA, the server certificate it signed for 127.0.0.1, a client certificate it
signed for the admin "alice", and a client certificate from another CA.
`AdminCerts.client()` opens an httpx client presenting one of them.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trustme

from router_server.mock_backend.process import free_port
from router_server.process import RouterProcess

ALICE = "alice"
# Alice's certificate's subject, as the admin API names her.
ALICE_SUBJECT = "CN=alice,OU=SRE,O=Example Ops"
# The `start_router` fixture of tests/helpers/router_fixture.py.
RouterFactory = Callable[..., RouterProcess]


@attrs.frozen
class AdminCerts:
    ca_file: Path
    server_cert: Path
    server_key: Path
    # Key and certificate in one PEM file each.
    alice: Path
    stranger: Path

    def listener(self, port: int | None = None) -> dict[str, Any]:
        """A `listeners.admin` config section using these certificates."""
        return {
            "host": "127.0.0.1",
            "port": free_port() if port is None else port,
            "cert_file": str(self.server_cert),
            "key_file": str(self.server_key),
            "ca_file": str(self.ca_file),
        }

    def context(self, client_cert: Path | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert is not None:
            context.load_cert_chain(str(client_cert))
        return context

    def client(self, port: int, client_cert: Path | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            verify=self.context(self.alice if client_cert is None else client_cert),
            timeout=5.0,
        )

    def wait_ready(self, port: int, timeout: float = 10.0) -> None:
        """Wait for the admin listener to answer (it opens after the public one)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(port) as client:
                    client.get("/admin/v1/overrides").raise_for_status()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def ready_client(self, port: int) -> httpx.Client:
        self.wait_ready(port)
        return self.client(port)


@pytest.fixture(scope="session")
def admin_certs(tmp_path_factory: pytest.TempPathFactory) -> AdminCerts:
    directory = tmp_path_factory.mktemp("admin-certs")
    ca = trustme.CA(organization_name="Router Test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    alice = ca.issue_cert(
        f"{ALICE}@example.test",
        common_name=ALICE,
        organization_name="Example Ops",
        organization_unit_name="SRE",
    )
    other_ca = trustme.CA(organization_name="Some Other CA")
    stranger = other_ca.issue_cert("mallory@example.test", common_name="mallory")
    paths = AdminCerts(
        ca_file=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        alice=directory / "alice.pem",
        stranger=directory / "stranger.pem",
    )
    ca.cert_pem.write_to_path(str(paths.ca_file))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths.server_cert), append=True)
    server.private_key_pem.write_to_path(str(paths.server_key))
    alice.private_key_and_cert_chain_pem.write_to_path(str(paths.alice))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(paths.stranger))
    return paths


def with_admin(
    config: dict[str, Any], certs: AdminCerts, **state: Any
) -> tuple[dict[str, Any], int]:
    """`config` with an admin listener on a free port (returned), and `state`
    merged into its state section (each router the test starts keeps its data
    in a directory of its own unless `state` names one)."""
    listener = certs.listener()
    result = {
        **config,
        "listeners": {**config.get("listeners", {}), "admin": listener},
        "state": {**config.get("state", {}), **state},
    }
    return result, int(listener["port"])
