"""Chat completions written from a provider's answer: the one shape all three share.

Rules:
- A whole answer is `completion(...)`: one choice, whose message has the
  text (or null), `reasoning_content` when the provider thought aloud, and
  `tool_calls` when it called tools.
- A stream is `Chunks`: each chunk under the answer's id, time and public
  model, one choice, and the usage chunk (no choices) last.
- Pure: ids and times are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    text: Sequence[str],
    thoughts: Sequence[str],
    calls: list[dict[str, Any]],
    finish: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if thoughts:
        reply["reasoning_content"] = "".join(thoughts)
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
        "usage": usage,
    }


class Chunks:
    """The chunks of one translated stream."""

    def __init__(self, *, model: str, completion_id: str, created: int) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                     "model": model}  # fmt: skip

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage}
