"""Usage and audit records (`usage.records.v1`, `audit.router.v1`) and how they are built.

Rules:
- Every authenticated request yields exactly one usage record, whatever its
  outcome: success, denied (with the problem code as reason), backend error,
  client cancelled, or replayed (an idempotent retry answered from the store,
  never charged).
- Token counts come from the backend's own `usage`; when it gave none the
  counts are estimated from the text (a prompt given as token ids counts one
  token per id) and the record says `estimated: true`. `token_counts` is the
  one count: limits settle exactly what the usage record says.
- Cost is priced from the config's price table in integer nano-USD (the same
  arithmetic as budgets); a model without a price has no cost (`None`).
- A record names the key by its id, never the key; it carries no prompt or
  completion text.
- Nothing here reads a clock or draws randomness: the record id and the
  timestamps are passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from router_core.config import RouterConfig
from router_core.limits.budget import cost
from router_core.limits.integers import MAX_SAFE_INTEGER
from router_core.limits.plan import price_of

USAGE_SCHEMA = "usage.records.v1"
AUDIT_SCHEMA = "audit.router.v1"


class Outcome(enum.Enum):
    SUCCESS = "success"
    DENIED = "denied"
    BACKEND_ERROR = "backend_error"
    CLIENT_CANCELLED = "client_cancelled"
    REPLAYED = "replayed"


@attrs.frozen
class TokenCounts:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Prompt tokens read from the backend's prompt cache, and (Anthropic's
    # cache_creation_input_tokens) written to it.
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = attrs.field(default=0, kw_only=True)
    # True when the backend reported no usage and the counts are estimates.
    estimated: bool = False


@attrs.frozen
class UsageRecord:
    record_id: str
    request_id: str
    # The caller's own id: /v1/inference's `request_id`, or the Idempotency-Key.
    client_request_id: str | None
    organization: str
    key_id: str
    route: str
    operation: str | None
    model: str | None
    backend: str | None
    backend_model: str | None
    stream: bool
    started_at_us: int
    finished_at_us: int
    latency_ms: float
    ttft_ms: float | None
    status: int
    outcome: Outcome
    reason: str | None
    usage: TokenCounts
    cost_nano_usd: int | None
    router_instance: str
    # The interactive user (OIDC subject) behind the request; None for API keys.
    user: str | None = None
    schema: str = USAGE_SCHEMA


@attrs.frozen
class AuditRecord:
    record_id: str
    at_us: int
    event: str
    organization: str | None
    key_id: str | None
    request_id: str | None
    # Event details (limit type, usage and limit; an admin change's target...).
    detail: Mapping[str, Any]
    router_instance: str
    schema: str = AUDIT_SCHEMA


def count_of(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, MAX_SAFE_INTEGER)  # as in `router_core.usage`: priced, it stays in range


def reported_counts(usage: object) -> TokenCounts | None:
    """The backend's own `usage` object as counts, or None when it gave none."""
    if not isinstance(usage, Mapping):
        return None
    prompt = count_of(usage, "prompt_tokens")
    completion = count_of(usage, "completion_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return TokenCounts(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=count_of(usage, "total_tokens") or prompt + completion,
        cached_tokens=(
            count_of(prompt_details, "cached_tokens") if isinstance(prompt_details, Mapping) else 0
        ),
        reasoning_tokens=(
            count_of(completion_details, "reasoning_tokens")
            if isinstance(completion_details, Mapping)
            else 0
        ),
    )


def text_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    if isinstance(value, Mapping):
        return sum(text_chars(v) for k, v in value.items() if k not in ("type", "role"))
    return 0


def estimate_tokens(text_chars: int) -> int:
    """About four characters a token: OpenAI's rule of thumb for English text."""
    return -(-text_chars // 4)


def _token_ids(value: object) -> int:
    """How many token ids a prompt or input holds: OpenAI's two token-id forms are
    a list of ids and a list of such lists (validation normalised them to ints)."""
    if not isinstance(value, list):
        return 0
    count = 0
    for item in value:
        if type(item) is int:
            count += 1
        elif isinstance(item, list):
            count += sum(1 for i in item if type(i) is int)
    return count


def estimated_counts(body: Mapping[str, Any], completion_tokens: int) -> TokenCounts:
    """Counts estimated from the request body when the backend reported none."""
    if "messages" in body:
        # Messages' system prompt, and Responses' instructions, are apart.
        text = text_chars(body["messages"]) + text_chars(body.get("system"))
        prompt = estimate_tokens(text)
    else:
        given = body.get("prompt", body.get("input"))
        # Text is estimated; token ids need no estimate: one token each.
        text = text_chars(given) + text_chars(body.get("instructions"))
        prompt = estimate_tokens(text) + _token_ids(given)
    return TokenCounts(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=prompt + completion_tokens,
        estimated=True,
    )


def token_counts(
    request_body: Mapping[str, Any], reported: object, completion_tokens: int | None
) -> TokenCounts:
    """A request's one count of tokens: what its limits settle and its usage record says.

    `reported` is the backend's `usage` object (None when it gave none);
    `completion_tokens` estimates what was generated (a non-streamed answer's
    text, or a stream's content events relayed), None when no backend answered.
    """
    counts = reported_counts(reported)
    if counts is not None:
        return counts
    if completion_tokens is None:
        return TokenCounts()
    return estimated_counts(request_body, completion_tokens)


def completion_chars(body: Mapping[str, Any]) -> int:
    """Characters of generated text in a non-streamed answer (for an estimate)."""
    choices = body.get("choices")
    if not isinstance(choices, list):
        return 0
    total = 0
    for choice in choices:
        if isinstance(choice, Mapping):
            total += text_chars(choice.get("message")) + text_chars(choice.get("text"))
    return total


def price(config: RouterConfig, model: str | None, counts: TokenCounts) -> int | None:
    """What `counts` cost on `model` in nano-USD, or None when the model has no price."""
    model_price = config.prices.get(model) if model is not None else None
    if model_price is None:
        return None
    return cost(
        price_of(model_price),
        counts.prompt_tokens,
        counts.completion_tokens,
        counts.cached_tokens,
        counts.cache_write_tokens,
    )


# Problems that mean a backend failed or refused (everything else is a denial).
BACKEND_PROBLEMS = frozenset(
    {"backend_error", "backend_timeout", "backend_rejected", "request_timeout",
     "no_backend_available"}
)  # fmt: skip


def outcome_of(code: str | None, *, cancelled: bool = False, replayed: bool = False) -> Outcome:
    """The outcome of a request from the problem code it was answered with (None: success)."""
    if replayed:
        return Outcome.REPLAYED
    if cancelled:
        return Outcome.CLIENT_CANCELLED
    if code is None:
        return Outcome.SUCCESS
    if code in BACKEND_PROBLEMS:
        return Outcome.BACKEND_ERROR
    return Outcome.DENIED
