"""Chat completions to an AWS Bedrock backend (Converse, ConverseStream), and back.

Rules:
- `to_converse` translates a chat request, faithfully or not at all (a
  field Converse cannot express is a 400 `unsupported_feature` naming it,
  unless it is at its neutral value):
  - system and developer messages become `system`, only at the start.
  - user and assistant turns become `messages`, with consecutive turns of
    one role merged (Converse alternates).
  - images become `image` blocks: a data: URL only, since Converse takes
    bytes, not links.
  - assistant tool calls become `toolUse` blocks. Tool messages become
    `toolResult` blocks in a user turn: the tool's JSON object as `json`,
    else its text.
  - `tools` become `toolConfig.tools[].toolSpec`, and `tool_choice`
    becomes `toolChoice` (`auto`, `required` any, a named function
    `tool`). `none` is refused: Converse has no "tools offered but not to
    be used".
  - `max_tokens`, `temperature`, `top_p` and `stop` go in `inferenceConfig`.
- `chat_from_converse` and `StreamToChat` translate the answer:
  - text blocks become the content, `reasoningContent` becomes
    `reasoning_content`, `toolUse` becomes tool calls (their ids kept).
  - `stopReason` becomes the finish reason.
  - usage becomes chat's: the prompt includes cache reads and writes.
  - A stream's events (decoded from AWS event-stream framing by the server,
    one JSON object each with its `:event-type` as `type`) go one by one:
    `messageStop` carries the finish, and `metadata` (the usage) ends it.
- Pure: ids and times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from router_core.accounting.records import TokenCounts, count_of
from router_core.protocols import chat_answer, chat_request

_TRANSLATED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p",
     "tools", "tool_choice", "stream", "stream_options"}
)  # fmt: skip
_NEUTRAL: Mapping[str, tuple[object, ...]] = {
    "n": (1, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "presence_penalty": (0, None),
    "frequency_penalty": (0, None),
    "response_format": ({"type": "text"}, None),
    "parallel_tool_calls": (True, None),
    "store": (False, None),
    "metadata": (None,),
    "service_tier": ("auto", None),
    "user": (None,),
}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


_refuse = chat_request.refusal("AWS Bedrock Converse")


def _image(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        mime, _, data = url[5:].partition(";base64,")
        if mime in _IMAGE_FORMATS:
            return {"image": {"format": _IMAGE_FORMATS[mime], "source": {"bytes": data}}}
    raise _refuse("An image that is not a base64 data: URL of PNG, JPEG, GIF or WebP", where)


def _user_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return [{"text": content or ""}]
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content if isinstance(content, list) else ()):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            blocks.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image(part, f"{where}.content[{i}]"))
        else:
            raise _refuse(f"A content part of type {kind!r}", f"{where}.content[{i}]")
    return blocks


def _result(content: object) -> list[dict[str, Any]]:
    text = chat_request.text_of(content)
    parsed = chat_request.json_object(text)
    return [{"json": parsed}] if parsed is not None else [{"text": text}]


def _check(body: Mapping[str, Any]) -> None:
    chat_request.check(body, _TRANSLATED, _NEUTRAL, _refuse)
    if body.get("tool_choice") == "none" and body.get("tools"):
        raise _refuse('tool_choice "none" with tools offered', "tool_choice")


def _conversation(messages: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system, rest = chat_request.turns(messages, _refuse)
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for where, message in rest:
        role = message.get("role")
        if role == "user":
            add("user", _user_blocks(message.get("content"), where))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            said = chat_request.text_of(message.get("content"))
            if said:
                blocks.append({"text": said})
            for j, call in enumerate(message.get("tool_calls") or ()):
                blocks.append({"toolUse": {
                    "toolUseId": str(call.get("id")),
                    "name": str((call.get("function") or {}).get("name", "")),
                    "input": chat_request.arguments(
                        call, f"{where}.tool_calls[{j}].function.arguments"
                    ),
                }})  # fmt: skip
            add("assistant", blocks or [{"text": ""}])
        elif role == "tool":
            result = {"toolUseId": str(message.get("tool_call_id")),
                      "content": _result(message.get("content"))}  # fmt: skip
            add("user", [{"toolResult": result}])
    return [{"text": text} for text in system], turns


def to_converse(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat request as a Converse request (the model goes in its URL)."""
    _check(body)
    system, turns = _conversation(body.get("messages") or ())
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxTokens"] = limit
    for theirs, ours in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(theirs) is not None:
            config[ours] = body[theirs]
    stop = chat_request.stop_sequences(body)
    if stop is not None:
        config["stopSequences"] = stop
    if config:
        out["inferenceConfig"] = config
    tools = body.get("tools")
    if tools:
        specs = []
        for tool in tools:
            function = tool["function"]
            spec: dict[str, Any] = {
                "name": function["name"],
                "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
            }
            if "description" in function:
                spec["description"] = function["description"]
            specs.append({"toolSpec": spec})
        tool_config: dict[str, Any] = {"tools": specs}
        choice = body.get("tool_choice")
        if choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        elif choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif isinstance(choice, Mapping):
            tool_config["toolChoice"] = {"tool": {"name": (choice.get("function") or {})["name"]}}
        out["toolConfig"] = tool_config
    return out


