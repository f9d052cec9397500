"""Chat completions to a Google Gemini backend (`generateContent`), and back.

Rules:
- `to_gemini` translates a chat request, faithfully or not at all. A field
  Gemini cannot express is a 400 `unsupported_feature` naming it, unless it
  is at its neutral value (as `chat_over_messages` does). The mapping:
  - system and developer messages become `systemInstruction`. Only at the
    start: Gemini has one system instruction, before every turn.
  - user and assistant turns become `user` and `model` contents, with
    consecutive turns of one role merged (Gemini alternates).
  - images become `inlineData` (a data: URL) or `fileData` (any other URL).
  - assistant tool calls become `functionCall` parts. Tool messages become
    `functionResponse` parts, named after the call they answer: the
    response is `{"content": <the tool's text>}`, or the text's JSON when
    it is an object.
  - `tools` become `functionDeclarations`. `tool_choice` becomes
    `functionCallingConfig` (`auto` AUTO, `required` ANY, `none` NONE, a
    named function ANY with `allowedFunctionNames`).
  - sampling and length settings go in `generationConfig`;
    `response_format` JSON becomes `responseMimeType` (and
    `responseSchema`).
  - `safety_settings` (the router's own field: a list of `{category,
    threshold}` with Gemini's names, such as HARM_CATEGORY_HARASSMENT and
    BLOCK_ONLY_HIGH) becomes `safetySettings`; Gemini checks the names.
    Every other backend kind refuses the field by name.
- `chat_from_gemini` and `StreamToChat` translate the answer:
  - text parts become the content, `thought` parts `reasoning_content`, and
    `functionCall` parts tool calls. Gemini gives calls no id, so they are
    named after the answer's id and their position.
  - `finishReason` becomes the finish reason (`STOP` stop, `MAX_TOKENS`
    length, safety and recitation blocks content_filter, tool calls
    tool_calls).
  - `usageMetadata` becomes chat's usage. The completion includes
    thoughts, as OpenAI counts reasoning in completion tokens.
  - A stream's chunks carry no end marker: the chunk with a `finishReason`
    ends it.
- Pure: ids and times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from router_core.accounting.records import TokenCounts, count_of
from router_core.problems import Catalog, ClientError
from router_core.protocols import chat_answer, chat_request

_TRANSLATED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p",
     "top_k", "seed", "presence_penalty", "frequency_penalty", "response_format", "tools",
     "tool_choice", "stream", "stream_options", "user", "safety_settings"}
)  # fmt: skip
_NEUTRAL: Mapping[str, tuple[object, ...]] = {
    "n": (1, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "parallel_tool_calls": (True, None),
    "store": (False, None),
    "metadata": (None,),
    "service_tier": ("auto", None),
}
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


_refuse = chat_request.refusal("Google Gemini")


def _image(part: Mapping[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        mime, _, data = url[5:].partition(";base64,")
        return {"inlineData": {"mimeType": mime, "data": data}}
    return {"fileData": {"mimeType": "image/*", "fileUri": url}}


def _user_parts(content: object, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return [{"text": content or ""}]
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content if isinstance(content, list) else ()):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            parts.append(_image(part))
        else:
            raise _refuse(f"A content part of type {kind!r}", f"{where}.content[{i}]")
    return parts


def _tool_response(content: object) -> dict[str, Any]:
    text = chat_request.text_of(content)
    return chat_request.json_object(text) or {"content": text}


def _safety_settings(value: object) -> list[dict[str, str]]:
    """`safety_settings` as Gemini's `safetySettings`: objects of two strings each."""
    if not isinstance(value, list):
        raise ClientError(
            Catalog.VALIDATION_FAILED,
            "safety_settings must be a list of {category, threshold} objects.",
            param="safety_settings",
        )
    out = []
    for i, setting in enumerate(value):
        if not (
            isinstance(setting, Mapping)
            and set(setting) == {"category", "threshold"}
            and all(isinstance(setting[k], str) and setting[k] for k in setting)
        ):
            raise ClientError(
                Catalog.VALIDATION_FAILED,
                "Each safety setting is an object of exactly two non-empty strings, "
                "category and threshold (Gemini's names, such as "
                "HARM_CATEGORY_HARASSMENT and BLOCK_ONLY_HIGH).",
                param=f"safety_settings[{i}]",
            )
        out.append({"category": setting["category"], "threshold": setting["threshold"]})
    return out


def _check(body: Mapping[str, Any]) -> None:
    chat_request.check(body, _TRANSLATED, _NEUTRAL, _refuse)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") not in (
        "text", "json_object", "json_schema",
    ):  # fmt: skip
        raise _refuse("This response_format", "response_format")


