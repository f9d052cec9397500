"""Backend transport: one pooled httpx client per backend, exceptions mapped at the edge.

httpx's API is kept for every backend call; the transport under it is
aiohttp's client by default (httpx-aiohttp), which on one core moves about
five times the requests of httpx's own pool (see docs/operations.md, "Backend transport").
No httpx or aiohttp exception leaves this module: callers see
`BackendFailure`, which says what broke and whether it is safe to try the
next backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import attrs
import httpx
import orjson

from router_core.attempts import FailureKind
from router_core.config import Backend, RouterConfig
from router_core.config_enums import BackendKind, Protocol
from router_core.requests import Operation
from router_core.sse import EventSplitter
from router_server import tracing

if TYPE_CHECKING:
    from router_server.aws import EventStreamSplitter, Signer
    from router_server.google import ServiceAccountToken

# What Claude on Vertex AI wants in the body instead of a model name.
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
# Azure OpenAI's v1 API (no dated api-version; the deployment is the body's
# `model`), where its Responses API is.
AZURE_V1 = "/openai/v1/"
AZURE_V1_RESPONSES = AZURE_V1 + "responses"
AZURE_RESPONSES_OPERATION = Operation.RESPONSES.backend_path


class BackendFailure(Exception):
    def __init__(self, backend: str, kind: FailureKind, detail: str, status: int | None = None):
        super().__init__(f"backend {backend!r}: {detail}")
        self.backend = backend
        self.kind = kind
        self.detail = detail
        self.status = status


def _map(backend: str, exc: Exception) -> BackendFailure:
    if isinstance(exc, httpx.ConnectTimeout):
        return BackendFailure(backend, FailureKind.CONNECT, "connect timed out")
    if isinstance(exc, httpx.TimeoutException):
        return BackendFailure(backend, FailureKind.TIMEOUT, "timed out waiting for the backend")
    if isinstance(exc, httpx.ConnectError):
        return BackendFailure(backend, FailureKind.CONNECT, "connection refused or unreachable")
    # The message of a library exception can carry the URL; keep only the type.
    return BackendFailure(backend, FailureKind.PROTOCOL, f"transport error ({type(exc).__name__})")


class TokenFile:
    """A bearer token another process keeps in a file (a sidecar that refreshes an
    Entra ID token): re-read when the file changes, looked at once a second at most.

    A file that goes missing or unreadable keeps the last token read: the
    backend refuses it once it expires, which fails the request over. The
    token never appears in an error or a log.
    """

    CHECK_EVERY_S = 1.0

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._token: str | None = None
        self._seen: tuple[int, int, int] | None = None
        self._next_check = float("-inf")

    def token(self) -> str | None:
        now = self._clock()
        if now < self._next_check:
            return self._token
        self._next_check = now + self.CHECK_EVERY_S
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if seen != self._seen:
                text = self.path.read_text(encoding="utf-8").strip()
                if text:
                    self._token, self._seen = text, seen
        except (OSError, UnicodeDecodeError):
            pass
        return self._token


@attrs.frozen
class _Target:
    """What every POST to one backend path shares: built once by the client."""

    url: httpx.URL
    headers: httpx.Headers
    extensions: dict[str, Any]


@attrs.define
class BackendClient:
    """Forwarding hands each request straight to the client's transport.

    `AsyncClient.send` wraps the transport in auth flows, redirect handling,
    a cookie jar and a log line per request; none applies to a backend call
    (no auth, no redirects followed, and backend cookies must not be shared
    between callers), and on one core it cost ~20% of the router's time per
    request (see benchmarks/). URL, headers and timeouts still come from the
    client, built once per path by `build_request`.
    """

    name: str
    settings: Backend
    client: httpx.AsyncClient
    transport: httpx.AsyncBaseTransport
    # A credential read per call (an Entra token file), else None: the client's
    # headers already hold it.
    token_file: TokenFile | None = None
    # Bedrock: every call is SigV4-signed over its URL and bytes.
    signer: Signer | None = None
    # Vertex AI: a service account's access token on every call.
    google_token: ServiceAccountToken | None = None
    _targets: dict[str, _Target] = attrs.field(factory=dict, init=False)
    # Requests using this client now; a client replaced by a reload is closed at 0.
    active: int = attrs.field(default=0, init=False)

    def path_for(self, path: str, model: str, *, stream: bool = False) -> str:
        """Where an operation's `path` (/chat/completions, ...) is for `model`."""
        azure = self.settings.azure
        if azure is not None:
            if path == AZURE_RESPONSES_OPERATION:  # the v1 API: the deployment is in the body
                return AZURE_V1_RESPONSES
            return f"/openai/deployments/{azure.deployment(model)}{path}"
        if self.settings.kind is BackendKind.GEMINI:
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            return f"/models/{model}:{method}"
        vertex = self.settings.vertex
        if vertex is not None:
            base = (
                f"/projects/{vertex.project}/locations/{vertex.location}"
                f"/publishers/{vertex.publisher}/models/{quote(model, safe='@')}"
            )
            if vertex.publisher == "anthropic":
                return f"{base}:{'streamRawPredict' if stream else 'rawPredict'}"
            return f"{base}:{'streamGenerateContent?alt=sse' if stream else 'generateContent'}"
        if self.settings.kind is BackendKind.BEDROCK:
            # An inference profile's ARN holds '/', which must not split the
            # path; ':' stays as it is, since aiohttp would unquote it after
            # signing and the signature would no longer match the path sent.
            return f"/model/{quote(model, safe=':')}/converse{'-stream' if stream else ''}"
        return path

    def call_path(self, method: str, model: str) -> str:
        """Where a provider's own `method` for `model` is: Gemini's and Vertex AI's
        `:embedContent` / `:batchEmbedContents` / `:predict`, Bedrock's `/invoke`."""
        vertex = self.settings.vertex
        if vertex is not None:
            return (
                f"/projects/{vertex.project}/locations/{vertex.location}"
                f"/publishers/{vertex.publisher}/models/{quote(model, safe='@')}:{method}"
            )
        if self.settings.kind is BackendKind.BEDROCK:
            return f"/model/{quote(model, safe=':')}/{method}"
        return f"/models/{model}:{method}"

    def prepare(self, body: Mapping[str, Any], model: str) -> Mapping[str, Any]:
        """`body` as this backend takes it: with the model named in it, or (when
        the model is in the URL) without."""
        speaks = self.settings.speaks
        if Protocol.GEMINI in speaks or Protocol.BEDROCK in speaks:
            return body
        if self.settings.vertex is not None:  # Claude on Vertex AI
            kept = {k: v for k, v in body.items() if k != "model"}
            return {**kept, "anthropic_version": VERTEX_ANTHROPIC_VERSION}
        if self.settings.azure is not None:  # Azure's v1 API reads the deployment there
            return {**body, "model": self.settings.azure.deployment(model)}
        return {**body, "model": model}

    def splitter(self) -> EventSplitter | EventStreamSplitter:
        """What cuts this backend's stream into events: SSE, or Bedrock's frames."""
        if self.settings.kind is BackendKind.BEDROCK:
            from router_server.aws import EventStreamSplitter

            return EventStreamSplitter()
        return EventSplitter()

    async def _auth(self, method: str, url: str, content: bytes) -> dict[str, str]:
        """The per-call credential headers, if this backend has any."""
        if self.google_token is not None:
            from router_server.google import MintFailed

            try:
                return {"authorization": f"Bearer {await self.google_token.token()}"}
            except MintFailed as exc:
                raise BackendFailure(self.name, FailureKind.CONNECT, str(exc)) from None
        if self.signer is not None:
            from router_server.aws import NoCredentials

            try:
                return self.signer.headers(method, url, content)
            except NoCredentials:
                raise BackendFailure(
                    self.name, FailureKind.CONNECT, "no AWS credentials to sign with"
                ) from None
        if self.token_file is None:
            return {}
        token = self.token_file.token()
        if token is None:
            raise BackendFailure(
                self.name, FailureKind.CONNECT, "no Entra ID token: the token file is unreadable"
            )
        return {"authorization": f"Bearer {token}"}

    def _target(self, path: str) -> _Target:
        target = self._targets.get(path)
        if target is None:
            template = self.client.build_request("POST", path)
            if path.startswith(AZURE_V1):  # Azure's v1 API takes no dated api-version
                template.url = template.url.copy_remove_param("api-version")
            headers = httpx.Headers(self.client.headers)
            headers["content-type"] = "application/json"
            target = _Target(template.url, headers, template.extensions)
            self._targets[path] = target
        return target

    async def open(
        self, path: str, body: Mapping[str, Any], extra: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """POST `body` and return the response with its body not yet read; `extra`
        headers (the client's protocol headers, passed on) go with it."""
        target = self._target(path)
        content = orjson.dumps(body)
        with tracing.backend_span(self.name) as trace_headers:  # a no-op unless tracing is on
            headers = target.headers
            auth = await self._auth("POST", str(target.url), content)
            if trace_headers or extra or auth:
                headers = httpx.Headers(
                    {**headers, **(extra or {}), **(trace_headers or {}), **auth}
                )
            request = httpx.Request(
                "POST",
                target.url,
                headers=headers,
                content=content,
                extensions=target.extensions,
            )
            try:
                response = await self.transport.handle_async_request(request)
            except httpx.HTTPError as exc:
                raise _map(self.name, exc) from None
        response.request = request
        return response

    async def read(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise _map(self.name, exc) from None
        finally:
            # Shielded: a cancelled request (a lost hedge, a client gone) must
            # still hand its connection back to the pool.
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _map(self.name, exc) from None
        finally:
            # Shielded: a cancelled request (a lost hedge, a client gone) must
            # still hand its connection back to the pool.
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> httpx.Response:
        """A probe's call, with the backend's per-call credentials."""
        content = b"" if body is None else orjson.dumps(body)
        request = self.client.build_request(
            method,
            path,
            content=content,
            headers={**headers, "content-type": "application/json"},
            timeout=timeout_s,
        )
        request.headers.update(await self._auth(method, str(request.url), content))
        return await self.client.send(request)

    async def probe(self, timeout_s: float) -> bool:
        """Whether the backend answers HTTP at all (any status below 500)."""
        path = _PROBE_PATHS.get(self.settings.kind, "/models")
        try:
            response = await self._send("GET", path, None, _PROBE, timeout_s)
        except (httpx.HTTPError, BackendFailure):
            return False
        return response.status_code < 500

    async def trial(self, model: str, timeout_s: float) -> str | None:
        """Whether the backend serves inference: None if a one-token chat
        completion of `model` answers within `timeout_s` (any status below
        500: a refusal is still a prompt answer), else what went wrong.

        A model listing proves nothing here: a hung backend can still list.
        """
        body: dict[str, Any] = {**TRIAL_BODY, "model": model}
        path = "/chat/completions"
        if Protocol.GEMINI in self.settings.speaks:
            body, path = TRIAL_GEMINI_BODY, ":generateContent"
        elif Protocol.BEDROCK in self.settings.speaks:
            body, path = TRIAL_CONVERSE_BODY, "/converse"
        elif Protocol.OPENAI not in self.settings.speaks:  # an Anthropic backend
            body = {**TRIAL_MESSAGES_BODY, "model": model}
            path = "/messages"
        sent = self.prepare(body, model)
        try:
            response = await self._send("POST", self.path_for(path, model), sent, _TRIAL, timeout_s)
        except httpx.HTTPError as exc:
            return f"trial probe: {_map(self.name, exc).detail}"
        except BackendFailure as failure:
            return f"trial probe: {failure.detail}"
        if response.status_code >= 500:
            return f"trial probe: HTTP {response.status_code}"
        return None


# The router's own probes say so, for a backend's logs (and the mock's counts).
PROBE_HEADER = "x-router-probe"
_PROBE = {PROBE_HEADER: "active"}
_TRIAL = {PROBE_HEADER: "trial"}
# The smallest real inference request: one token, not streamed.
TRIAL_BODY = {
    "messages": [{"role": "user", "content": "ping"}],
    "max_tokens": 1,
    "stream": False,
}
TRIAL_MESSAGES_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
TRIAL_CONVERSE_BODY = {
    "messages": [{"role": "user", "content": [{"text": "ping"}]}],
    "inferenceConfig": {"maxTokens": 1},
}
# Where each kind's active probe looks (default: the OpenAI-style model list).
# Bedrock's runtime lists nothing: any answer below 500 from its root will do.
_PROBE_PATHS = {
    BackendKind.AZURE_OPENAI: "/openai/models",
    BackendKind.BEDROCK: "/",
    BackendKind.VERTEX: "/",
}
TRIAL_GEMINI_BODY = {
    "contents": [{"role": "user", "parts": [{"text": "ping"}]}],
    "generationConfig": {"maxOutputTokens": 1},
}


def _transport(kind: str, settings: Backend) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(
        max_connections=settings.max_in_flight, max_keepalive_connections=settings.max_in_flight
    )
    if kind == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, trust_env=False)
        return transport
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


class _Borrowed(httpx.AsyncBaseTransport):
    """A transport the caller handed in (`create_app(backend_transport=...)`) and
    still owns: every backend's client sends through it, none closes it (a
    reload retires one backend's client while the others still use it)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None


def credential(settings: Backend, env: Mapping[str, str]) -> str | None:
    if settings.api_key_env is None:
        return None
    return env.get(settings.api_key_env)


def open_client(
    name: str,
    settings: Backend,
    transport: str,
    env: Mapping[str, str],
    given: httpx.AsyncBaseTransport | None = None,
) -> BackendClient:
    """A client for one backend, on a pool of its own of kind `transport`, or
    sending through `given` (which the caller keeps and closes)."""
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    token_file = None
    key = credential(settings, env)
    azure = settings.azure
    if azure is not None:
        # Azure OpenAI: the version on every call; an API key in its own
        # header, or an Entra ID bearer token (from the environment, or a file
        # read per call).
        params["api-version"] = azure.api_version
        if key:
            headers["api-key"] = key
        elif azure.entra_token_env is not None and env.get(azure.entra_token_env):
            headers["authorization"] = f"Bearer {env[azure.entra_token_env]}"
        elif azure.entra_token_file is not None:
            token_file = TokenFile(azure.entra_token_file)
    elif settings.kind is BackendKind.GEMINI:
        if key:
            headers["x-goog-api-key"] = key
    elif settings.kind is BackendKind.ANTHROPIC:
        headers["anthropic-version"] = settings.anthropic_version
        if key:
            headers["x-api-key"] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.read_timeout_s,
        pool=settings.connect_timeout_s,
    )
    signer = None
    if settings.bedrock is not None:
        from router_server.aws import Signer

        signer = Signer(settings.bedrock.region)
    google_token = None
    if settings.vertex is not None:
        from router_server.google import ServiceAccountToken

        key = settings.vertex.credentials_file or env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        google_token = ServiceAccountToken(key)
    pool = _transport(transport, settings) if given is None else _Borrowed(given)
    client = httpx.AsyncClient(
        base_url=settings.base_url.rstrip("/"),
        headers=headers,
        params=params,
        timeout=timeout,
        transport=pool,
        trust_env=False,
    )
    return BackendClient(name, settings, client, pool, token_file, signer, google_token)


def open_clients(
    config: RouterConfig,
    env: Mapping[str, str] | None = None,
    given: httpx.AsyncBaseTransport | None = None,
) -> dict[str, BackendClient]:
    """One client per backend; close them with `close_clients`."""
    env = os.environ if env is None else env
    return {
        name: open_client(name, settings, config.server.transport, env, given)
        for name, settings in config.backends.items()
    }


async def close_clients(clients: Mapping[str, BackendClient]) -> None:
    for backend in clients.values():
        await backend.client.aclose()
