"""HTTP/1.1 over a raw `asyncio.Protocol`, parsed by httptools.

Why not Starlette: the benchmark compares the routed path with this server
directly, so it must be an order of magnitude faster than the router. The
fast path (no latency, not streamed) answers inside `data_received` with one
`transport.write` and never creates a task. Anything that waits (latency,
streams, hangs) runs in one task per connection; requests that arrive
meanwhile are queued and answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, unquote

import httptools
import orjson

from . import bedrock, embeddings, vertex
from .bedrock import BEDROCK_PATHS, BedrockAnswer, bedrock_error_body
from .gemini import GEMINI_PATHS, STREAM, GeminiAnswer, gemini_error_body
from .native import MESSAGES_PATHS, NativeAnswer, anthropic_error_body, count_tokens_body
from .payloads import (
    Completion,
    RequestError,
    embeddings_body,
    error_body,
    model_object,
    models_body,
    parse_chat,
    parse_text,
    with_line_ending,
)
from .state import ConfigError, MockState, MockStats, updated_config

log = logging.getLogger(__name__)

_JSON = b"application/json"
POST_ROUTES = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/v1/messages", "/v1/messages/count_tokens", "/v1/responses", *GEMINI_PATHS,
    *BEDROCK_PATHS, *embeddings.EMBED_PATHS,
}  # fmt: skip
# What an answer the mock streams can be.
Streamed = Completion | NativeAnswer | GeminiAnswer | BedrockAnswer
# The headers a SigV4 signature may cover, kept for the Bedrock front.
_SIGNABLE = frozenset({b"host", b"x-amz-date", b"x-amz-security-token", b"content-type"})
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


@dataclass(slots=True)
class Request:
    method: bytes
    path: str
    body: bytes
    authorization: bytes | None
    keep_alive: bool
    http11: bool
    # W3C trace context sent by the caller (the router, when tracing is on).
    traceparent: bytes | None = None
    # Sent by the router's own probes (`x-router-probe`), not by a client.
    probe: bool = False
    anthropic_version: bytes | None = None
    query: str = ""
    # Azure OpenAI's key header, Anthropic's and Google's.
    api_key: bytes | None = None
    x_api_key: bytes | None = None
    goog_api_key: bytes | None = None
    # Headers a signature may cover (host, x-amz-*, content-type), by name.
    signable: dict[str, str] | None = None


def error_for(path: str, status: int, message: str, param: str | None, code: str | None) -> bytes:
    """An error body in the envelope of the route at `path`."""
    if path in MESSAGES_PATHS:
        return anthropic_error_body(status, message)
    if path in GEMINI_PATHS or path in embeddings.GOOGLE_EMBED_PATHS:
        return gemini_error_body(status, message)
    if path in BEDROCK_PATHS or path == embeddings.BEDROCK_INVOKE:
        return bedrock_error_body(status, message)
    return error_body(message, _error_type(status), param, code)


def answer(
    path: str, body: dict[str, Any], *, with_usage: bool, models: Sequence[str]
) -> Streamed | tuple[int, bytes]:
    """What the mock answers a request on `path`: a stream to run, or (status, body).
    Shared with the tests' in-process backend."""
    if path == "/v1/chat/completions" or path == "/v1/completions":
        completion = parse_chat(body) if path == "/v1/chat/completions" else parse_text(body)
        if not completion.stream:
            return 200, completion.body(with_usage=with_usage)
        return completion if with_usage else replace(completion, include_usage=False)
    if path == "/v1/embeddings":
        return 200, embeddings_body(body, with_usage=with_usage)
    if path == "/v1/messages" or path == "/v1/responses":
        native = NativeAnswer(path.removeprefix("/v1/"), body, with_usage=with_usage)
        return native if native.stream else (200, native.body())
    if path == "/v1/messages/count_tokens":
        return 200, count_tokens_body(body)
    if path in embeddings.EMBED_PATHS:
        return embeddings.answer(path, body, str(body.pop("model", "")))  # the URL's model
    if path in BEDROCK_PATHS:
        body.pop("model", None)  # from the URL (see _handle_bedrock)
        converse = BedrockAnswer(body, stream=path == bedrock.STREAM, with_usage=with_usage)
        return converse if converse.stream else (200, converse.body())
    if path in GEMINI_PATHS:
        model = str(body.pop("model", ""))  # from the URL (see _handle_gemini)
        gemini = GeminiAnswer(body, model, stream=path == STREAM, with_usage=with_usage)
        return gemini if gemini.stream else (200, gemini.body())
    if path == "/v1/models":
        return 200, models_body(models)
    model_id = path.removeprefix("/v1/models/")
    if model_id not in models:
        err = error_body(f"model {model_id!r} does not exist", "invalid_request_error", "model")
        return 404, err
    return 200, orjson.dumps(model_object(model_id))


