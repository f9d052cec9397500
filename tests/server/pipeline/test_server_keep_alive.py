"""Kept-alive client connections of a real router process (router_server.http_idle):
request after request on one connection, idle ones closed after
`server.keep_alive_timeout_s`, and at once when the router shuts down."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import (
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    CHAT,
    base_config,
    raw_post,
    with_data_dir,
    write_config,
)

BODY = orjson.dumps({**CHAT, "model": "b-only"})
REQUEST = raw_post(BODY)


def _router(
    mock_a: MockBackendProcess, mock_b: MockBackendProcess, directory: Path, keep_alive_s: float
) -> RouterProcess:
    for backend in (mock_a, mock_b):
        if not backend.running:
            backend.start()
    data = with_data_dir(base_config(mock_a.url, mock_b.url), directory / "data")
    data["server"]["keep_alive_timeout_s"] = keep_alive_s
    config = write_config(directory / "router.yaml", data)
    return RouterProcess(config, env={BACKEND_SECRET_ENV: BACKEND_SECRET})


@pytest.fixture(scope="module")
def router(
    mock_a: MockBackendProcess, mock_b: MockBackendProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    with _router(mock_a, mock_b, tmp_path_factory.mktemp("keep-alive"), 1) as process:
        assert process.wait_ready()
        yield process


def _answer(conn: socket.socket) -> tuple[int, bytes]:
    """One answer's status and body (content-length framed), read off `conn`."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = conn.recv(65536)
        assert chunk, "the router closed the connection before answering"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the router closed the connection inside an answer"
        body += chunk
    assert len(body) == length  # nothing more: one answer per request
    return int(lines[0].split()[1]), body


def _closed_by_router(conn: socket.socket) -> bool:
    """Whether the router closes `conn` (EOF) within the socket's timeout."""
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False


def test_one_connection_serves_request_after_request(router: RouterProcess) -> None:
    with socket.create_connection((router.host, router.port), timeout=10) as conn:
        for _ in range(20):
            conn.sendall(REQUEST)
            status, body = _answer(conn)
            assert status == 200, body
            assert orjson.loads(body)["object"] == "chat.completion"


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(router: RouterProcess) -> None:
    with socket.create_connection((router.host, router.port), timeout=30) as conn:
        conn.sendall(REQUEST)
        assert _answer(conn)[0] == 200
        # Idle from here: closed after keep_alive_timeout_s (1 s), not left open.
        assert _closed_by_router(conn)


def test_a_connection_that_never_sends_is_closed_too(router: RouterProcess) -> None:
    with socket.create_connection((router.host, router.port), timeout=30) as conn:
        assert _closed_by_router(conn)


def test_shutting_down_closes_idle_connections_at_once(
    mock_a: MockBackendProcess, mock_b: MockBackendProcess, tmp_path: Path
) -> None:
    """Idle connections do not hold a stopping router for its graceful timeout
    (10 s): they are closed as it stops, however long their keep-alive."""
    with _router(mock_a, mock_b, tmp_path, 3600) as process:
        assert process.wait_ready()
        conns = [socket.create_connection((process.host, process.port)) for _ in range(3)]
        try:
            for conn in conns[:2]:  # two that answered a request, one that never sent
                conn.sendall(REQUEST)
                assert _answer(conn)[0] == 200
            assert process._proc is not None
            process._proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            for conn in conns:
                conn.settimeout(30)
                assert _closed_by_router(conn)
            # Well before the graceful timeout, which a waiting idle connection would take.
            assert time.monotonic() - began < 6
            assert process._proc.wait(30) == 0
        finally:
            for conn in conns:
                conn.close()
