"""Anthropic Messages (`/v1/messages`): validation, and translation to and from chat.

Rules:
- Validation checks what the router acts on or a backend would refuse
  confusingly, in `router_core.requests`' style (every problem, with its
  path, in one 422); other fields pass through to a native backend.
- `to_chat` translates a request for a backend that speaks only OpenAI chat.
  Faithful or refused: a feature chat cannot express is a 400
  `unsupported_feature` naming it (documents, server tools, MCP servers,
  citations, tool results holding images, a top-level field it does not
  know). Three things are dropped on purpose, because they do not change
  what the model is asked: `cache_control` (a caching hint), earlier turns'
  `thinking` and `redacted_thinking` blocks (Anthropic's API itself leaves
  earlier turns' thinking out of the context), and `anthropic-*` headers.
  A `tool_result` with `is_error` is sent as the tool message's text with
  `Error: ` before it (chat has no error flag). `thinking` (enabled) becomes
  `reasoning_effort` by its budget: below 4,096 tokens `low`, below 16,384
  `medium`, else `high`. `top_k` is passed as `top_k`, which vLLM, SGLang
  and Ollama take.
- `response_from_chat` and `StreamFromChat` translate the answer back: the
  backend's `reasoning_content` as a thinking block, text, tool calls as
  `tool_use` blocks (arguments parsed as JSON), the finish reason as
  `stop_reason`, and usage with Anthropic's split of the prompt (its
  `input_tokens` excludes the cache reads that chat's `prompt_tokens`
  includes). A stream is translated chunk by chunk into Anthropic's events,
  one content block at a time, each closed before the next opens.
- Pure: ids are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from router_core.accounting.records import TokenCounts, count_of, estimate_tokens, text_chars
from router_core.problems import Catalog, ClientError, DependencyError
from router_core.requests import (
    FieldProblem,
    InferenceRequest,
    Operation,
    Problems,
    fail,
    join,
    not_an_object,
    optional_bool,
    optional_count,
    optional_int,
    optional_object,
    optional_range,
    require_str,
    type_of,
)

ROLES = ("user", "assistant")
TOOL_CHOICES = ("auto", "any", "tool", "none")
# The request fields `to_chat` knows; any other is refused rather than dropped.
_TRANSLATED = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
     "top_k", "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier"}
)  # fmt: skip
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --- validation --------------------------------------------------------------------------


def _check_blocks(content: object, where: str, out: Problems) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        shown = type_of(content)
        out.append(FieldProblem(where, f"must be a string or an array of blocks, not {shown}"))
        return
    for i, block in enumerate(content):
        path = join(where, i)
        if not isinstance(block, dict):
            out.append(FieldProblem(path, f"must be an object, not {type_of(block)}"))
        elif not isinstance(block.get("type"), str) or not block["type"]:
            out.append(FieldProblem(join(path, "type"), "required"))


def _check_messages(body: Mapping[str, Any], out: Problems) -> None:
    messages = body.get("messages")
    if "messages" not in body:
        out.append(FieldProblem("messages", "required"))
        return
    if not isinstance(messages, list) or not messages:
        out.append(FieldProblem("messages", "must be a non-empty array of messages"))
        return
    for i, message in enumerate(messages):
        where = join("messages", i)
        if not isinstance(message, dict):
            out.append(FieldProblem(where, f"must be an object, not {type_of(message)}"))
            continue
        if message.get("role") not in ROLES:
            out.append(FieldProblem(join(where, "role"), "must be one of user, assistant"))
        if "content" not in message:
            out.append(FieldProblem(join(where, "content"), "required"))
        else:
            _check_blocks(message["content"], join(where, "content"), out)


def _check_system(body: Mapping[str, Any], out: Problems) -> None:
    system = body.get("system")
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        out.append(FieldProblem("system", "must be a string or an array of text blocks"))
        return
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            out.append(FieldProblem(join("system", i), "must be a text block"))
        elif not isinstance(block.get("text"), str):
            out.append(FieldProblem(join(join("system", i), "text"), "must be a string"))


def _check_tools(body: Mapping[str, Any], out: Problems) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        out.append(FieldProblem("tools", f"must be an array, not {type_of(tools)}"))
        return
    for i, tool in enumerate(tools):
        where = join("tools", i)
        if not isinstance(tool, dict):
            out.append(FieldProblem(where, f"must be an object, not {type_of(tool)}"))
            continue
        require_str(tool, "name", where, out)
        if tool.get("type") in (None, "custom"):
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                out.append(FieldProblem(join(where, "input_schema"), "must be an object"))


def _check_tool_choice(body: Mapping[str, Any], out: Problems) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICES:
        out.append(FieldProblem("tool_choice.type", "must be one of auto, any, tool, none"))
        return
    if choice["type"] == "tool":
        require_str(choice, "name", "tool_choice", out)
    optional_bool(choice, "disable_parallel_tool_use", "tool_choice", out)


def _check_thinking(body: Mapping[str, Any], max_tokens: int | None, out: Problems) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        out.append(FieldProblem("thinking.type", "must be one of enabled, disabled"))
        return
    if thinking["type"] == "enabled":
        budget = optional_int(thinking, "budget_tokens", "thinking", out, 1024, 2**31 - 1)
        if "budget_tokens" not in thinking:
            out.append(FieldProblem("thinking.budget_tokens", "required"))
        elif budget is not None and max_tokens is not None and budget >= max_tokens:
            out.append(FieldProblem("thinking.budget_tokens", "must be less than max_tokens"))


def _check_stop_sequences(body: Mapping[str, Any], out: Problems) -> None:
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        out.append(FieldProblem("stop_sequences", "must be an array of strings"))


def _validate(body: object, *, counting: bool) -> InferenceRequest:
    if not isinstance(body, dict):
        raise not_an_object(body)
    problems: Problems = []
    model = require_str(body, "model", "", problems)
    _check_messages(body, problems)
    _check_system(body, problems)
    _check_tools(body, problems)
    _check_tool_choice(body, problems)
    max_tokens = None
    stream = False
    if not counting:
        max_tokens = optional_count(body, "max_tokens", "", problems)
        if "max_tokens" not in body:
            problems.append(FieldProblem("max_tokens", "required"))
        stream = optional_bool(body, "stream", "", problems)
        _check_stop_sequences(body, problems)
        optional_range(body, "temperature", 0, 1, "", problems)
        optional_range(body, "top_p", 0, 1, "", problems)
        optional_int(body, "top_k", "", problems, 0, 2**31 - 1)
        optional_object(body, "metadata", "", problems)
    _check_thinking(body, max_tokens, problems)
    if problems or model is None:
        raise fail(problems)
    return InferenceRequest(Operation.MESSAGES, model, body, stream=stream, max_tokens=max_tokens)


def validate_messages(body: object) -> InferenceRequest:
    """A Messages request, or a 422 listing every problem (`max_tokens` is required)."""
    return _validate(body, counting=False)


def validate_count_tokens(body: object) -> InferenceRequest:
    """A `count_tokens` request: a Messages request without `max_tokens`."""
    return _validate(body, counting=True)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """About four characters a token over the system prompt, messages and tools."""
    chars = text_chars(body.get("system")) + text_chars(body.get("messages"))
    chars += len(orjson.dumps(body["tools"])) if body.get("tools") else 0
    return estimate_tokens(chars)


# --- request: Messages -> chat --------------------------------------------------------------


def _unsupported(feature: str, path: str) -> ClientError:
    return ClientError(
        Catalog.UNSUPPORTED_FEATURE,
        f"{feature} cannot be translated to OpenAI chat for this model's backend; "
        "send it to a backend that speaks Anthropic Messages natively.",
        param=path,
    )


def _image_url(block: Mapping[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, Mapping) and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif isinstance(source, Mapping) and source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise _unsupported("An image source other than base64 or url", join(path, "source"))
    return {"type": "image_url", "image_url": {"url": url}}


def _text_of_result(content: object, path: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for i, block in enumerate(content if isinstance(content, list) else [content]):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, Mapping) else type_of(block)
            raise _unsupported(f"A tool_result holding {kind!r} content", join(path, i))
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def _user_turn(content: Sequence[Any], path: str) -> list[dict[str, Any]]:
    """A user turn's blocks: its tool results (as tool messages) first, then the rest."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = join(path, i)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image_url(block, where))
        elif kind == "tool_result":
            text = _text_of_result(block.get("content"), join(where, "content"))
            if block.get("is_error"):
                text = "Error: " + text
            tools.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
        else:
            raise _unsupported(f"A {kind!r} block", where)
    if parts:
        tools.append({"role": "user", "content": _plain(parts)})
    return tools


