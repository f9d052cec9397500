"""A real router's streamed answers, read off a socket (router_server.http_h11
frames their chunks itself): every chunk framed as HTTP/1.1 says, the
events the same as a non-streamed answer's content, the body ended by the
last chunk, and the connection still good for the next request."""

from __future__ import annotations

import socket
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


def _request(body: dict[str, object]) -> bytes:
    return raw_post(orjson.dumps(body))


@pytest.fixture(scope="module")
def router(
    mock_a: MockBackendProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    directory: Path = tmp_path_factory.mktemp("chunked")
    if not mock_a.running:
        mock_a.start()
    # `b-only` on a backend that paces its events, so each is a chunk of its own.
    paced_args = [
        "--api-key",
        BACKEND_SECRET,
        "--models",
        "mock-gpt,mock-gpt-b",
        "--chunk-delay-ms",
        "5",
    ]
    with MockBackendProcess(paced_args) as paced:
        data = with_data_dir(base_config(mock_a.url, paced.url), directory / "data")
        config = write_config(directory / "router.yaml", data)
        with RouterProcess(config, env={BACKEND_SECRET_ENV: BACKEND_SECRET}) as process:
            assert process.wait_ready()
            yield process


class _Reader:
    """Bytes off a socket, exactly as many as asked for."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.conn.recv(65536)
        assert chunk, "the router closed the connection inside an answer"
        self.buffer += chunk

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        found, _, self.buffer = self.buffer.partition(marker)
        return found

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        found, self.buffer = self.buffer[:count], self.buffer[count:]
        return found


def _head(reader: _Reader) -> tuple[int, dict[str, str]]:
    lines = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def _chunked(reader: _Reader) -> list[bytes]:
    """Each chunk of a chunked body, checked as RFC 9112 frames it: a hex size,
    CRLF, that many bytes, CRLF; then a last chunk of size 0 and no trailers."""
    chunks: list[bytes] = []
    while True:
        size_line = reader.until(b"\r\n")
        assert size_line
        assert all(c in b"0123456789abcdef" for c in size_line), size_line
        size = int(size_line, 16)
        if size == 0:
            assert reader.until(b"\r\n") == b""  # the empty line after the last chunk
            return chunks
        chunks.append(reader.exactly(size))
        assert reader.exactly(2) == b"\r\n"


def _content(events: bytes) -> str:
    text = ""
    blocks = [block for block in events.split(b"\n\n") if block.strip()]
    assert blocks[-1] == b"data: [DONE]"
    for block in blocks[:-1]:
        assert block.startswith(b"data: ")
        for choice in orjson.loads(block[len(b"data: ") :])["choices"]:
            text += choice["delta"].get("content") or ""
    return text


def test_a_stream_is_framed_chunk_by_chunk_and_the_connection_goes_on(
    router: RouterProcess,
) -> None:
    body = {**CHAT, "model": "b-only", "stream": True}
    with socket.create_connection(("127.0.0.1", router.port), timeout=30) as conn:
        reader = _Reader(conn)
        conn.sendall(_request(body))
        status, headers = _head(reader)
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert headers["content-type"].startswith("text/event-stream")
        streamed = _chunked(reader)
        # Then a plain answer and a second stream, on the same connection.
        conn.sendall(_request({**body, "stream": False}))
        status, headers = _head(reader)
        assert status == 200
        whole = orjson.loads(reader.exactly(int(headers["content-length"])))
        conn.sendall(_request({**body, "stream": True}))
        status, _ = _head(reader)
        assert status == 200
        again = _chunked(reader)
    assert len(streamed) > 2  # one chunk per event, not one body
    text = whole["choices"][0]["message"]["content"]
    assert text
    assert _content(b"".join(streamed)) == text
    assert _content(b"".join(again)) == text
