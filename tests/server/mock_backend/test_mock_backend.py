"""The mock backend, started as a real process and driven over HTTP."""

from __future__ import annotations

import base64
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from router_server.mock_backend import MockBackendProcess

CHAT = {
    "model": "mock-gpt",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there friend"},
    ],
    "max_tokens": 5,
}
# 2 + 3 words of content, plus 3 per message.
CHAT_PROMPT_TOKENS = 11
CHAT_TEXT = "mock token alpha beta gamma"


@pytest.fixture
def backend() -> Iterator[MockBackendProcess]:
    with MockBackendProcess() as proc:
        yield proc


@pytest.fixture
def client(backend: MockBackendProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, trust_env=False, timeout=5.0) as c:
        yield c


def sse_events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line]


def decoded(events: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(e) for e in events if e != "[DONE]"]


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code


def test_models_lists_configured_ids() -> None:
    with MockBackendProcess(["--models", "a,b,c"]) as proc:
        response = httpx.get(proc.url + "/models", trust_env=False)
        one = httpx.get(proc.url + "/models/b", trust_env=False)
        missing = httpx.get(proc.url + "/models/zzz", trust_env=False)
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a", "b", "c"]
    assert all(m["object"] == "model" and m["owned_by"] == "mock" for m in body["data"])
    assert one.json()["id"] == "b"
    assert missing.status_code == 404


def test_chat_completion(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "mock-gpt"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": CHAT_TEXT}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": CHAT_PROMPT_TOKENS,
        "completion_tokens": 5,
        "total_tokens": CHAT_PROMPT_TOKENS + 5,
    }


def test_chat_defaults_and_list_content(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "one two"}]}]
    body = client.post("/chat/completions", json={"model": "x", "messages": messages}).json()
    assert body["usage"]["completion_tokens"] == 16
    assert body["usage"]["prompt_tokens"] == 5
    capped = {"model": "x", "messages": messages, "max_completion_tokens": 100_000}
    assert (
        client.post("/chat/completions", json=capped).json()["usage"]["completion_tokens"] == 4096
    )


def test_chat_stream(client: httpx.Client) -> None:
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = decoded(events)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "mock-gpt" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len([piece for piece in content if piece]) == 5
    assert "".join(content) == CHAT_TEXT
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == CHAT_PROMPT_TOKENS + 5


def test_stream_without_usage_option(client: httpx.Client) -> None:
    with client.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert all(c["choices"] for c in decoded(events))


def test_stream_events_arrive_as_produced(
    backend: MockBackendProcess, client: httpx.Client
) -> None:
    backend.configure(chunk_delay_ms=40)
    arrivals: list[float] = []
    with client.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response:
        for line in response.iter_lines():
            if line:
                arrivals.append(time.monotonic())
    # role, 5 words, finish, [DONE]: 7 delays between 8 events.
    assert len(arrivals) == 8
    assert arrivals[-1] - arrivals[0] >= 7 * 0.040 * 0.9


def test_line_endings_and_split_events(backend: MockBackendProcess, client: httpx.Client) -> None:
    backend.configure(line_ending="crlf", split_tail_bytes=1)
    request = {**CHAT, "stream": True}
    with client.stream("POST", "/chat/completions", json=request) as response:
        # httpx keeps the chunks of a chunked body apart.
        pieces = list(response.iter_raw())
    # role, 5 words, finish, [DONE]: each event ends "\r\n\r" in one chunk, "\n" in the next.
    assert pieces[1::2] == [b"\n"] * 8
    assert all(p.startswith(b"data: ") and p.endswith(b"\r\n\r") for p in pieces[::2])
    backend.configure(line_ending="cr", split_tail_bytes=None)
    with client.stream("POST", "/chat/completions", json=request) as response:
        body = response.read()
    assert b"\n" not in body
    assert body.endswith(b"\rdata: [DONE]\r\r")
    assert_envelope(client.post(backend.base_url + "/_mock/config", json={"line_ending": "x"}), 400)


def test_omit_usage(backend: MockBackendProcess, client: httpx.Client) -> None:
    backend.configure(omit_usage=True)
    assert "usage" not in client.post("/chat/completions", json=CHAT).json()
    embedded = client.post("/embeddings", json={"model": "mock-embed", "input": [1, 2, 3]})
    assert "usage" not in embedded.json()
    assert embedded.json()["data"]
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/chat/completions", json=request) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert all("usage" not in chunk for chunk in decoded(events))