def _assistant_turn(content: Sequence[Any], path: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input", {})).decode()
            calls.append(
                {"id": block.get("id"), "type": "function",
                 "function": {"name": block.get("name"), "arguments": arguments}}
            )  # fmt: skip
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' thinking is not context (see the module's rules)
        else:
            raise _unsupported(f"A {kind!r} block", join(path, i))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _plain(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only parts as one string (what every chat server takes), else the parts."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _chat_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            raise _unsupported(f"The server tool {tool.get('type')!r}", join("tools", i))
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if "description" in tool:
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: Mapping[str, Any]) -> object:
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def reasoning_effort(budget_tokens: int) -> str:
    if budget_tokens < 4096:
        return "low"
    return "medium" if budget_tokens < 16384 else "high"


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A validated Messages request as an OpenAI chat request (see the module's rules)."""
    for name in body:
        if name not in _TRANSLATED:
            raise _unsupported(f"The field {name!r}", name)
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        messages.append({"role": "system", "content": "".join(b["text"] for b in system)})
    for i, message in enumerate(body["messages"]):
        path = join("messages", i)
        content = message["content"]
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
        elif message["role"] == "user":
            messages.extend(_user_turn(content, join(path, "content")))
        else:
            messages.append(_assistant_turn(content, join(path, "content")))
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if "max_tokens" in body:
        chat["max_tokens"] = body["max_tokens"]
    for ours, theirs in (("stop_sequences", "stop"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("top_k", "top_k")):  # fmt: skip
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if body.get("tools"):
        chat["tools"] = _chat_tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        chat["tool_choice"] = _chat_tool_choice(choice)
        if choice.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        chat["reasoning_effort"] = reasoning_effort(int(thinking["budget_tokens"]))
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# --- answers: chat -> Messages ---------------------------------------------------------------


def usage_counts(usage: object) -> TokenCounts | None:
    """Anthropic's usage as counts: the prompt is input + cache reads + cache writes."""
    if not isinstance(usage, Mapping):
        return None
    fresh = count_of(usage, "input_tokens")
    read = count_of(usage, "cache_read_input_tokens")
    written = count_of(usage, "cache_creation_input_tokens")
    output = count_of(usage, "output_tokens")
    prompt = fresh + read + written
    return TokenCounts(
        prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output,
        cached_tokens=read, cache_write_tokens=written,
    )  # fmt: skip


def anthropic_usage(usage: object) -> dict[str, int]:
    """Chat's usage in Anthropic's terms (chat's prompt_tokens includes cache reads)."""
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = count_of(usage, "prompt_tokens")
    details = usage.get("prompt_tokens_details")
    cached = count_of(details, "cached_tokens") if isinstance(details, Mapping) else 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": count_of(usage, "completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _reasoning(message: Mapping[str, Any]) -> str | None:
    value = message.get("reasoning_content", message.get("reasoning"))
    return value if isinstance(value, str) and value else None


def _tool_input(arguments: object) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise DependencyError(
            Catalog.BACKEND_ERROR, "The backend's tool call arguments are not a JSON object."
        )
    return parsed


def stop_reason(finish_reason: object) -> str:
    return _STOP_REASONS.get(str(finish_reason), "end_turn")


def response_from_chat(chat: Mapping[str, Any], *, model: str, message_id: str) -> dict[str, Any]:
    """A chat completion as a Messages `message`."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thinking = _reasoning(message)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
             "input": _tool_input(function.get("arguments"))}
        )  # fmt: skip
    matched = choice.get("stop_reason")  # vLLM names the stop string that matched
    reason = stop_reason(choice.get("finish_reason"))
    if reason == "end_turn" and isinstance(matched, str):
        reason = "stop_sequence"
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": matched if reason == "stop_sequence" else None,
        "usage": anthropic_usage(chat.get("usage")),
    }


Event = tuple[str, dict[str, Any]]


def encode_event(name: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamFromChat:
    """Chat completion chunks in, Anthropic stream events out, one chunk at a time."""

    def __init__(self, *, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self.started = False
        self.index = -1
        # The open block: "thinking", "text", or ("tool", the chat tool call's index).
        self.block: object = None
        self.finish_reason: object = None
        self.matched: str | None = None
        self.usage: object = None

    def _start(self) -> list[Event]:
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        # Anthropic's own streams send a ping after message_start; clients expect to see one.
        return [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]

    def _close(self) -> list[Event]:
        if self.block is None:
            return []
        self.block = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open(self, block: object, content: dict[str, Any]) -> list[Event]:
        events = self._close()
        self.block = block
        self.index += 1
        start = {"type": "content_block_start", "index": self.index, "content_block": content}
        return [*events, ("content_block_start", start)]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return ("content_block_delta",
                {"type": "content_block_delta", "index": self.index, "delta": delta})  # fmt: skip

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        events = [] if self.started else self._start()
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or ()
        for choice in choices[:1]:
            delta = choice.get("delta") or {}
            thinking = _reasoning(delta)
            if thinking:
                if self.block != "thinking":
                    events += self._open("thinking", {"type": "thinking", "thinking": "",
                                                      "signature": ""})  # fmt: skip
                events.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                key = ("tool", call.get("index", 0))
                function = call.get("function") or {}
                if self.block != key:
                    events += self._open(
                        key, {"type": "tool_use", "id": call.get("id"),
                              "name": function.get("name"), "input": {}},
                    )  # fmt: skip
                fragment = function.get("arguments")
                if isinstance(fragment, str) and fragment:
                    events.append(
                        self._delta({"type": "input_json_delta", "partial_json": fragment})
                    )
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
                if isinstance(choice.get("stop_reason"), str):
                    self.matched = choice["stop_reason"]
        return events

    def finish(self) -> list[Event]:
        """The chat stream completed: close the open block, then message_delta and message_stop."""
        events = [] if self.started else self._start()
        events += self._close()
        reason = stop_reason(self.finish_reason)
        if reason == "end_turn" and self.matched is not None:
            reason = "stop_sequence"
        delta = {"stop_reason": reason,
                 "stop_sequence": self.matched if reason == "stop_sequence" else None}  # fmt: skip
        usage = anthropic_usage(self.usage)
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def error(self, message: str, kind: str = "api_error") -> list[Event]:
        return [("error", {"type": "error", "error": {"type": kind, "message": message}})]


# --- request: chat -> Messages (the inverse, for round trips and Anthropic backends) ----------


def _anthropic_image(part: Mapping[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}  # fmt: skip
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: object) -> str | list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return content or ""
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_anthropic_image(part))
        else:
            raise _unsupported(f"A chat content part of type {part.get('type')!r}", "messages")
    return blocks


def from_chat(body: Mapping[str, Any], *, default_max_tokens: int = 4096) -> dict[str, Any]:
    """An OpenAI chat request as a Messages request (the inverse of `to_chat`)."""
    if (body.get("n") or 1) != 1:
        raise _unsupported("n other than 1", "n")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, list):  # text parts
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            system.append(str(content or ""))
        elif role == "tool":
            results.append({"type": "tool_result", "tool_use_id": message.get("tool_call_id"),
                            "content": message.get("content") or ""})  # fmt: skip
        elif role == "user":
            content = _blocks(message.get("content"))
            if results:
                text = [{"type": "text", "text": content}] if isinstance(content, str) else content
                content = [*results, *(b for b in text if b.get("text") != "")]
                results = []
            messages.append({"role": "user", "content": content})
        else:
            if results:
                messages.append({"role": "user", "content": results})
                results = []
            blocks: list[dict[str, Any]] = []
            if isinstance(message.get("content"), str) and message["content"]:
                blocks.append({"type": "text", "text": message["content"]})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"),
                               "name": function.get("name"),
                               "input": _tool_input(function.get("arguments"))})  # fmt: skip
            calls = message.get("tool_calls")
            messages.append(
                {"role": "assistant", "content": blocks if calls else message.get("content") or ""}
            )
    if results:
        messages.append({"role": "user", "content": results})
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    out["max_tokens"] = (
        body.get("max_completion_tokens") or body.get("max_tokens") or (default_max_tokens)
    )
    for theirs, ours in (("stop", "stop_sequences"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("top_k", "top_k")):  # fmt: skip
        if body.get(theirs) is not None:
            value = body[theirs]
            out[ours] = [value] if theirs == "stop" and isinstance(value, str) else value
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = [
            {"name": t["function"]["name"], "input_schema": t["function"].get("parameters", {}),
             **({"description": t["function"]["description"]}
                if "description" in t["function"] else {})}
            for t in body["tools"]
        ]  # fmt: skip
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, Mapping):
            out["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
        else:
            out["tool_choice"] = {
                "type": {"auto": "auto", "required": "any", "none": "none"}[choice]
            }
        if body.get("parallel_tool_calls") is False:
            out["tool_choice"]["disable_parallel_tool_use"] = True
    if body.get("stream"):
        out["stream"] = True
    return out
