"""A trace line's prompt as text, for the prefix caches and affinity.

Rules:
- A trace does not carry prompts, only their shape: `segments`, each an id
  and a token count. A segment becomes one chat message whose text is
  derived from its id alone (`CHARS_PER_TOKEN` characters a token), so
  segments of the same id are the same text wherever they appear; the
  prompt's tokens beyond its segments are one last message of text unique
  to the line. A completion with an `answer` id is that segment after the
  prompt (`answered_of`): what its server caches once it has generated it.
- The messages become the prompt's canonical text as the router makes it
  (`router_core.affinity.prompt_text` of a chat request): the simulator
  hashes what the live router would hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

from router_cli.simulate.trace import TraceRecord
from router_core.affinity import prompt_text
from router_core.requests import Operation

# About four characters a token, as for English text with common tokenizers.
CHARS_PER_TOKEN = 4


def segment_text(segment: str, tokens: int) -> str:
    """`tokens` tokens' worth of text that only the segment's id decides."""
    seed = hashlib.blake2b(segment.encode(), digest_size=32).hexdigest()
    chars = tokens * CHARS_PER_TOKEN
    return (seed * (chars // len(seed) + 1))[:chars]


def prompt_of(record: TraceRecord) -> str:
    return prompt_text(Operation.CHAT, {"messages": _messages(record)})


def answered_of(record: TraceRecord) -> str:
    """The prompt followed by its answer (a record with an `answer` id)."""
    messages = _messages(record)
    if record.answer is not None:
        content = segment_text(record.answer, record.completion_tokens)
        messages.append({"role": "user", "content": content})
    return prompt_text(Operation.CHAT, {"messages": messages})


def _messages(record: TraceRecord) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": segment_text(segment, tokens)}
        for segment, tokens in record.segments
    ]
    rest = record.prompt_tokens - sum(tokens for _, tokens in record.segments)
    if rest > 0:
        own = f"\x00line {record.line} at {record.ts_us}"
        messages.append({"role": "user", "content": segment_text(own, rest)})
    return messages