def test_text_completion_plain_and_streamed(client: httpx.Client) -> None:
    request = {"model": "mock-gpt", "prompt": "one two three", "max_tokens": 3}
    body = client.post("/completions", json=request).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "mock token alpha"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/completions", json=streamed) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = decoded(events)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "mock token alpha"
    assert chunks[-1]["usage"]["prompt_tokens"] == 3


def test_embeddings(client: httpx.Client) -> None:
    single = client.post("/embeddings", json={"model": "mock-embed", "input": "a b c"}).json()
    assert single["object"] == "list"
    assert single["model"] == "mock-embed"
    assert single["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vector = single["data"][0]["embedding"]
    assert len(vector) == 8
    assert all(isinstance(x, float) for x in vector)

    many = client.post("/embeddings", json={"model": "mock-embed", "input": ["a b c", "d"]}).json()
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in many["data"])
    assert many["data"][0]["embedding"] == vector
    assert many["data"][1]["embedding"] != vector

    packed = client.post(
        "/embeddings", json={"model": "m", "input": "a b c", "encoding_format": "base64"}
    ).json()["data"][0]["embedding"]
    unpacked = struct.unpack("<8f", base64.b64decode(packed))
    assert unpacked == pytest.approx(vector, abs=1e-6)


def test_api_key_is_required_when_configured() -> None:
    with (
        MockBackendProcess(["--api-key", "backend-secret"]) as proc,
        httpx.Client(base_url=proc.url, trust_env=False) as client,
    ):
        missing = client.post("/chat/completions", json=CHAT)
        wrong = client.post(
            "/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"}
        )
        right = client.post(
            "/chat/completions", json=CHAT, headers={"Authorization": "Bearer backend-secret"}
        )
        stats = proc.stats()
    assert_envelope(missing, 401, "invalid_api_key")
    assert_envelope(wrong, 401, "invalid_api_key")
    assert right.status_code == 200
    assert stats["requests"] == 3
    assert stats["with_authorization"] == 2


def test_error_rate_one_answers_error_status() -> None:
    with MockBackendProcess(["--error-rate", "1.0", "--error-status", "503"]) as proc:
        response = httpx.post(proc.url + "/chat/completions", json=CHAT, trust_env=False)
        stats = proc.stats()
    assert_envelope(response, 503)
    assert response.json()["error"]["type"] == "server_error"
    assert stats["injected_errors"] == 1


def test_error_injection_is_deterministic_per_seed(
    backend: MockBackendProcess, client: httpx.Client
) -> None:
    def statuses() -> list[int]:
        return [client.get("/models").status_code for _ in range(30)]

    backend.configure(error_rate=0.5, seed=7)
    first = statuses()
    backend.configure(seed=7)
    assert statuses() == first
    assert set(first) == {200, 500}