_BEDROCK_METHOD = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")
_GEMINI_METHOD = re.compile(
    r"^/v1beta/models/([A-Za-z0-9._-]+)"
    r":(generateContent|streamGenerateContent|embedContent|batchEmbedContents)$"
)
_GEMINI_BAD_KEY = "API key not valid. Please pass a valid API key."
_GEMINI_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_AZURE_VERSION = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")
_AZURE_DEPLOYMENT = re.compile(
    r"^/openai/deployments/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/(chat/completions|completions|embeddings)$"
)
_AZURE_DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)


def _azure_error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class MockHTTPProtocol(asyncio.Protocol):
    def __init__(self, state: MockState) -> None:
        self._state = state
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._authorization: bytes | None = None
        self._traceparent: bytes | None = None
        self._probe = False
        self._anthropic_version: bytes | None = None
        self._api_key: bytes | None = None
        self._x_api_key: bytes | None = None
        self._goog_api_key: bytes | None = None
        self._signable: dict[str, str] = {}
        self._expect_continue = False
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._state.connections.add(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._state.connections.discard(self._transport)
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError:
            # httptools wraps exceptions from our callbacks: a bug here, not a bad request.
            log.exception("mock backend failed to handle a request")
            self._reply_and_close(500, "mock backend internal error")
        except httptools.HttpParserError:
            self._reply_and_close(400, "malformed HTTP request")

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._authorization = None
        self._traceparent = None
        self._probe = False
        self._anthropic_version = None
        self._api_key = None
        self._x_api_key = None
        self._goog_api_key = None
        self._signable = {}
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"authorization":
            self._authorization = value
        elif name == b"traceparent":
            self._traceparent = value
        elif name == b"x-router-probe":
            self._probe = True
        elif name == b"anthropic-version":
            self._anthropic_version = value
        elif name == b"api-key":
            self._api_key = value
        elif name == b"x-api-key":
            self._x_api_key = value
        elif name == b"x-goog-api-key":
            self._goog_api_key = value
        if name in _SIGNABLE:
            self._signable[name.decode()] = value.decode("latin-1")
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        # curl waits a second for this before sending a large body.
        if self._expect_continue and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        path, _, query = self._url.partition(b"?")
        request = Request(
            method=parser.get_method(),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            api_key=self._api_key,
            x_api_key=self._x_api_key,
            goog_api_key=self._goog_api_key,
            signable=self._signable,
            body=b"".join(self._body),
            authorization=self._authorization,
            keep_alive=parser.should_keep_alive(),
            http11=parser.get_http_version() == "1.1",
            traceparent=self._traceparent,
            probe=self._probe,
            anthropic_version=self._anthropic_version,
        )
        if self._task is not None or self._queue:
            self._queue.append(request)
        else:
            self._handle(request)

    # writing

    def _reply(self, request: Request, status: int, body: bytes, extra: bytes = b"") -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        head = b"%bcontent-type: application/json\r\ncontent-length: %d\r\n%b" % (
            _status_line(status),
            len(body),
            extra,
        )
        if request.keep_alive:
            transport.write(head + b"\r\n" + body)
        else:
            transport.write(head + b"connection: close\r\n\r\n" + body)
            transport.close()

    def _reply_error(
        self,
        request: Request,
        status: int,
        message: str,
        code: str | None = None,
        *,
        param: str | None = None,
        extra: bytes = b"",
    ) -> None:
        self._reply(request, status, error_for(request.path, status, message, param, code), extra)

    def _reply_and_close(self, status: int, message: str) -> None:
        # The parser's state is unknown after an error, so the connection cannot be reused.
        closing = Request(b"", "", b"", None, keep_alive=False, http11=True)
        self._reply_error(closing, status, message)

    # dispatch

    def _handle(self, request: Request) -> None:
        path = request.path
        if path.startswith("/_mock/"):
            self._handle_control(request, path)
        elif path.startswith("/v1/projects/"):
            self._handle_vertex(request, path)
        elif path == "/token" and request.method == b"POST":
            self._handle_token(request)
        elif path == "/metrics" and request.method == b"GET":
            self._handle_metrics(request)
        elif path == "/v1" or path.startswith("/v1/"):
            self._handle_v1(request, path)
        elif path.startswith("/openai/"):
            self._handle_azure(request, path)
        elif path.startswith("/v1beta/"):
            self._handle_gemini(request, path)
        elif path.startswith("/model/"):
            self._handle_bedrock(request, path)
        else:
            self._reply_error(request, 404, f"unknown path {path}", "not_found")

    def _handle_metrics(self, request: Request) -> None:
        """Prometheus text, vLLM's names; "hang" leaves the request unanswered
        (the connection stays open until the client gives up)."""
        state = self._state
        state.stats.metrics_reads += 1
        if state.config.metrics == "hang":
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        body = state.metrics_page()
        head = b"%bcontent-type: text/plain; version=0.0.4\r\ncontent-length: %d\r\n" % (
            _status_line(200),
            len(body),
        )
        transport.write(head + b"\r\n" + body)
        if not request.keep_alive:
            transport.close()

    def _handle_azure(self, request: Request, path: str) -> None:
        """Azure OpenAI's front: `/openai/deployments/DEPLOYMENT/<op>` and
        `/openai/models`, each with `api-version`, authenticated by an `api-key`
        header or an Entra ID bearer token (here: the mock's `api_key` either
        way). Refusals are Azure's own: 404 without a version, 400 for a
        version it does not know, 401 for a bad credential."""
        state = self._state
        versions = parse_qs(request.query).get("api-version")
        v1 = path.startswith("/openai/v1/")
        if v1:  # the v1 API: no dated version (only `preview`, for preview features)
            if versions and versions[0] != "preview":
                self._reply(request, 400, _azure_error("BadRequest", "API version not supported"))
                return
        elif not versions:
            self._reply(request, 404, _azure_error("404", "Resource not found"))
            return
        elif not _AZURE_VERSION.match(versions[0]):
            self._reply(request, 400, _azure_error("BadRequest", "API version not supported"))
            return
        key = state.config.api_key
        auth = "api-key" if request.api_key is not None else "bearer"
        if key is not None and not (
            request.api_key == key.encode() or request.authorization == b"Bearer " + key.encode()
        ):
            self._reply(request, 401, _azure_error("401", _AZURE_DENIED))
            return
        stats = state.stats
        stats.last_api_version = versions[0] if versions else "v1"
        stats.last_azure_auth = auth
        if v1:
            self._handle_azure_v1(request, path)
            return
        if path == "/openai/models":
            self._handle_v1(request, "/v1/models", authorized=True)
            return
        found = _AZURE_DEPLOYMENT.match(path)
        if found is None:
            self._reply(request, 404, _azure_error("404", "Resource not found"))
            return
        deployment, operation = found.groups()
        stats.deployments_seen[deployment] = stats.deployments_seen.get(deployment, 0) + 1
        self._handle_v1(request, f"/v1/{operation}", authorized=True, deployment=deployment)

    def _handle_azure_v1(self, request: Request, path: str) -> None:
        """The v1 API's Responses: `/openai/v1/responses`, the deployment named by
        the body's `model` (an unknown or missing one is Azure's 404)."""
        if path != "/openai/v1/responses":
            self._reply(request, 404, _azure_error("404", "Resource not found"))
            return
        try:
            model = orjson.loads(request.body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            model = None
        if not isinstance(model, str) or not _AZURE_DEPLOYMENT_NAME.match(model):
            self._reply(request, 404, _azure_error("DeploymentNotFound", "Deployment not found"))
            return
        stats = self._state.stats
        stats.deployments_seen[model] = stats.deployments_seen.get(model, 0) + 1
        self._handle_v1(request, "/v1/responses", authorized=True, deployment=model)

    def _handle_token(self, request: Request) -> None:
        state = self._state
        key = state.config.google_public_key
        host = (request.signable or {}).get("host", "")
        problem = "no service account configured" if key is None else None
        if key is not None:
            problem = vertex.token_problem(request.body, host, key)
        if problem is not None:
            self._reply(request, 400, vertex.oauth_error(problem))
            return
        state.stats.tokens_issued += 1
        token = f"ya29.mock{len(state.tokens) + 1:06d}"
        state.tokens.add(token)
        self._reply(request, 200, vertex.token_body(token))

    def _handle_vertex(self, request: Request, path: str) -> None:
        """Vertex AI: Gemini and Claude models under a project and location."""
        found = vertex.VERTEX_METHOD.match(path)
        if found is None or request.method != b"POST":
            self._reply(request, 404, gemini_error_body(404, f"unknown path {path}"))
            return
        state = self._state
        if state.config.google_public_key is not None:
            given = (request.authorization or b"").removeprefix(b"Bearer ").decode("latin-1")
            if given not in state.tokens:
                state.stats.refused_tokens += 1
                self._reply(request, 401, gemini_error_body(401, vertex.UNAUTHENTICATED))
                return
        _, _, publisher, model, method = found.groups()
        if method == "predict":
            if publisher != "google":
                self._reply(request, 404, gemini_error_body(404, f"unknown path {path}"))
                return
            self._handle_v1(request, embeddings.VERTEX_PREDICT, authorized=True, deployment=model)
            return
        if publisher == "google":
            if method == "streamGenerateContent" and parse_qs(request.query).get("alt") != ["sse"]:
                message = "the mock streams only as server-sent events (alt=sse)"
                self._reply(request, 400, gemini_error_body(400, message))
                return
            self._handle_v1(request, f"/v1beta/{method}", authorized=True, deployment=model)
            return
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if (
            not isinstance(body, dict)
            or body.get("anthropic_version") != vertex.VERTEX_ANTHROPIC_VERSION
        ):
            message = "anthropic_version: vertex-2023-10-16 is required in the body"
            self._reply(request, 400, anthropic_error_body(400, message))
            return
        if "model" in body:
            self._reply(
                request, 400, anthropic_error_body(400, "model: Extra inputs are not permitted")
            )
            return
        self._handle_v1(request, "/v1/messages", authorized=True, deployment=model)

    def _handle_bedrock(self, request: Request, path: str) -> None:
        """AWS Bedrock's runtime: `/model/MODEL/converse` and `/converse-stream`,
        SigV4-signed with the mock's key as the secret (see `bedrock`)."""
        found = _BEDROCK_METHOD.match(path)
        if found is None or request.method != b"POST":
            self._reply(request, 404, bedrock_error_body(404, f"unknown operation {path}"))
            return
        key = self._state.config.api_key
        signed = request.signable or {}
        if key is not None:
            query = f"?{request.query}" if request.query else ""
            url = f"http://{signed.get('host', '')}{path}{query}"
            headers = {**signed, "authorization": (request.authorization or b"").decode()}
            problem = bedrock.signature_problem("POST", url, headers, request.body, key)
            if problem is not None:
                self._state.stats.refused_signatures += 1
                kind = (
                    "MissingAuthenticationTokenException"
                    if problem == "Missing Authentication Token"
                    else "InvalidSignatureException"
                )
                extra = b"x-amzn-errortype: " + kind.encode() + b"\r\n"
                self._reply(request, 403, bedrock_error_body(403, problem), extra)
                return
        model, method = found.groups()
        self._handle_v1(request, f"/bedrock/{method}", authorized=True, deployment=unquote(model))

    def _handle_gemini(self, request: Request, path: str) -> None:
        """Google's Gemini API: `/v1beta/models/MODEL:generateContent` (and
        `:streamGenerateContent?alt=sse`) and `/v1beta/models`, with the key
        as `x-goog-api-key` or `?key=`, refused as Google does: 403 without a
        key, 400 for a wrong one."""
        query = parse_qs(request.query)
        key = self._state.config.api_key
        given = request.goog_api_key
        if given is None and "key" in query:
            given = query["key"][0].encode()
        if key is not None and given is None:
            self._reply(request, 403, gemini_error_body(403, _GEMINI_UNREGISTERED))
            return
        if key is not None and given != key.encode():
            self._reply(request, 400, gemini_error_body(400, _GEMINI_BAD_KEY))
            return
        if path == "/v1beta/models" and request.method == b"GET":
            models = [{"name": f"models/{m}"} for m in self._state.config.models]
            self._reply(request, 200, orjson.dumps({"models": models}))
            return
        found = _GEMINI_METHOD.match(path)
        if found is None:
            self._reply(request, 404, gemini_error_body(404, f"unknown path {path}"))
            return
        model, method = found.groups()
        if method == "streamGenerateContent" and query.get("alt") != ["sse"]:
            message = "the mock streams only as server-sent events (alt=sse)"
            self._reply(request, 400, gemini_error_body(400, message))
            return
        self._handle_v1(request, f"/v1beta/{method}", authorized=True, deployment=model)

    def _handle_v1(
        self,
        request: Request,
        path: str,
        *,
        authorized: bool = False,
        deployment: str | None = None,
    ) -> None:
        state = self._state
        stats = state.stats
        stats.requests += 1
        seen = request.path  # Azure's own path, for an Azure request
        stats.by_path[seen] = stats.by_path.get(seen, 0) + 1
        if request.authorization is not None:
            stats.with_authorization += 1
        if request.traceparent is not None:
            stats.with_traceparent += 1
            stats.last_traceparent = request.traceparent.decode("latin-1")
        if request.probe:
            stats.probes += 1
        if request.anthropic_version is not None:
            stats.last_anthropic_version = request.anthropic_version.decode("latin-1")

        is_post = path in POST_ROUTES
        if not is_post and path != "/v1/models" and not path.startswith("/v1/models/"):
            self._reply_error(request, 404, f"unknown path {path}", "not_found")
            return
        allowed = b"POST" if is_post else b"GET"
        if request.method != allowed:
            extra = b"allow: " + allowed + b"\r\n"
            self._reply_error(request, 405, "method not allowed", "method_not_allowed", extra=extra)
            return

        body: dict[str, Any] = {}
        malformed: str | None = None
        if is_post:
            try:
                parsed = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                malformed = "could not parse the JSON body of the request"
            else:
                if isinstance(parsed, dict):
                    body = parsed
                    model = body.get("model")
                    if isinstance(model, str):
                        stats.models_seen[model] = stats.models_seen.get(model, 0) + 1
                    if "previous_response_id" in body:
                        stats.previous_response_ids += 1
                else:
                    malformed = "the request body must be a JSON object"

        if deployment is not None:  # Azure: the deployment is the model
            body["model"] = deployment
        config = state.config
        key = None if config.api_key is None else config.api_key.encode()
        if path in MESSAGES_PATHS and key is not None and not authorized:
            # Keyed, the mock is Anthropic's API: `x-api-key` (or a bearer)
            # and `anthropic-version` on every Messages call.
            if request.x_api_key != key and request.authorization != b"Bearer " + key:
                self._reply_error(request, 401, "invalid x-api-key")
                return
            if request.anthropic_version is None:
                self._reply_error(request, 400, "anthropic-version: header is required")
                return
        elif not authorized and key is not None and request.authorization != b"Bearer " + key:
            self._reply_error(request, 401, "incorrect API key provided", "invalid_api_key")
            return
        if malformed is not None:
            self._reply_error(request, 400, malformed, "invalid_json")
            return

        try:
            outcome = self._build(path, body)
        except RequestError as exc:
            self._reply_error(request, 400, exc.message, "invalid_request", param=exc.param)
            return
        if isinstance(outcome, tuple) and outcome[0] != 200:
            self._reply(request, *outcome)
            return
        if deployment is not None and isinstance(outcome, Completion):
            outcome = replace(outcome, prompt_filter=True)

        if config.hang:
            self._start(asyncio.get_running_loop().create_future())
            return
        delay = config.latency_ms / 1000.0
        if state.should_fail():
            stats.injected_errors += 1
            status = config.error_status
            err = error_for(path, status, "mock backend injected error", None, "mock_error")
            if config.retry_after_s is not None:
                wait = config.retry_after_s
                retry = b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (
                    max(1, round(wait)),
                    round(wait * 1000),
                )
                self._reply(request, status, err, retry)
                return
            outcome = (status, err)
        if isinstance(outcome, Streamed):
            stats.streams += 1
            self._start(self._stream(request, outcome, delay))
        elif delay > 0:
            self._start(self._delayed(request, outcome, delay))
        else:
            self._reply(request, *outcome)

    def _build(self, path: str, body: dict[str, Any]) -> Streamed | tuple[int, bytes]:
        """A stream to run, or the (status, body) to answer."""
        config = self._state.config
        return answer(path, body, with_usage=not config.omit_usage, models=config.models)

    def _handle_control(self, request: Request, path: str) -> None:
        state = self._state
        if path == "/_mock/stats" and request.method == b"GET":
            self._reply(request, 200, orjson.dumps(state.stats_body()))
        elif path == "/_mock/config" and request.method == b"GET":
            self._reply(request, 200, orjson.dumps(state.config.public()))
        elif path == "/_mock/config" and request.method == b"POST":
            try:
                update = orjson.loads(request.body or b"{}")
                state.set_config(
                    updated_config(state.config, update),
                    reseed=isinstance(update, dict) and "seed" in update,
                )
            except orjson.JSONDecodeError:
                self._reply_error(request, 400, "could not parse the JSON body", "invalid_json")
            except ConfigError as exc:
                self._reply_error(request, 400, str(exc), "invalid_config")
            else:
                self._reply(request, 200, orjson.dumps(state.config.public()))
        elif path == "/_mock/reset" and request.method == b"POST":
            state.stats = MockStats()
            self._reply(request, 200, orjson.dumps(state.stats_body()))
        elif path in ("/_mock/stats", "/_mock/config", "/_mock/reset"):
            self._reply_error(request, 405, "method not allowed", "method_not_allowed")
        else:
            self._reply_error(request, 404, f"unknown path {path}", "not_found")

    # waiting work

    def _start(self, work: Coroutine[Any, Any, None] | asyncio.Future[Any]) -> None:
        self._state.in_flight += 1
        task = asyncio.ensure_future(work)
        self._task = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._state.in_flight -= 1
        self._task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("mock backend request failed", exc_info=exc)
            if self._transport is not None:
                self._transport.abort()
            return
        while self._queue and self._task is None:
            if self._transport is None or self._transport.is_closing():
                self._queue.clear()
                return
            self._handle(self._queue.popleft())

    async def _delayed(self, request: Request, answer: tuple[int, bytes], delay: float) -> None:
        await asyncio.sleep(delay)
        self._reply(request, *answer)

    @staticmethod
    def _write_piece(transport: asyncio.Transport, data: bytes, chunked: bool) -> None:
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)

    async def _stream(self, request: Request, completion: Streamed, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        transport = self._transport
        assert transport is not None
        # HTTP/1.0 has no chunked encoding: the end of the body is the end of the connection.
        chunked = request.http11
        keep_alive = chunked and request.keep_alive
        content_type = getattr(completion, "content_type", b"text/event-stream")
        head = b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncache-control: no-cache\r\n" % (
            content_type
        )
        if chunked:
            head += b"transfer-encoding: chunked\r\n"
        if not keep_alive:
            head += b"connection: close\r\n"
        transport.write(head + b"\r\n")
        content_sent = 0
        first = True
        for data, kind in completion.events():
            # Knobs are read per event so a test can change them mid-stream.
            config = self._state.config
            if not first and config.chunk_delay_ms > 0:
                await asyncio.sleep(config.chunk_delay_ms / 1000.0)
            first = False
            limit = config.truncate_after
            if limit is not None and kind != "head" and content_sent >= limit:
                # No terminating zero-length chunk and no [DONE]: a broken stream.
                transport.close()
                return
            if transport.is_closing():
                return
            if not getattr(completion, "binary", False):  # frames are bytes, not lines
                data = with_line_ending(data, config.line_ending)
            split = config.split_tail_bytes
            if split is not None and split < len(data):
                # The head, then (after the chunk delay, so that even a reader
                # that coalesces chunks sees two) the event's last bytes.
                self._write_piece(transport, data[:-split], chunked)
                if self._writable is not None:
                    await self._writable
                if config.chunk_delay_ms > 0:
                    await asyncio.sleep(config.chunk_delay_ms / 1000.0)
                if transport.is_closing():
                    return
                data = data[-split:]
            self._write_piece(transport, data, chunked)
            if kind == "content":
                content_sent += 1
            if self._writable is not None:
                await self._writable
        if chunked:
            transport.write(b"0\r\n\r\n")
        if not keep_alive:
            transport.close()
