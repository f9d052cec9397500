"""The fixed choices of config settings, as `StrEnum`s.

Rules:
- Every config string that takes one of a fixed set of values is one of
  these types, so the codec's converter rejects a typo instead of the code
  that reads the setting falling through to a default branch.
- A member's value is exactly what the user writes in the file; members
  compare equal to those strings, so `config.state.store == "redis"` holds.
- `not_one_of` is the one wording of the problem, used by the codec and by
  the value objects' own checks alike.
"""

from __future__ import annotations

import difflib
import enum
from typing import TypeGuard


class Transport(enum.StrEnum):
    AIOHTTP = "aiohttp"
    HTTPX = "httpx"


class TracingExporter(enum.StrEnum):
    OTLP = "otlp"
    CONSOLE = "console"
    MEMORY = "memory"


class Strategy(enum.StrEnum):
    WEIGHTED = "weighted"
    LEAST_LATENCY = "least_latency"
    LEAST_LOAD = "least_load"


class BackendKind(enum.StrEnum):
    """What a backend is (`backends.<name>.kind`): how it is addressed and signed."""

    # Any OpenAI-compatible server (vLLM, SGLang, TGI, Ollama, OpenAI itself).
    OPENAI = "openai"
    # Azure OpenAI: deployments under a resource endpoint, `api-version` on
    # every call, an `api-key` header or a Microsoft Entra bearer token.
    AZURE_OPENAI = "azure_openai"
    # Anthropic's API: Messages, `x-api-key` and `anthropic-version`.
    ANTHROPIC = "anthropic"
    # Google's Gemini API: `generateContent`, `x-goog-api-key`.
    GEMINI = "gemini"
    # AWS Bedrock's Converse API, SigV4-signed (the `bedrock` extra).
    BEDROCK = "bedrock"
    # Google Cloud Vertex AI: Gemini or Anthropic models, with a service
    # account's OAuth tokens (the `vertex` extra).
    VERTEX = "vertex"


class LoadMetricsFormat(enum.StrEnum):
    """Whose Prometheus metrics a backend serves (`backends.<name>.load_metrics.format`)."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"


class VertexPublisher(enum.StrEnum):
    """Whose models a `vertex` backend serves (`backends.<name>.vertex.publisher`)."""

    GOOGLE = "google"  # Gemini: generateContent
    ANTHROPIC = "anthropic"  # Claude: Messages through rawPredict


class Protocol(enum.StrEnum):
    """A wire protocol a backend speaks (`backends.<name>.protocols`)."""

    # OpenAI chat completions, completions and embeddings: every ingress can
    # be translated to it.
    OPENAI = "openai"
    # Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`).
    ANTHROPIC_MESSAGES = "anthropic_messages"
    # OpenAI Responses (`/v1/responses`).
    OPENAI_RESPONSES = "openai_responses"
    # Google Gemini's `generateContent` (no client route speaks it: chat,
    # completions, Messages and Responses are translated to it).
    GEMINI = "gemini"
    # AWS Bedrock's Converse and ConverseStream (likewise reached through chat).
    BEDROCK = "bedrock"


class Period(enum.StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"


class FailureMode(enum.StrEnum):
    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"


class StateStoreKind(enum.StrEnum):
    """Where limits, idempotency keys, overrides, managed keys and nonces live."""

    EMBEDDED = "embedded"
    REDIS = "redis"


class RedisMode(enum.StrEnum):
    STANDALONE = "standalone"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


class Priority(enum.StrEnum):
    """How an organization (or a key) fares when the router is saturated."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class MaxTokensPolicy(enum.StrEnum):
    CLAMP = "clamp"
    REFUSE = "refuse"


class Fsync(enum.StrEnum):
    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


class TokenAlgorithm(enum.StrEnum):
    """Asymmetric algorithms only: an HS* token would be verified with a public
    key as its secret (key confusion), and `none` is no signature at all."""

    RS256 = "RS256"
    RS384 = "RS384"
    RS512 = "RS512"
    PS256 = "PS256"
    PS384 = "PS384"
    PS512 = "PS512"
    ES256 = "ES256"
    ES384 = "ES384"
    EDDSA = "EdDSA"


def is_member(value: object, kind: type[enum.StrEnum]) -> TypeGuard[str]:
    # Not `value in kind`: before Python 3.12 that raises TypeError for a non-member.
    return isinstance(value, str) and value in {member.value for member in kind}


def not_one_of(kind: type[enum.StrEnum], value: object) -> str:
    """The problem with `value`, naming the choices (and the likely one, for a typo)."""
    choices = [member.value for member in kind]
    message = f"must be one of {', '.join(choices)}, not {value!r}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1)
        if not close:  # a wrong case ('OTLP') is a typo too
            close = [c for c in choices if c.lower() == value.lower()]
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return message