def test_hang_never_answers(backend: MockBackendProcess) -> None:
    backend.configure(hang=True)
    with (
        httpx.Client(base_url=backend.url, trust_env=False, timeout=0.3) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/chat/completions", json=CHAT)
    stats = backend.stats()
    assert stats["requests"] == 1
    # The client closed its connection, which must end the hung request.
    deadline = time.monotonic() + 5
    while stats["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = backend.stats()
    assert stats["in_flight"] == 0


def test_hang_flag_at_start() -> None:
    with (
        MockBackendProcess(["--hang"]) as proc,
        pytest.raises(httpx.ReadTimeout),
    ):
        httpx.get(proc.url + "/models", trust_env=False, timeout=0.3)


def test_truncate_after_breaks_the_stream() -> None:
    request = {**CHAT, "max_tokens": 10, "stream": True}
    events: list[str] = []

    def read_into(response: httpx.Response) -> None:
        for line in response.iter_lines():
            if line:
                events.append(line.removeprefix("data: "))

    with (
        MockBackendProcess(["--truncate-after", "2"]) as proc,
        httpx.Client(base_url=proc.url, trust_env=False, timeout=5) as client,
        client.stream("POST", "/chat/completions", json=request) as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        read_into(response)
    assert "[DONE]" not in events
    content = [c["choices"][0]["delta"].get("content") for c in decoded(events)]
    assert [piece for piece in content if piece] == ["mock", " token"]


def test_runtime_config(backend: MockBackendProcess, client: httpx.Client) -> None:
    effective = backend.configure(latency_ms=150, truncate_after=3, error_status=429)
    assert effective["latency_ms"] == 150
    assert effective["truncate_after"] == 3
    assert effective["error_status"] == 429
    assert effective["hang"] is False

    started = time.monotonic()
    assert client.post("/chat/completions", json=CHAT).status_code == 200
    assert time.monotonic() - started >= 0.15

    cleared = backend.configure(latency_ms=None, truncate_after=None, error_status=None)
    assert cleared["latency_ms"] == 0
    assert cleared["truncate_after"] is None
    assert cleared["error_status"] == 500
    assert client.get(backend.base_url + "/_mock/config").json() == cleared

    backend.configure(error_rate=1.0)
    assert_envelope(client.get("/models"), 500)

    bad = client.post(backend.base_url + "/_mock/config", json={"latency": 1})
    assert_envelope(bad, 400, "invalid_config")
    wrong_type = client.post(backend.base_url + "/_mock/config", json={"error_rate": 2})
    assert_envelope(wrong_type, 400, "invalid_config")


def test_stats_and_reset(backend: MockBackendProcess, client: httpx.Client) -> None:
    client.post("/chat/completions", json=CHAT)
    client.post("/chat/completions", json={**CHAT, "model": "other"})
    client.post("/embeddings", json={"model": "mock-embed", "input": "x"})
    client.get("/models", headers={"Authorization": "Bearer whatever"})
    client.get("/nowhere")
    stats = client.get(backend.base_url + "/_mock/stats").json()
    assert stats["requests"] == 5
    assert stats["by_path"] == {
        "/v1/chat/completions": 2,
        "/v1/embeddings": 1,
        "/v1/models": 1,
        "/v1/nowhere": 1,
    }
    assert stats["models_seen"] == {"mock-gpt": 1, "other": 1, "mock-embed": 1}
    assert stats["with_authorization"] == 1
    # Every request above went over one keep-alive connection.
    assert stats["open_connections"] == 1

    backend.reset_stats()
    after = backend.stats()
    assert after["requests"] == 0
    assert after["by_path"] == {}
    assert after["models_seen"] == {}


def test_bad_requests(client: httpx.Client) -> None:
    malformed = client.post(
        "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_envelope(malformed, 400, "invalid_json")
    assert_envelope(client.post("/chat/completions", json=[1, 2]), 400)
    assert_envelope(client.post("/chat/completions", json={"messages": []}), 400)
    missing_messages = client.post("/chat/completions", json={"model": "m"})
    assert_envelope(missing_messages, 400)
    assert missing_messages.json()["error"]["param"] == "messages"
    wrong_method = client.get("/chat/completions")
    assert_envelope(wrong_method, 405)
    assert wrong_method.headers["allow"] == "POST"
    assert_envelope(client.get("/nowhere"), 404)
    assert_envelope(client.get("/../elsewhere"), 404)
    # The connection survives all of the above.
    assert client.post("/chat/completions", json=CHAT).status_code == 200


def test_chunked_request_body(client: httpx.Client) -> None:
    payload = orjson.dumps(CHAT)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    response = client.post(
        "/chat/completions", content=pieces(), headers={"content-type": "application/json"}
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == CHAT_PROMPT_TOKENS


def test_stop_kill_and_restart_keep_the_port() -> None:
    proc = MockBackendProcess(["--models", "only"]).start()
    try:
        port = proc.port
        assert proc.stop() == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(proc.url + "/models", trust_env=False)
        proc.restart()
        assert proc.port == port
        assert httpx.get(proc.url + "/models", trust_env=False).json()["data"][0]["id"] == "only"
        proc.kill()
        assert not proc.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(proc.url + "/models", trust_env=False)
        proc.restart(["--models", "again"])
        assert httpx.get(proc.url + "/models", trust_env=False).json()["data"][0]["id"] == "again"
    finally:
        proc.stop()


def test_openai_sdk_reads_the_responses(backend: MockBackendProcess) -> None:
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=backend.url, api_key="unused", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(model="mock-gpt", messages=CHAT["messages"])
        assert completion.choices[0].message.content.startswith("mock token")
        stream = sdk.chat.completions.create(
            model="mock-gpt",
            messages=CHAT["messages"],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == "mock token alpha beta"
        embedding = sdk.embeddings.create(model="mock-embed", input="a b c")
        assert len(embedding.data[0].embedding) == 8
        assert [m.id for m in sdk.models.list()] == ["mock-gpt", "mock-embed"]


def raw_exchange(proc: MockBackendProcess, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        # No half-close: like real clients, wait for the server to close.
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_garbage_gets_400_and_close(backend: MockBackendProcess) -> None:
    answer = raw_exchange(backend, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer


def test_pipelined_requests_are_answered_in_order(backend: MockBackendProcess) -> None:
    backend.configure(latency_ms=20)
    first = b"GET /v1/models/mock-gpt HTTP/1.1\r\nhost: x\r\n\r\n"
    second = b"GET /v1/models/mock-embed HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    answer = raw_exchange(backend, first + second)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'"mock-gpt"') < answer.index(b'"mock-embed"')
