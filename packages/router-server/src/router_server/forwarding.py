"""Forwarding with failover, and relaying streams event by event.

Rules:
- Failover happens only before the client has received a byte: a backend
  that refuses, times out, or answers 5xx/429/401/403 is recorded and the
  next candidate is tried. Any other 4xx is the backend's verdict on the
  request itself and goes back to the caller.
- Once a stream has started, a broken backend ends it with an explicit SSE
  error event, never a silent truncation: a stream that ends without
  `[DONE]` is reported as broken too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs
import httpx
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router_core.problems import Catalog, ClientError, DependencyError
from router_core.requests import InferenceRequest
from router_core.routing import Candidate
from router_server.backends import BackendClient, BackendFailure, FailureKind

# Statuses after which another backend may well succeed: the backend is
# overloaded, or does not accept our credential or our model mapping (404).
_RETRY_ELSEWHERE = frozenset({401, 403, 404, 408, 409, 429})


@attrs.frozen
class Opened:
    """A backend answered 2xx; its body is not read yet."""

    client: BackendClient
    candidate: Candidate
    response: httpx.Response


def _describe(status: int) -> str:
    if status in (401, 403):
        return f"rejected the router's credential (HTTP {status})"
    if status == 404:
        return "does not serve this model or route (HTTP 404)"
    return f"answered HTTP {status}"


async def open_first(
    request: InferenceRequest,
    candidates: Sequence[Candidate],
    clients: Mapping[str, BackendClient],
    on_result: Callable[[str, bool], None],
) -> Opened:
    """The first candidate that answers 2xx; raises 502/504 when none does."""
    failures: list[BackendFailure] = []
    path = request.operation.backend_path
    for candidate in candidates:
        client = clients[candidate.backend]
        body = {**request.body, "model": candidate.model}
        try:
            response = await client.open(path, body)
        except BackendFailure as failure:
            on_result(candidate.backend, False)
            failures.append(failure)
            continue
        status = response.status_code
        if status < 300:
            on_result(candidate.backend, True)
            return Opened(client, candidate, response)
        detail = await _safe_read(client, response)
        if status >= 500 or status in _RETRY_ELSEWHERE:
            on_result(candidate.backend, status < 500)
            failures.append(
                BackendFailure(candidate.backend, FailureKind.STATUS, _describe(status), status)
            )
            continue
        on_result(candidate.backend, True)
        raise _rejected(candidate.backend, status, detail)
    raise _all_failed(request.model, failures)


async def _safe_read(client: BackendClient, response: httpx.Response) -> bytes:
    try:
        return await client.read(response)
    except BackendFailure:
        return b""


def _rejected(backend: str, status: int, detail: bytes) -> ClientError:
    message = f"Backend {backend!r} rejected the request (HTTP {status})"
    try:
        parsed = orjson.loads(detail)
        inner = parsed.get("error", {}).get("message") if isinstance(parsed, dict) else None
    except orjson.JSONDecodeError:
        inner = None
    if isinstance(inner, str) and inner:
        message += f": {inner[:500]}"
    return ClientError(Catalog.BACKEND_REJECTED, message + ".", status=status)


def _all_failed(model: str, failures: list[BackendFailure]) -> DependencyError:
    if not failures:
        return DependencyError(
            Catalog.NO_BACKEND_AVAILABLE, f"No backend is available for model {model!r}."
        )
    reasons = "; ".join(str(f) for f in failures)
    if all(f.kind is FailureKind.TIMEOUT for f in failures):
        return DependencyError(
            Catalog.BACKEND_TIMEOUT, f"Every backend for model {model!r} timed out: {reasons}."
        )
    return DependencyError(
        Catalog.BACKEND_ERROR, f"Every backend for model {model!r} failed: {reasons}."
    )


async def read_json(opened: Opened) -> dict[str, Any]:
    """The whole body of a non-streamed answer, which must be a JSON object."""
    raw = await opened.client.read(opened.response)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise DependencyError(
            Catalog.BACKEND_ERROR,
            f"Backend {opened.candidate.backend!r} returned a body that is not a JSON object.",
        )
    return body


def _error_event(message: str) -> bytes:
    error = {
        "error": {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": Catalog.BACKEND_ERROR.code,
        }
    }
    return b"data: " + orjson.dumps(error) + b"\n\n"


@attrs.define
class StreamTally:
    """What a relayed stream carried, for settling its limits and its usage record."""

    # Drop the usage-only chunk: the router asked for it, the client did not.
    strip_usage: bool = False
    usage: dict[str, Any] | None = None
    content_events: int = 0
    done: bool = False
    broken: bool = False


def _rewrite_event(event: bytes, public_model: str, tally: StreamTally) -> bytes | None:
    """The event under the public model name, or None to drop it."""
    if not event.startswith(b"data:"):
        return event
    data = event[5:].strip()
    if data == b"[DONE]":
        tally.done = True
        return event
    if not data.startswith(b"{"):
        return event
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return event
    if not isinstance(chunk, dict):
        return event
    if isinstance(chunk.get("usage"), dict):
        tally.usage = chunk["usage"]
        if tally.strip_usage and not chunk.get("choices"):
            return None
    if chunk.get("choices"):
        tally.content_events += 1
    if "model" in chunk:
        chunk["model"] = public_model
        return b"data: " + orjson.dumps(chunk)
    return event


OnClose = Callable[[StreamTally], Awaitable[None]]


class RelayResponse(StreamingResponse):
    """An SSE relay that closes the backend response however the relay ends,
    including a client that disconnects before the first event, and then
    reports what the stream carried to `on_close`."""

    def __init__(
        self,
        opened: Opened,
        public_model: str,
        headers: Mapping[str, str],
        tally: StreamTally,
        on_close: OnClose,
    ) -> None:
        super().__init__(
            relay_events(opened, public_model, tally),
            headers={**headers, "cache-control": "no-cache"},
            media_type="text/event-stream",
        )
        self.opened = opened
        self.tally = tally
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.opened.response.aclose()
                await self.on_close(self.tally)


async def relay_events(
    opened: Opened, public_model: str, tally: StreamTally
) -> AsyncIterator[bytes]:
    """The backend's SSE stream, each event passed on as soon as it is complete.

    Events completed by the same backend chunk go out in one write: a send
    per event costs the server a framed chunk and a drain each, and on one
    core that was a third of a short stream's cost (see benchmarks/).
    """
    buffer = b""
    backend = opened.candidate.backend
    try:
        async for chunk in opened.client.chunks(opened.response):
            buffer += chunk.replace(b"\r\n", b"\n")
            *events, buffer = buffer.split(b"\n\n")
            ready: list[bytes] = []
            for event in events:
                if not event:
                    continue
                rewritten = _rewrite_event(event, public_model, tally)
                if rewritten is not None:
                    ready.append(rewritten + b"\n\n")
            if ready:
                yield b"".join(ready)
    except BackendFailure as failure:
        tally.broken = True
        yield _error_event(f"The stream from backend {backend!r} broke: {failure.detail}.")
        return
    if not tally.done:
        tally.broken = True
        yield _error_event(f"The stream from backend {backend!r} ended before completion.")