def usage_counts(usage: object) -> TokenCounts | None:
    """Converse's usage as counts: the prompt is input + cache reads + cache writes."""
    if not isinstance(usage, Mapping):
        return None
    read = count_of(usage, "cacheReadInputTokens")
    written = count_of(usage, "cacheWriteInputTokens")
    prompt = count_of(usage, "inputTokens") + read + written
    output = count_of(usage, "outputTokens")
    return TokenCounts(
        prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output,
        cached_tokens=read, cache_write_tokens=written,
    )  # fmt: skip


def chat_usage(usage: object) -> dict[str, Any]:
    counts = usage_counts(usage) or TokenCounts()
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
    }


def finish_reason(stop_reason: object) -> str:
    return _FINISH.get(str(stop_reason), "stop")


def _call(tool: Mapping[str, Any], index: int, arguments: str) -> dict[str, Any]:
    return {"index": index, "id": tool.get("toolUseId"), "type": "function",
            "function": {"name": tool.get("name"), "arguments": arguments}}  # fmt: skip


def chat_from_converse(
    answer: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A Converse answer as a chat completion."""
    output = answer.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    blocks = message.get("content") if isinstance(message, Mapping) else None
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, Mapping):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), Mapping):
            tool = block["toolUse"]
            call = _call(tool, len(calls), orjson.dumps(tool.get("input") or {}).decode())
            del call["index"]
            calls.append(call)
        elif isinstance(block.get("reasoningContent"), Mapping):
            reasoning = block["reasoningContent"].get("reasoningText") or {}
            if isinstance(reasoning.get("text"), str):
                thoughts.append(reasoning["text"])
    finish = finish_reason(answer.get("stopReason"))
    return chat_answer.completion(
        completion_id=completion_id, created=created, model=model, text=text,
        thoughts=thoughts, calls=calls, finish=finish, usage=chat_usage(answer.get("usage")),
    )  # fmt: skip


class StreamToChat:
    """ConverseStream events in (each `{"type": <event type>, ...payload}`), chat chunks out."""

    def __init__(self, *, model: str, completion_id: str, created: int) -> None:
        self.chunks = chat_answer.Chunks(model=model, completion_id=completion_id, created=created)
        self.tools: dict[int, int] = {}  # Converse block index -> chat tool call index
        self.usage: object = None
        self.finished = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return self.chunks.chunk(delta, finish)

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        index = count_of(event, "contentBlockIndex")
        if kind == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "contentBlockStart":
            start = event.get("start")
            tool = start.get("toolUse") if isinstance(start, Mapping) else None
            if isinstance(tool, Mapping):
                self.tools[index] = len(self.tools)
                return [self._chunk({"tool_calls": [_call(tool, self.tools[index], "")]})]
            return []
        if kind == "contentBlockDelta":
            delta = event.get("delta")
            if not isinstance(delta, Mapping):
                return []
            if isinstance(delta.get("text"), str):
                return [self._chunk({"content": delta["text"]})]
            tool = delta.get("toolUse")
            if isinstance(tool, Mapping) and index in self.tools:
                call = {
                    "index": self.tools[index],
                    "function": {"arguments": tool.get("input", "")},
                }
                return [self._chunk({"tool_calls": [call]})]
            reasoning = delta.get("reasoningContent")
            if isinstance(reasoning, Mapping) and isinstance(reasoning.get("text"), str):
                return [self._chunk({"reasoning_content": reasoning["text"]})]
            return []
        if kind == "messageStop":
            return [self._chunk({}, finish_reason(event.get("stopReason")))]
        if kind == "metadata":
            self.usage = event.get("usage")
            self.finished = True
        return []

    def usage_chunk(self) -> dict[str, Any]:
        return self.chunks.usage(chat_usage(self.usage))


__all__ = [
    "StreamToChat",
    "chat_from_converse",
    "chat_usage",
    "finish_reason",
    "to_converse",
    "usage_counts",
]
