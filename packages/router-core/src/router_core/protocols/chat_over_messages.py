"""Chat completions to a backend that speaks only Anthropic Messages, and back.

Rules:
- `to_messages` translates a chat request, faithfully or not at all. A field
  Messages cannot express is a 400 `unsupported_feature` naming it, unless
  it is at its neutral value (`n: 1`, `logprobs: false`, penalties of 0,
  `response_format: {type: text}`). Refused outright: `seed`, `logit_bias`,
  `audio`, `modalities`, `prediction`, `reasoning_effort`, a `name` on a
  message, a system message after the conversation has begun (Messages has
  one system prompt, before every turn), a temperature above 1 (Messages'
  range is 0 to 1), and tools other than functions.
  - A request without `max_tokens` (or `max_completion_tokens`) gets
    `DEFAULT_MAX_TOKENS`, which Messages requires.
  - `stream_options` is the router's business, not the backend's: a
    Messages stream always reports usage.
- `chat_from_message` and `StreamToChat` translate the answer. Text blocks
  become the message's content, `tool_use` blocks tool calls (input as JSON
  arguments), `stop_reason` the finish reason, and usage chat's prompt
  tokens (input plus cache reads and writes, with the reads as
  `cached_tokens`). Thinking blocks become `reasoning_content`, as vLLM and
  DeepSeek name it.
  - A stream goes event by event. Each text or tool delta becomes one chunk
    (each tool call has its own index), `message_delta`'s stop reason
    becomes the finish chunk, and the usage chunk comes last: only when the
    client asked for it, always for the router's own accounting (the
    relay strips it).
- Pure: ids and times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from router_core.accounting.records import count_of
from router_core.protocols import chat_answer, chat_request, messages

DEFAULT_MAX_TOKENS = 4096
# Fields translated (by `messages.from_chat`) or the router's own.
_TRANSLATED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p",
     "top_k", "user", "tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options"}
)  # fmt: skip
# Fields accepted only at the value that asks for nothing Messages lacks.
_NEUTRAL: Mapping[str, tuple[object, ...]] = {
    "n": (1, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "presence_penalty": (0, None),
    "frequency_penalty": (0, None),
    "response_format": ({"type": "text"}, None),
    "store": (False, None),
    "metadata": (None,),
    "service_tier": ("auto", None),
}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


_refuse = chat_request.refusal("Anthropic Messages")


def _check(body: Mapping[str, Any]) -> None:
    chat_request.check(body, _TRANSLATED, _NEUTRAL, _refuse)
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        raise _refuse("A temperature above 1", "temperature")
    chat_request.turns(body.get("messages") or (), _refuse)  # a late system prompt, a name


def to_messages(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat request as the Messages request for an Anthropic backend."""
    _check(body)
    return messages.from_chat(body, default_max_tokens=DEFAULT_MAX_TOKENS)


def finish_reason(stop_reason: object) -> str:
    return _FINISH.get(str(stop_reason), "stop")


def chat_usage(usage: object) -> dict[str, Any]:
    """Messages' usage in chat's terms: chat's prompt includes what the cache served."""
    counts = messages.usage_counts(usage)
    if counts is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
    }


def _tool_call(block: Mapping[str, Any], index: int) -> dict[str, Any]:
    return {
        "index": index,
        "id": block.get("id"),
        "type": "function",
        "function": {
            "name": block.get("name"),
            "arguments": orjson.dumps(block.get("input") or {}).decode(),
        },
    }


def chat_from_message(
    message: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A Messages `message` as a chat completion."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            call = _tool_call(block, len(calls))
            del call["index"]
            calls.append(call)
    finish = finish_reason(message.get("stop_reason"))
    return chat_answer.completion(
        completion_id=completion_id, created=created, model=model, text=text,
        thoughts=thinking, calls=calls, finish=finish, usage=chat_usage(message.get("usage")),
    )  # fmt: skip


class StreamToChat:
    """Anthropic stream events in (as parsed `data`), chat completion chunks out."""

    def __init__(self, *, model: str, completion_id: str, created: int) -> None:
        self.chunks = chat_answer.Chunks(model=model, completion_id=completion_id, created=created)
        self.usage: dict[str, Any] = {}
        # Anthropic's block index -> the chat tool call's index.
        self.tools: dict[int, int] = {}
        self.finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return self.chunks.chunk(delta, finish)

    def _merge(self, usage: object) -> None:
        if isinstance(usage, Mapping):
            self.usage.update({k: v for k, v in usage.items() if v is not None})

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            self._merge(message.get("usage") if isinstance(message, Mapping) else None)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, Mapping) and block.get("type") == "tool_use":
                index = len(self.tools)
                self.tools[count_of(event, "index")] = index
                call = _tool_call({**block, "input": {}}, index)
                call["function"]["arguments"] = ""
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "message_delta":
            self._merge(event.get("usage"))
            delta = event.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, Mapping) else None
            self.finish = finish_reason(reason)
            return [self._chunk({}, self.finish)]
        return []  # ping, content_block_stop, message_stop

    def _delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            index = self.tools.get(count_of(event, "index"))
            if index is None:
                return []
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # signature_delta, citations: nothing chat can carry

    def usage_chunk(self) -> dict[str, Any]:
        """The chunk with the whole stream's usage, chat's last before [DONE]."""
        return self.chunks.usage(chat_usage(self.usage))


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "StreamToChat",
    "chat_from_message",
    "chat_usage",
    "finish_reason",
    "to_messages",
]
