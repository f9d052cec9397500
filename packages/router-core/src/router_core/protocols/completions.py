"""OpenAI's legacy completions, to a backend that speaks only chat (or a
provider reached through chat), and back.

Rules:
- `to_chat` translates a completions request, faithfully or not at all. The
  prompt, a string (or an array of one string), becomes one user message;
  `max_tokens`, `temperature`, `top_p`, `stop`, `stream`, `stream_options`,
  `user`, `seed`, `n`, the penalties and `logit_bias` keep their names (the
  provider's codec then refuses what it cannot express, as for chat).
  - Refused with a 400 `unsupported_feature` naming the field: several
    prompts, token-array prompts, an empty prompt (a chat message with no
    text, which Anthropic, Gemini and Bedrock refuse), `echo: true`, any `logprobs`, `best_of`
    above 1, a non-empty `suffix`, and any field the completions API does
    not have.
  - A request without `max_tokens` is sent with 16, the completions API's
    documented default (chat's default is the model's own limit).
- `from_chat` and `StreamFromChat` translate the answer: the message's text
  becomes `choices[0].text` (reasoning and tool calls have no place in a
  completion and are not carried), usage stays as it is, and the finish
  reason too, but for one completions lacks (`tool_calls`, which a request
  without tools does not meet): that reads as `stop`. A stream goes chunk by
  chunk as `text_completion` chunks, the usage chunk (no choices) last, then
  `[DONE]`.
- Pure: ids and times are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from router_core.problems import Catalog, ClientError

# The completions API's default `max_tokens`.
DEFAULT_MAX_TOKENS = 16
# Fields chat has under the same name and meaning.
_KEPT = frozenset(
    {"model", "max_tokens", "temperature", "top_p", "stop", "stream", "stream_options", "user",
     "seed", "n", "presence_penalty", "frequency_penalty", "logit_bias"}
)  # fmt: skip
# Fields accepted only at the value that asks for nothing chat lacks (by
# identity or type too: `True == 1` and `0 == False` must not pass).
_NEUTRAL: Mapping[str, Callable[[object], bool]] = {
    "echo": lambda v: v is None or v is False,
    "logprobs": lambda v: v is None,
    "best_of": lambda v: v is None or (type(v) is int and v == 1),
    "suffix": lambda v: v is None or v == "",
}


def _refuse(feature: str, param: str) -> ClientError:
    return ClientError(
        Catalog.UNSUPPORTED_FEATURE,
        f"{feature} cannot be translated to chat completions, which this model's backend "
        "is sent instead of completions.",
        param=param,
    )


def _prompt(prompt: object) -> str:
    """The one prompt's text (the request is validated: one of OpenAI's four forms)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise _refuse("An empty prompt", "prompt")
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        raise _refuse("Several prompts in one request", "prompt")
    raise _refuse("A prompt of token ids", "prompt")


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A completions request as the chat completions request that carries it."""
    chat: dict[str, Any] = {}
    for field, value in body.items():
        if field in _KEPT:
            chat[field] = value
        elif field in _NEUTRAL and _NEUTRAL[field](value):
            continue
        elif field != "prompt":
            raise _refuse(f"The field {field!r}", field)
    chat["messages"] = [{"role": "user", "content": _prompt(body.get("prompt"))}]
    if chat.get("max_tokens") is None:
        chat["max_tokens"] = DEFAULT_MAX_TOKENS
    return chat


_FINISHES = frozenset({"stop", "length", "content_filter"})


def _finish(reason: object) -> object:
    return reason if reason is None or reason in _FINISHES else "stop"


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def from_chat(
    answer: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A chat completion as the text completion the client asked for."""
    choices = []
    for i, choice in enumerate(answer.get("choices") or ()):
        message = choice.get("message") or {}
        choices.append({
            "text": _text(message), "index": choice.get("index", i), "logprobs": None,
            "finish_reason": _finish(choice.get("finish_reason")),
        })  # fmt: skip
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if answer.get("usage") is not None:
        out["usage"] = answer["usage"]
    return out


class StreamFromChat:
    """Chat chunks in, completion chunks out, one chunk for each that carries
    text or a finish reason (chat's role-only and tool chunks carry neither)."""

    def __init__(self, *, model: str, completion_id: str, created: int) -> None:
        self.base = {"id": completion_id, "object": "text_completion", "created": created,
                     "model": model}  # fmt: skip

    def feed(self, chunk: Mapping[str, Any]) -> dict[str, Any] | None:
        """The completion chunk for one chat chunk, or None when it carries nothing."""
        choices = chunk.get("choices")
        if not choices:
            if chunk.get("usage") is not None:
                return {**self.base, "choices": [], "usage": chunk["usage"]}
            return None
        out = []
        for i, choice in enumerate(choices):
            text = _text(choice.get("delta") or {})
            finish = _finish(choice.get("finish_reason"))
            if text or finish is not None:
                out.append({"text": text, "index": choice.get("index", i), "logprobs": None,
                            "finish_reason": finish})  # fmt: skip
        if not out:
            return None
        return {**self.base, "choices": out}
