"""Token usage reported by a backend, and the summary returned to callers.

Rules:
- Counts come from the backend's own `usage` object; a missing or malformed
  one yields zeros flagged `estimated=False, reported=False` rather than a
  guess presented as fact. A count is at most MAX_SAFE_INTEGER.
- A summary is built from values, never from the clock: latency is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from router_core.limits.integers import MAX_SAFE_INTEGER


@attrs.frozen
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reported: bool = False
    # Of the prompt: tokens read from, and written to, the provider's cache.
    cached_tokens: int = 0
    cache_write_tokens: int = 0


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    # A count past 2**53 is nonsense; saturated, it still exhausts every limit
    # it is charged to, and keeps the limit arithmetic in range.
    return min(value, MAX_SAFE_INTEGER)


def from_backend(body: object) -> TokenUsage:
    """The `usage` of a backend response body (or of a stream's final chunk)."""
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if not isinstance(usage, Mapping):
        return TokenUsage()
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    total = _count(usage, "total_tokens") or prompt + completion
    return TokenUsage(prompt, completion, total, reported=True)


def summary(usage: TokenUsage, *, latency_ms: float, backend: str) -> dict[str, Any]:
    """The usage block of a `/v1/inference` response."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "latency_ms": round(latency_ms, 3),
        "backend": backend,
    }
