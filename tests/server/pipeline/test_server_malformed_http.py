"""Malformed HTTP/1.1 sent over a raw socket to a real router process.

Requests h11 cannot parse never reach the app; the router still answers them
with problem+json and an x-request-id (router_server.http_h11). Requests
h11 accepts, however odd, are answered by their route, in its envelope.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import (
    ACME_KEY,
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    CHAT,
    base_config,
    eventually,
    with_data_dir,
    write_config,
)

BODY = orjson.dumps({**CHAT, "model": "b-only"})
LENGTH = b"content-length: %d" % len(BODY)
JSON = b"content-type: application/json"
AUTH = b"authorization: Bearer " + ACME_KEY.encode()


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(router: RouterProcess, head: bytes, body: bytes = BODY) -> Answer:
    """Send one request as given bytes; read the answer (the router may close)."""
    with socket.create_connection((router.host, router.port), timeout=10) as conn:
        conn.sendall(head + b"\r\n\r\n" + body)
        raw = b""
        while True:
            if b"\r\n\r\n" in raw:
                answer = Answer(raw)
                if len(answer.body) >= int(answer.headers.get("content-length", "0")):
                    return answer
            chunk = conn.recv(65536)
            if not chunk:
                return Answer(raw)
            raw += chunk


def request(*headers: bytes, target: bytes = b"/v1/chat/completions") -> bytes:
    return b"\r\n".join([b"POST " + target + b" HTTP/1.1", b"host: router", *headers])


@pytest.fixture(scope="module")
def served(
    mock_a: MockBackendProcess, mock_b: MockBackendProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RouterProcess, Path]]:
    """One router process for the module (each case opens its own connection), and its log."""
    for backend in (mock_a, mock_b):
        if not backend.running:
            backend.start()
    directory = tmp_path_factory.mktemp("malformed-http")
    data = with_data_dir(base_config(mock_a.url, mock_b.url), directory / "data")
    config = write_config(directory / "router.yaml", data)
    log_path = directory / "router.log"
    env = {BACKEND_SECRET_ENV: BACKEND_SECRET}
    with log_path.open("wb") as log, RouterProcess(config, env=env, log=log) as process:
        assert process.wait_ready()
        yield process, log_path


@pytest.fixture
def router(served: tuple[RouterProcess, Path], mocks: object) -> RouterProcess:
    return served[0]


def logged(log_path: Path, request_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("request_id") == request_id]


REFUSED = {
    "nul-in-value": (request(LENGTH, JSON, AUTH, b"x-note: a\x00b"), 400, "malformed_request"),
    "cr-in-value": (request(LENGTH, JSON, AUTH, b"x-note: a\rb"), 400, "malformed_request"),
    "conflicting-content-length": (
        request(LENGTH, b"content-length: 3", JSON, AUTH),
        400,
        "malformed_request",
    ),
    "negative-content-length": (
        request(b"content-length: -1", JSON, AUTH),
        400,
        "malformed_request",
    ),
    "non-numeric-content-length": (
        request(b"content-length: ten", JSON, AUTH),
        400,
        "malformed_request",
    ),
    "non-ascii-header-name": (
        request(LENGTH, JSON, AUTH, "x-n\u00f6te: 1".encode()),
        400,
        "malformed_request",
    ),
    "space-before-colon": (request(LENGTH, JSON, AUTH, b"x-note : 1"), 400, "malformed_request"),
    "no-colon": (request(LENGTH, JSON, AUTH, b"x-note"), 400, "malformed_request"),
    "non-ascii-target": (
        request(LENGTH, JSON, AUTH, target=b"/v1/chat/\xff"),
        400,
        "malformed_request",
    ),
    "gzip-transfer-encoding": (
        request(b"transfer-encoding: gzip", JSON, AUTH),
        501,
        "unsupported_transfer_encoding",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_request_h11_refuses_gets_problem_json_and_a_request_id(
    router: RouterProcess, served: tuple[RouterProcess, Path], case: str
) -> None:
    head, status, code = REFUSED[case]
    answer = exchange(router, head)
    assert answer.status == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    request_id = answer.headers["x-request-id"]
    uuid.UUID(request_id)
    body = answer.json()
    assert body["type"] == f"urn:router:problem:{code}"
    assert body["status"] == status
    assert body["detail"]
    assert ACME_KEY not in answer.body.decode("latin-1")
    # The id leads to the router's own line about it.
    assert eventually(lambda: logged(served[1], request_id) != [])
    assert [
        (line["msg"], line["status"], line["code"]) for line in logged(served[1], request_id)
    ] == [("request refused", status, code)]


def test_headers_beyond_the_limit_get_431_with_a_body(router: RouterProcess) -> None:
    # Just past hypercorn's 64 KiB (main.hypercorn_config) with no end of
    # headers: the router has read all of it when it answers.
    filler = b"x-filler: " + b"f" * (64 * 1024)
    with socket.create_connection((router.host, router.port), timeout=10) as conn:
        conn.sendall(request(AUTH, filler))
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    answer = Answer(raw)
    assert answer.status == 431
    assert answer.headers["content-type"] == "application/problem+json"
    uuid.UUID(answer.headers["x-request-id"])
    assert answer.json()["type"] == "urn:router:problem:request_headers_too_large"
    assert "65536 bytes" in answer.json()["detail"]


ACCEPTED = {
    # h11 merges equal Content-Length headers into one.
    "equal-duplicate-content-length": request(LENGTH, LENGTH, JSON, AUTH),
    # Bytes 0x80-0xff (obs-text) and DEL are allowed in a value; obs-fold is unfolded.
    "obs-text-in-value": request(LENGTH, JSON, AUTH, b"x-note: caf\xe9"),
    "del-in-value": request(LENGTH, JSON, AUTH, b"x-note: a\x7fb"),
    "folded-value": request(LENGTH, JSON, AUTH, b"x-note: a", b" b"),
    "odd-request-id": request(LENGTH, JSON, AUTH, b"x-request-id: \xff\xfe"),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_an_odd_request_h11_accepts_is_served_by_its_route(
    router: RouterProcess, case: str
) -> None:
    answer = exchange(router, ACCEPTED[case])
    assert answer.status == 200
    assert answer.json()["object"] == "chat.completion"
    uuid.UUID(answer.headers["x-request-id"])  # the router's own: the odd one is not echoed


@pytest.mark.parametrize(
    ("target", "envelope"),
    [(b"/v1/chat/completions", "openai"), (b"/v1/inference", "seed")],
)
def test_odd_bytes_in_a_credential_get_the_routes_envelope(
    router: RouterProcess, target: bytes, envelope: str
) -> None:
    answer = exchange(
        router, request(LENGTH, JSON, b"authorization: Bearer \xff\xfe", target=target)
    )
    assert answer.status == 401
    uuid.UUID(answer.headers["x-request-id"])
    body = answer.json()
    if envelope == "openai":
        assert body["error"]["code"] == "invalid_api_key"
    else:
        assert body["code"] == "INVALID_API_KEY"
