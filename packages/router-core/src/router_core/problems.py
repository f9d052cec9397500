"""The problem catalog: every error the router can answer with, in one place.

Rules:
- A `Problem` is the stable identity of an error: a code, an HTTP status and a
  title. The code never changes once published; clients match on it.
- `RouterError` carries a problem plus the details of one occurrence. Its two
  branches say whose fault it is: `ClientError` (the caller can fix it) and
  `DependencyError` (a backend or a store failed; the caller can retry).
- Rendering is pure: the same error becomes the seed's body (`/v1/inference`),
  OpenAI's envelope (the OpenAI-compatible routes) or RFC 9457 problem+json
  (status and admin routes). Nothing here ever includes a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import attrs


@attrs.frozen
class Problem:
    code: str
    status: int
    title: str
    # OpenAI's `error.type`, so SDKs and dashboards group errors as they expect.
    openai_type: str = "invalid_request_error"


class Catalog:
    """Every problem the router emits. Tests iterate over `Catalog.all()`."""

    MISSING_API_KEY = Problem("missing_api_key", 401, "Missing API key")
    INVALID_API_KEY = Problem("invalid_api_key", 401, "Invalid API key")
    # A signed request (RK-HMAC-SHA256) or an OIDC token that failed its checks.
    INVALID_SIGNATURE = Problem("invalid_signature", 401, "Invalid request signature")
    INVALID_TOKEN = Problem("invalid_token", 401, "Invalid bearer token")
    # The identity provider's keys (JWKS) or the nonce store could not be read.
    CREDENTIALS_UNAVAILABLE = Problem(
        "credentials_unavailable", 503, "Credentials cannot be checked", "server_error"
    )
    FORBIDDEN_MODEL = Problem("model_not_allowed", 403, "Model not allowed for this key")
    ROUTE_NOT_ALLOWED = Problem("route_not_allowed", 403, "Route not allowed for this key")
    NOT_FOUND = Problem("not_found", 404, "Not found")
    MODEL_NOT_FOUND = Problem("model_not_found", 404, "Model not found")
    METHOD_NOT_ALLOWED = Problem("method_not_allowed", 405, "Method not allowed")
    MALFORMED_JSON = Problem("malformed_json", 400, "Malformed JSON body")
    # Refused by the HTTP/1.1 parser, before any route sees the request.
    MALFORMED_REQUEST = Problem("malformed_request", 400, "Malformed HTTP request")
    HEADERS_TOO_LARGE = Problem("request_headers_too_large", 431, "Request headers too large")
    UNSUPPORTED_TRANSFER_ENCODING = Problem(
        "unsupported_transfer_encoding", 501, "Transfer-Encoding not supported"
    )
    PAYLOAD_TOO_LARGE = Problem("payload_too_large", 413, "Request body too large")
    UNSUPPORTED_MEDIA_TYPE = Problem("unsupported_media_type", 415, "Unsupported media type")
    VALIDATION_FAILED = Problem("validation_failed", 422, "Request validation failed")
    # A request that cannot be translated faithfully to what the backend speaks
    # (the detail names the feature): refused rather than silently dropped.
    UNSUPPORTED_FEATURE = Problem("unsupported_feature", 400, "Feature not supported")
    # A stored response (`/v1/responses/{id}`, `previous_response_id`) that is
    # not there: never stored, expired, deleted, or another organization's.
    RESPONSE_NOT_FOUND = Problem("response_not_found", 404, "Response not found")
    RESPONSES_UNAVAILABLE = Problem(
        "responses_unavailable", 503, "Stored responses cannot be read", "server_error"
    )
    # A backend refused the request itself (e.g. context too long); the
    # backend's own 4xx status is passed through.
    BACKEND_REJECTED = Problem("backend_rejected", 400, "Backend rejected the request")
    # Limits: 429 for rates, 402 for quotas and budgets (the seed's codes, upper-cased).
    RATE_LIMITED = Problem("rate_limit_exceeded", 429, "Rate limit exceeded", "rate_limit_exceeded")
    QUOTA_EXCEEDED = Problem("quota_exceeded", 402, "Quota exceeded", "insufficient_quota")
    BUDGET_EXCEEDED = Problem("budget_exceeded", 402, "Budget exceeded", "insufficient_quota")
    LIMITS_UNAVAILABLE = Problem(
        "limits_unavailable", 503, "Limits cannot be checked", "server_error"
    )
    # Idempotent retries (`request_id` on /v1/inference, `Idempotency-Key` elsewhere).
    IDEMPOTENCY_CONFLICT = Problem(
        "idempotency_conflict", 409, "A request with this idempotency key is in progress"
    )
    IDEMPOTENCY_KEY_REUSED = Problem(
        "idempotency_key_reused", 422, "Idempotency key reused for a different request"
    )
    IDEMPOTENCY_UNAVAILABLE = Problem(
        "idempotency_unavailable", 503, "Idempotency keys cannot be checked", "server_error"
    )
    # The usage spool is full: nothing is accepted that could not be accounted for.
    USAGE_SPOOL_FULL = Problem(
        "usage_spool_full", 503, "Usage accounting is backed up", "server_error"
    )
    BACKEND_ERROR = Problem("backend_error", 502, "Backend error", "server_error")
    BACKEND_TIMEOUT = Problem("backend_timeout", 504, "Backend timed out", "server_error")
    REQUEST_TIMEOUT = Problem("request_timeout", 504, "Request timed out", "server_error")
    NO_BACKEND_AVAILABLE = Problem(
        "no_backend_available", 503, "No backend available", "server_error"
    )
    OVERLOADED = Problem("overloaded", 503, "Router overloaded", "server_error")
    # Admin API (its own listener, problem+json).
    ADMIN_IDENTITY_REQUIRED = Problem(
        "admin_identity_required", 403, "Verified client certificate required"
    )
    OVERRIDE_NOT_FOUND = Problem("override_not_found", 404, "Override not found")
    OVERRIDES_UNAVAILABLE = Problem(
        "overrides_unavailable", 503, "Override store unavailable", "server_error"
    )
    KEY_NOT_FOUND = Problem("key_not_found", 404, "Key not found")
    KEYS_UNAVAILABLE = Problem("keys_unavailable", 503, "Key store unavailable", "server_error")
    INTERNAL_ERROR = Problem("internal_error", 500, "Internal error", "server_error")

    @classmethod
    def all(cls) -> list[Problem]:
        return [v for v in vars(cls).values() if isinstance(v, Problem)]


class RouterError(Exception):
    """An error with a catalogued problem; safe to show to the caller."""

    problem: Problem

    def __init__(
        self,
        problem: Problem,
        detail: str,
        *,
        param: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self._status = status
        self.detail = detail
        self.param = param
        self.extra: Mapping[str, Any] = extra or {}
        self.headers: Mapping[str, str] = headers or {}

    @property
    def status(self) -> int:
        return self._status or self.problem.status


class ClientError(RouterError):
    """The caller's fault: fix the request, don't retry it as is."""


class DependencyError(RouterError):
    """A backend or store failed; the same request may succeed later."""


class Envelope(Enum):
    """Which error body a route speaks."""

    SEED = "seed"  # /v1/inference: {error, code, ...}
    OPENAI = "openai"  # OpenAI-compatible routes: {"error": {message, type, param, code}}
    PROBLEM = "problem"  # RFC 9457 application/problem+json
    ANTHROPIC = "anthropic"  # /v1/messages: {"type": "error", "error": {type, message}}


# Anthropic's `error.type` by status. A 4xx keeps its status (422 is 400, as
# Anthropic answers invalid requests); a 5xx it has no type of is `api_error`
# (500), except a refusal for load, which is `overloaded_error` (529), so
# Anthropic SDKs back off as they do for Anthropic.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_OVERLOAD = frozenset({"overloaded", "no_backend_available"})


def anthropic_status(error: RouterError) -> int:
    """The status `error` is answered with on an Anthropic route."""
    if error.problem.code in _ANTHROPIC_OVERLOAD:
        return 529
    status = error.status
    if status == 422:  # Anthropic answers invalid requests with 400
        return 400
    if status < 500 or status in _ANTHROPIC_TYPES:
        return status
    return 500


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def render(
    error: RouterError, envelope: Envelope, *, instance: str | None = None
) -> dict[str, Any]:
    """The JSON body for `error` in the route's envelope."""
    problem = error.problem
    if envelope is Envelope.ANTHROPIC:
        # Anthropic's envelope has no code field: ours goes alongside, so a
        # client can still match on it.
        return {
            "type": "error",
            "error": {
                "type": anthropic_type(anthropic_status(error)),
                "message": error.detail,
                "code": problem.code,
                **error.extra,
            },
        }
    if envelope is Envelope.OPENAI:
        return {
            "error": {
                "message": error.detail,
                "type": problem.openai_type,
                "param": error.param,
                "code": problem.code,
                **error.extra,
            }
        }
    if envelope is Envelope.SEED:
        body: dict[str, Any] = {"error": error.detail, "code": problem.code.upper()}
        if error.param is not None:
            body["param"] = error.param
        body.update(error.extra)
        return body
    doc: dict[str, Any] = {
        "type": f"urn:router:problem:{problem.code}",
        "title": problem.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance is not None:
        doc["instance"] = instance
    doc.update(error.extra)
    return doc


def content_type(envelope: Envelope) -> str:
    return "application/problem+json" if envelope is Envelope.PROBLEM else "application/json"
