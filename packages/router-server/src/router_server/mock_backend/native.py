"""The mock backend's Anthropic Messages and OpenAI Responses, spoken natively.

Rules:
- The same words and counts as its chat completions (see `payloads`): a
  Messages or Responses request is answered with `max_tokens` /
  `max_output_tokens` words, and its prompt is counted as the same
  conversation sent as chat would be (a system prompt or instructions is one
  more message), so native and translated answers carry equal usage.
- Streams use each protocol's own events (`event:` lines), one event per
  word, tagged like chat's so the fault knobs (chunk delay, truncation, line
  endings, split events) apply to them unchanged.
- A request that requires a tool is answered with a call to it, as chat's
  is (see `payloads`): a `tool_use` block, or a `function_call` item.
- Errors on Messages routes come in Anthropic's envelope, with its types.
- The mock keeps no conversation state: `previous_response_id` is counted
  (`stats.previous_response_ids`) and otherwise ignored.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from .payloads import (
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS_CAP,
    RequestError,
    chat_prompt_tokens,
    completion_text,
    completion_words,
    required_tool,
    tool_arguments,
)

MESSAGES_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_ids = itertools.count(1)
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, message: str) -> bytes:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _count(body: dict[str, Any], name: str) -> int:
    value = body.get(name) or DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(f"{name} must be a positive integer", name)
    return min(value, MAX_TOKENS_CAP)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model: Field required", "model")
    return model


def messages_prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: Field required", "messages")
    system = body.get("system")
    turns: list[object] = [{"content": system}] if system else []
    return chat_prompt_tokens([*turns, *messages])


def responses_prompt_tokens(body: dict[str, Any]) -> int:
    given = body.get("input")
    items: list[object]
    if isinstance(given, str):
        items = [{"content": given}]
    elif isinstance(given, list) and given:
        items = [{"content": i.get("content") if isinstance(i, dict) else None} for i in given]
    else:
        raise RequestError("input must be a string or a non-empty array", "input")
    if body.get("instructions"):
        items.insert(0, {"content": body["instructions"]})
    return chat_prompt_tokens(items)


class NativeAnswer:
    """One Messages or Responses answer: its body, or its stream's events."""

    def __init__(self, kind: str, body: dict[str, Any], *, with_usage: bool) -> None:
        self.kind = kind
        self.model = _model(body)
        if kind == "messages":
            if "max_tokens" not in body:
                raise RequestError("max_tokens: Field required", "max_tokens")
            self.n_out = _count(body, "max_tokens")
            self.prompt_tokens = messages_prompt_tokens(body)
        else:
            self.n_out = _count(body, "max_output_tokens")
            self.prompt_tokens = responses_prompt_tokens(body)
        self.stream = body.get("stream") is True
        self.with_usage = with_usage
        self.request = body
        self.id = f"{'msg' if kind == 'messages' else 'resp'}_mock{next(_ids):012x}"
        self.tool = required_tool(body, kind)
        self.call_id = f"{'toolu' if kind == 'messages' else 'call'}_mock{next(_ids):012x}"

    def _arguments(self) -> str:
        return "".join(tool_arguments(self.n_out))

    # Messages

    def _anthropic_usage(self, output_tokens: int) -> dict[str, int]:
        return {"input_tokens": self.prompt_tokens, "output_tokens": output_tokens,
                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}  # fmt: skip

    def _message(self, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
        }  # fmt: skip
        if self.with_usage:
            message["usage"] = self._anthropic_usage(self.n_out if stop else 0)
        return message

    # Responses

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": int(time.time()),
            "status": status, "model": self.model, "output": output, "error": None,
            "incomplete_details": None, "instructions": self.request.get("instructions"),
            "max_output_tokens": self.request.get("max_output_tokens"),
            "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": self.request.get("tools") or [], "metadata": {},
            "previous_response_id": None, "store": self.request.get("store", True),
        }  # fmt: skip
        if self.with_usage and status == "completed":
            response["usage"] = {
                "input_tokens": self.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": self.n_out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.prompt_tokens + self.n_out,
            }
        return response

    def _output_message(self, text: str, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {"type": "message", "id": "msg_" + self.id, "status": status, "role": "assistant",
                "content": content if status == "completed" else []}  # fmt: skip

    def _tool_use(self, whole: bool) -> dict[str, Any]:
        words = {"words": completion_text(self.n_out)} if whole else {}
        return {"type": "tool_use", "id": self.call_id, "name": self.tool, "input": words}

    def _function_call(self, status: str) -> dict[str, Any]:
        arguments = self._arguments() if status == "completed" else ""
        return {"type": "function_call", "id": "fc_" + self.id, "call_id": self.call_id,
                "name": self.tool, "arguments": arguments, "status": status}  # fmt: skip

    def body(self) -> bytes:
        text = completion_text(self.n_out)
        if self.kind == "messages":
            if self.tool is not None:
                return orjson.dumps(self._message([self._tool_use(whole=True)], "tool_use"))
            return orjson.dumps(self._message([{"type": "text", "text": text}], "end_turn"))
        if self.tool is not None:
            return orjson.dumps(self._response("completed", [self._function_call("completed")]))
        return orjson.dumps(self._response("completed", [self._output_message(text, "completed")]))

    def events(self) -> Iterator[tuple[bytes, str]]:
        """(event, kind) pairs, kind as chat's: "head", "content" or "tail"."""
        return self._messages_events() if self.kind == "messages" else self._responses_events()

    def _messages_events(self) -> Iterator[tuple[bytes, str]]:
        yield _event("message_start", {"type": "message_start",
                                       "message": self._message([], None)}), "head"  # fmt: skip
        block = {"type": "text", "text": ""} if self.tool is None else self._tool_use(whole=False)
        yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": block}), "head"  # fmt: skip
        yield _event("ping", {"type": "ping"}), "head"
        deltas: Iterator[dict[str, Any]] = (
            ({"type": "text_delta", "text": word if i == 0 else " " + word}
             for i, word in enumerate(completion_words(self.n_out)))
            if self.tool is None
            else ({"type": "input_json_delta", "partial_json": fragment}
                  for fragment in tool_arguments(self.n_out))
        )  # fmt: skip
        for delta in deltas:
            yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": delta}), "content"  # fmt: skip
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 0}), "tail"
        reason = "end_turn" if self.tool is None else "tool_use"
        stop = {"stop_reason": reason, "stop_sequence": None}
        end: dict[str, Any] = {"type": "message_delta", "delta": stop}
        if self.with_usage:
            end["usage"] = {"output_tokens": self.n_out}
        yield _event("message_delta", end), "tail"
        yield _event("message_stop", {"type": "message_stop"}), "tail"

    def _responses_events(self) -> Iterator[tuple[bytes, str]]:
        sequence = itertools.count()

        def event(kind: str, **fields: Any) -> bytes:
            return _event(kind, {"type": kind, "sequence_number": next(sequence), **fields})

        yield event("response.created", response=self._response("in_progress", [])), "head"
        yield event("response.in_progress", response=self._response("in_progress", [])), "head"
        if self.tool is not None:
            yield from self._call_events(event)
            return
        item_id = "msg_" + self.id
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield event("response.output_item.added", output_index=0,
                    item=self._output_message("", "in_progress")), "head"  # fmt: skip
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", part=part, **where), "head"
        for i, word in enumerate(completion_words(self.n_out)):
            piece = word if i == 0 else " " + word
            yield event("response.output_text.delta", delta=piece, logprobs=[], **where), "content"
        text = completion_text(self.n_out)
        yield event("response.output_text.done", text=text, logprobs=[], **where), "tail"
        yield event("response.content_part.done", part={**part, "text": text}, **where), "tail"
        done = self._output_message(text, "completed")
        yield event("response.output_item.done", output_index=0, item=done), "tail"
        yield event("response.completed", response=self._response("completed", [done])), "tail"

    def _call_events(self, event: Callable[..., bytes]) -> Iterator[tuple[bytes, str]]:
        where = {"item_id": "fc_" + self.id, "output_index": 0}
        added = self._function_call("in_progress")
        yield event("response.output_item.added", output_index=0, item=added), "head"
        for fragment in tool_arguments(self.n_out):
            delta = event("response.function_call_arguments.delta", delta=fragment, **where)
            yield delta, "content"
        arguments = self._arguments()
        yield event("response.function_call_arguments.done", arguments=arguments, **where), "tail"
        done = self._function_call("completed")
        yield event("response.output_item.done", output_index=0, item=done), "tail"
        yield event("response.completed", response=self._response("completed", [done])), "tail"


def count_tokens_body(body: dict[str, Any]) -> bytes:
    _model(body)
    return orjson.dumps({"input_tokens": messages_prompt_tokens(body)})
