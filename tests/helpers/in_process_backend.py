"""OpenAI-compatible backends inside the test process, behind one `httpx.MockTransport`.

For tests whose subject is what the router decides (limits, routing, usage
records, error envelopes), not the bytes on the wire: the app gets the
transport (`create_app(backend_transport=...)`) and no mock backend process
or socket is involved. The answers are the mock backend's own
(`router_server.mock_backend.protocol.answer`, one source of fake answers), and each
backend keeps the mock's knobs and counters (`MockConfig`, `MockStats`), so a
test reads the same `configure()`, `stats()`, `stop()` and `start()` as on a
`MockBackendProcess`. What only a real socket can show (hangs and timeouts,
truncated or split streams, line endings, chunk pacing) is refused here: those
tests keep the real mock server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import anyio
import httpx
import orjson

from router_server.mock_backend.payloads import RequestError
from router_server.mock_backend.protocol import POST_ROUTES, Streamed, answer, error_for
from router_server.mock_backend.state import MockConfig, MockState, MockStats, updated_config

# Knobs whose effect is on the wire, not in the answer: the real server's.
_WIRE_KNOBS = {"hang", "truncate_after", "split_tail_bytes", "line_ending", "chunk_delay_ms"}


class Backend(Protocol):
    """What tests use of a mock backend, in-process or a `MockBackendProcess`."""

    @property
    def url(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def configure(self, **changes: Any) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> dict[str, Any]: ...

    def start(self) -> object: ...

    def stop(self) -> object: ...

    def kill(self) -> None: ...


def _json(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": "application/json"})


def _error(
    path: str, status: int, message: str, code: str, param: str | None = None
) -> httpx.Response:
    return _json(status, error_for(path, status, message, param, code))


class InProcessBackend:
    """One backend, reached at `http://{host}/v1` through its `InProcessBackends`."""

    def __init__(self, host: str, models: Iterable[str], api_key: str | None = None) -> None:
        self.host = host
        self.state = MockState(MockConfig(api_key=api_key, models=tuple(models)))
        self._running = True

    @property
    def url(self) -> str:
        return f"http://{self.host}/v1"

    @property
    def running(self) -> bool:
        return self._running

    def configure(self, **changes: Any) -> dict[str, Any]:
        off = MockConfig()
        wire = [
            k for k in _WIRE_KNOBS & changes.keys() if changes[k] not in (None, getattr(off, k))
        ]
        if wire:
            raise ValueError(f"{sorted(wire)} act on the wire: use the real mock backend")
        self.state.set_config(updated_config(self.state.config, changes), reseed="seed" in changes)
        return self.state.config.public()

    def stats(self) -> dict[str, Any]:
        return self.state.stats_body()

    def reset_stats(self) -> dict[str, Any]:
        self.state.stats = MockStats()
        return self.stats()

    def stop(self) -> None:
        """From now on connections to it are refused, as for a stopped process."""
        self._running = False

    kill = stop

    def start(self) -> InProcessBackend:
        self._running = True
        return self

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if not self._running:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        state, stats = self.state, self.state.stats
        stats.requests += 1
        stats.by_path[path] = stats.by_path.get(path, 0) + 1
        if "authorization" in request.headers:
            stats.with_authorization += 1
        if (traceparent := request.headers.get("traceparent")) is not None:
            stats.with_traceparent += 1
            stats.last_traceparent = traceparent
        if "x-router-probe" in request.headers:
            stats.probes += 1
        is_post = path in POST_ROUTES
        if not is_post and path != "/v1/models" and not path.startswith("/v1/models/"):
            return _error(path, 404, f"unknown path {path}", "not_found")
        if request.method != ("POST" if is_post else "GET"):
            return _error(path, 405, "method not allowed", "method_not_allowed")
        body: dict[str, Any] = {}
        if is_post:
            try:
                parsed = orjson.loads(await request.aread())
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                return _error(path, 400, "could not parse the JSON body", "invalid_json")
            body = parsed
            if isinstance(model := body.get("model"), str):
                stats.models_seen[model] = stats.models_seen.get(model, 0) + 1
        config = state.config
        if config.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {config.api_key}"
        ):
            return _error(path, 401, "incorrect API key provided", "invalid_api_key")
        try:
            answered = answer(path, body, with_usage=not config.omit_usage, models=config.models)
        except RequestError as exc:
            return _error(path, 400, exc.message, "invalid_request", exc.param)
        if isinstance(answered, tuple) and answered[0] != 200:
            return _json(*answered)
        if config.latency_ms > 0:
            await anyio.sleep(config.latency_ms / 1000)
        if state.should_fail():
            stats.injected_errors += 1
            return _error(path, config.error_status, "mock backend injected error", "mock_error")
        if isinstance(answered, tuple):
            return _json(*answered)
        stats.streams += 1
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        return httpx.Response(200, content=_events(answered), headers=headers)


async def _events(completion: Streamed) -> AsyncIterator[bytes]:
    for data, _ in completion.events():
        yield data


class InProcessBackends:
    """Backends by host name, and the one transport that reaches them all."""

    def __init__(self, *backends: InProcessBackend) -> None:
        self.backends = backends
        self.by_host = {backend.host: backend for backend in backends}
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        backend = self.by_host.get(request.url.host)
        if backend is None:
            raise httpx.ConnectError(f"no backend at {request.url.host}", request=request)
        return await backend.handle(request)
