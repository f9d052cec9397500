"""OpenAI-shaped request validation and response bodies for the mock backend.

Rules:
- The same request body always yields the same content and token counts, so
  tests and the benchmark can assert exact usage numbers; only `id` and
  `created` vary between calls.
- Completion "tokens" are words from `WORDS`, cycled; a streamed response
  concatenates to exactly the non-streamed content.
- Prompt tokens are whitespace-separated words (+3 per chat message), at
  least 1, so counting needs no tokenizer.
- Tool calls: a request that offers tools and requires one (chat's
  `tool_choice` `required` or a named function; Messages' `any` or `tool`;
  Responses' `required` or a named function) is answered with one call to
  that tool (the named one, else the first offered), arguments
  `{"words": <the completion text>}`, streamed one fragment per word. The
  answer counts as `max_tokens` completion tokens, as text would.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

WORDS = ("mock", "token", "alpha", "beta", "gamma", "delta", "router", "stream")
DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_CAP = 4096
EMBEDDING_DIMENSIONS = 8
MODEL_CREATED = 1_700_000_000
TOKENS_PER_MESSAGE = 3

_ids = itertools.count(1)


class RequestError(Exception):
    """The caller's request is not acceptable; rendered as a 400 envelope."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


@lru_cache(maxsize=256)
def completion_words(n: int) -> tuple[str, ...]:
    return tuple(WORDS[i % len(WORDS)] for i in range(n))


@lru_cache(maxsize=256)
def completion_text(n: int) -> str:
    return " ".join(completion_words(n))


def tool_arguments(n: int) -> tuple[str, ...]:
    """The called tool's arguments as JSON, in fragments: one per word."""
    words = completion_words(n)
    pieces = [orjson.dumps(w if i == 0 else " " + w).decode()[1:-1] for i, w in enumerate(words)]
    return ('{"words":"', *pieces, '"}')


def _tool_name(tool: object, nested: bool) -> str | None:
    if not isinstance(tool, dict):
        return None
    holder = tool.get("function") if nested else tool
    name = holder.get("name") if isinstance(holder, dict) else None
    return name if isinstance(name, str) and name else None