def _contents(messages: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system instruction's parts and the conversation, turns of one role merged."""
    system, rest = chat_request.turns(messages, _refuse)
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for where, message in rest:
        role = message.get("role")
        if role == "user":
            add("user", _user_parts(message.get("content"), where))
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            said = chat_request.text_of(message.get("content"))
            if said:
                parts.append({"text": said})
            for j, call in enumerate(message.get("tool_calls") or ()):
                name = str((call.get("function") or {}).get("name", ""))
                names[str(call.get("id"))] = name
                args = chat_request.arguments(call, f"{where}.tool_calls[{j}].function.arguments")
                parts.append({"functionCall": {"name": name, "args": args}})
            add("model", parts or [{"text": ""}])
        elif role == "tool":
            call_id = str(message.get("tool_call_id"))
            if call_id not in names:
                raise ClientError(
                    Catalog.VALIDATION_FAILED,
                    f"The tool message answers {call_id!r}, which no earlier tool call made.",
                    param=f"{where}.tool_call_id",
                )
            response = _tool_response(message.get("content"))
            add("user", [{"functionResponse": {"name": names[call_id], "response": response}}])
    return [{"text": text} for text in system], contents


def to_gemini(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat request as a `generateContent` request (the model goes in its URL)."""
    _check(body)
    system, contents = _contents(body.get("messages") or ())
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    for theirs, ours in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                         ("seed", "seed"),
                         ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty")):  # fmt: skip
        if body.get(theirs) is not None:
            config[ours] = body[theirs]
    stop = chat_request.stop_sequences(body)
    if stop is not None:
        config["stopSequences"] = stop
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") != "text":
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseSchema"] = schema
    if config:
        out["generationConfig"] = config
    if body.get("safety_settings") is not None:
        out["safetySettings"] = _safety_settings(body["safety_settings"])
    tools = body.get("tools")
    if tools:
        declarations = []
        for tool in tools:
            function = tool["function"]
            declaration = {"name": function["name"]}
            for key in ("description", "parameters"):
                if key in function:
                    declaration[key] = function[key]
            declarations.append(declaration)
        out["tools"] = [{"functionDeclarations": declarations}]
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice in _MODES:
        out["toolConfig"] = {"functionCallingConfig": {"mode": _MODES[choice]}}
    elif isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        out["toolConfig"] = {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}
        }
    return out


def usage_counts(usage: object) -> TokenCounts | None:
    """Gemini's `usageMetadata` as counts: output includes the thoughts."""
    if not isinstance(usage, Mapping):
        return None
    prompt = count_of(usage, "promptTokenCount")
    thoughts = count_of(usage, "thoughtsTokenCount")
    completion = count_of(usage, "candidatesTokenCount") + thoughts
    return TokenCounts(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        cached_tokens=count_of(usage, "cachedContentTokenCount"), reasoning_tokens=thoughts,
    )  # fmt: skip


def chat_usage(usage: object) -> dict[str, Any]:
    counts = usage_counts(usage) or TokenCounts()
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": counts.reasoning_tokens},
    }


def finish_reason(reason: object, *, called: bool) -> str:
    if called and reason in (None, "STOP"):
        return "tool_calls"
    return _FINISH.get(str(reason), "stop")


def _candidate(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    candidates = answer.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], Mapping):
        return candidates[0]
    return {}


def _parts(candidate: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return [p for p in parts if isinstance(p, Mapping)] if isinstance(parts, list) else []


def _call(part: Mapping[str, Any], call_id: str, index: int) -> dict[str, Any]:
    function = part.get("functionCall") or {}
    return {
        "index": index,
        "id": function.get("id") or call_id,
        "type": "function",
        "function": {
            "name": function.get("name"),
            "arguments": orjson.dumps(function.get("args") or {}).decode(),
        },
    }


def chat_from_gemini(
    answer: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A `generateContent` answer as a chat completion."""
    candidate = _candidate(answer)
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        if "functionCall" in part:
            call = _call(part, f"call_{completion_id}_{len(calls)}", len(calls))
            del call["index"]
            calls.append(call)
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else text).append(part["text"])
    finish = finish_reason(candidate.get("finishReason"), called=bool(calls))
    usage = chat_usage(answer.get("usageMetadata"))
    return chat_answer.completion(
        completion_id=completion_id, created=created, model=model, text=text,
        thoughts=thoughts, calls=calls, finish=finish, usage=usage,
    )  # fmt: skip


class StreamToChat:
    """Gemini stream chunks in (each a partial `generateContent` answer), chat chunks out."""

    def __init__(self, *, model: str, completion_id: str, created: int) -> None:
        self.completion_id = completion_id
        self.chunks = chat_answer.Chunks(model=model, completion_id=completion_id, created=created)
        self.started = False
        self.calls = 0
        self.usage: object = None
        self.finished = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return self.chunks.chunk(delta, finish)

    def feed(self, answer: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = [] if self.started else [self._chunk({"role": "assistant", "content": ""})]
        self.started = True
        if answer.get("usageMetadata") is not None:
            self.usage = answer["usageMetadata"]
        candidate = _candidate(answer)
        for part in _parts(candidate):
            if "functionCall" in part:
                call = _call(part, f"call_{self.completion_id}_{self.calls}", self.calls)
                self.calls += 1
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(part.get("text"), str) and part["text"]:
                key = "reasoning_content" if part.get("thought") else "content"
                out.append(self._chunk({key: part["text"]}))
        reason = candidate.get("finishReason")
        if reason is not None:
            self.finished = True
            out.append(self._chunk({}, finish_reason(reason, called=self.calls > 0)))
        return out

    def usage_chunk(self) -> dict[str, Any]:
        return self.chunks.usage(chat_usage(self.usage))


__all__ = [
    "StreamToChat",
    "chat_from_gemini",
    "chat_usage",
    "finish_reason",
    "to_gemini",
    "usage_counts",
]
