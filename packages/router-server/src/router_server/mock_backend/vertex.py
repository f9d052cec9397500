"""The mock backend's Google Cloud side: an OAuth token endpoint and Vertex AI's paths.

Rules:
- `POST /token` is a service account's token endpoint (RFC 7523): the JWT
  assertion must be signed by the key whose public half the mock was given
  (`google_public_key`), for audience `http://<host>/token` and scope
  cloud-platform, and not be expired. It answers an access token good for
  an hour, and counts it (`tokens_issued`).
- `/v1/projects/P/locations/L/publishers/google/models/M:generateContent`
  (and `:streamGenerateContent?alt=sse`) are answered as the Gemini API
  is; `publishers/anthropic/models/M:rawPredict` (and `:streamRawPredict`)
  as Anthropic Messages, wanting `anthropic_version: vertex-2023-10-16` in
  the body and no `model`. With a public key set, every such call needs
  `Authorization: Bearer` with a token the mock issued, else 401
  UNAUTHENTICATED, as Google answers. `publishers/google/models/M:predict`
  is Vertex's text embeddings (see `embeddings`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

import orjson

VERTEX_METHOD = re.compile(
    r"^/v1/projects/([a-z][a-z0-9-]+)/locations/([a-z0-9-]+)/publishers/(google|anthropic)"
    r"/models/([A-Za-z0-9@._-]+)"
    r":(generateContent|streamGenerateContent|rawPredict|streamRawPredict|predict)$"
)
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)


def token_problem(form: bytes, host: str, public_key: str) -> str | None:
    """Why the token request's assertion is refused (None: it is good)."""
    try:
        from google.auth import jwt
    except ImportError:
        return "the mock needs google-auth to check assertions"
    fields = parse_qs(form.decode("latin-1"))
    if fields.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
        return "unsupported_grant_type"
    assertion = (fields.get("assertion") or [""])[0]
    try:
        claims: dict[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
            assertion, certs=public_key, audience=f"http://{host}/token"
        )
    except ValueError as exc:
        return f"invalid_grant: {exc}"
    if claims.get("scope") != SCOPE:
        return "invalid_scope"
    return None


def token_body(token: str) -> bytes:
    return orjson.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})


def oauth_error(error: str) -> bytes:
    return orjson.dumps({"error": error.split(":")[0], "error_description": error})