def required_tool(body: dict[str, Any], protocol: str) -> str | None:
    """The tool the request requires called (see the module's rules), if any."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    first = _tool_name(tools[0], nested=protocol == "chat")
    if protocol == "messages":
        if not isinstance(choice, dict):
            return None
        if choice.get("type") == "any":
            return first
        return _tool_name(choice, nested=False) if choice.get("type") == "tool" else None
    if choice == "required":
        return first
    if isinstance(choice, dict) and choice.get("type") == "function":
        return _tool_name(choice, nested=protocol == "chat")
    return None


def _word_count(text: str) -> int:
    return len(text.split())


def _content_words(content: object) -> int:
    if isinstance(content, str):
        return _word_count(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += _word_count(text)
        return total
    return 0


def chat_prompt_tokens(messages: Sequence[object]) -> int:
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if isinstance(message, dict):
            total += _content_words(message.get("content"))
    return max(total, 1)


def _is_token_array(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _split_inputs(value: object, param: str) -> list[tuple[bytes, int]]:
    """Normalise OpenAI's string / string-list / token-array input forms.

    Returns one (identity bytes, token count) pair per input item.
    """
    if isinstance(value, str):
        return [(value.encode(), _word_count(value))]
    if _is_token_array(value) and value:
        assert isinstance(value, list)
        return [(orjson.dumps(value), len(value))]
    if isinstance(value, list) and value:
        items: list[tuple[bytes, int]] = []
        for item in value:
            if isinstance(item, str):
                items.append((item.encode(), _word_count(item)))
            elif _is_token_array(item):
                assert isinstance(item, list)
                items.append((orjson.dumps(item), len(item)))
            else:
                raise RequestError(f"'{param}' items must be strings or token arrays", param)
        return items
    raise RequestError(f"'{param}' must be a non-empty string or list", param)


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", "model")
    return model


def _max_tokens(body: dict[str, Any]) -> int:
    # `or` chains on purpose: an explicit 0/null falls through like OpenAI's defaults.
    value = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError("max_tokens must be a positive integer", "max_tokens")
    return min(value, MAX_TOKENS_CAP)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


CompletionKind = Literal["chat", "text"]
# "head" precedes the content (chat role delta); "tail" follows it.
EventKind = Literal["head", "content", "tail"]


@dataclass(frozen=True, slots=True)
class Completion:
    """A validated chat or text completion request, ready to render."""

    kind: CompletionKind
    model: str
    n_out: int
    prompt_tokens: int
    stream: bool
    include_usage: bool
    # The tool the request requires called (chat only), see the module's rules.
    tool: str | None = None
    # Azure OpenAI's first chunk: no choices, only the prompt's content-filter
    # results (a client that reads choices[0] of every chunk breaks on it).
    prompt_filter: bool = False

    def _tool_call(self, call_id: str) -> dict[str, Any]:
        arguments = "".join(tool_arguments(self.n_out))
        return {"id": call_id, "type": "function",
                "function": {"name": self.tool, "arguments": arguments}}  # fmt: skip

    def body(self, *, with_usage: bool = True) -> bytes:
        text = completion_text(self.n_out)
        created = int(time.time())
        usage = {"usage": _usage(self.prompt_tokens, self.n_out)} if with_usage else {}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if self.tool is not None:
            message = {"role": "assistant", "content": None,
                       "tool_calls": [self._tool_call(f"call_mock{next(_ids):012x}")]}  # fmt: skip
            finish = "tool_calls"
        if self.kind == "chat":
            return orjson.dumps(
                {
                    "id": f"chatcmpl-mock{next(_ids):012x}",
                    "object": "chat.completion",
                    "created": created,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    **usage,
                }
            )
        return orjson.dumps(
            {
                "id": f"cmpl-mock{next(_ids):012x}",
                "object": "text_completion",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                **usage,
            }
        )

    def events(self) -> Iterator[tuple[bytes, EventKind]]:
        """SSE events in order, each tagged so the server can truncate after content."""
        chat = self.kind == "chat"
        base: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-mock{next(_ids):012x}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
        }
        if self.include_usage:
            base["usage"] = None

        def event(choice: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps({**base, "choices": [{"index": 0, **choice}]}) + b"\n\n"

        if chat and self.prompt_filter:
            filtered = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                            "hate": {"filtered": False, "severity": "safe"}}}]}  # fmt: skip
            yield b"data: " + orjson.dumps(filtered) + b"\n\n", "head"
        if chat:
            yield (
                event({"delta": {"role": "assistant", "content": ""}, "finish_reason": None}),
                "head",
            )
        if self.tool is not None:
            yield from self._tool_events(event)
        for i, word in enumerate(completion_words(self.n_out) if self.tool is None else ()):
            piece = word if i == 0 else " " + word
            if chat:
                yield event({"delta": {"content": piece}, "finish_reason": None}), "content"
            else:
                yield event({"text": piece, "finish_reason": None}), "content"
        if chat:
            finish = "stop" if self.tool is None else "tool_calls"
            yield event({"delta": {}, "finish_reason": finish}), "tail"
        else:
            yield event({"text": "", "finish_reason": "stop"}), "tail"
        if self.include_usage:
            usage_chunk = {**base, "choices": [], "usage": _usage(self.prompt_tokens, self.n_out)}
            yield b"data: " + orjson.dumps(usage_chunk) + b"\n\n", "tail"
        yield b"data: [DONE]\n\n", "tail"

    def _tool_events(
        self, event: Callable[[dict[str, Any]], bytes]
    ) -> Iterator[tuple[bytes, EventKind]]:
        call = self._tool_call(f"call_mock{next(_ids):012x}")
        for i, fragment in enumerate(tool_arguments(self.n_out)):
            delta: dict[str, Any] = {"index": 0, "function": {"arguments": fragment}}
            if i == 0:
                delta = {**call, "index": 0, "function": {"name": self.tool, "arguments": fragment}}
            yield event({"delta": {"tool_calls": [delta]}, "finish_reason": None}), "content"


# SSE line endings the mock can write; events are built with LF, then converted.
LINE_ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def with_line_ending(event: bytes, line_ending: str) -> bytes:
    """`event` with its LF line ends written as `line_ending` (JSON holds no raw LF)."""
    return event if line_ending == "lf" else event.replace(b"\n", LINE_ENDINGS[line_ending])


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return stream, include_usage


def parse_chat(body: dict[str, Any]) -> Completion:
    model = _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array", "messages")
    stream, include_usage = _stream_flags(body)
    return Completion(
        "chat", model, _max_tokens(body), chat_prompt_tokens(messages), stream, include_usage,
        required_tool(body, "chat"),
    )  # fmt: skip


def parse_text(body: dict[str, Any]) -> Completion:
    model = _require_model(body)
    prompt_tokens = sum(count for _, count in _split_inputs(body.get("prompt"), "prompt"))
    stream, include_usage = _stream_flags(body)
    return Completion(
        "text", model, _max_tokens(body), max(prompt_tokens, 1), stream, include_usage
    )


def embedding_vector(identity: bytes) -> list[float]:
    digest = hashlib.blake2b(identity, digest_size=EMBEDDING_DIMENSIONS).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest]


def embeddings_body(body: dict[str, Any], *, with_usage: bool = True) -> bytes:
    model = _require_model(body)
    items = _split_inputs(body.get("input"), "input")
    # The official SDK asks for base64 unless told otherwise, then decodes float32.
    as_base64 = body.get("encoding_format") == "base64"
    data: list[dict[str, Any]] = []
    for index, (identity, _) in enumerate(items):
        vector = embedding_vector(identity)
        embedding: list[float] | str = vector
        if as_base64:
            packed = struct.pack(f"<{EMBEDDING_DIMENSIONS}f", *vector)
            embedding = base64.b64encode(packed).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = max(sum(count for _, count in items), 1)
    usage = {"usage": {"prompt_tokens": tokens, "total_tokens": tokens}} if with_usage else {}
    return orjson.dumps({"object": "list", "data": data, "model": model, **usage})


def model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "mock"}


def models_body(models: Sequence[str]) -> bytes:
    return orjson.dumps({"object": "list", "data": [model_object(m) for m in models]})
