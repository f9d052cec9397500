"""OpenAI Responses (`/v1/responses`): validation, conversation items, and
translation to and from chat.

Rules:
- Validation checks what the router acts on or a backend would refuse
  confusingly, in `router_core.requests`' style; other fields pass through
  to a native backend.
- A conversation is a list of items (messages, function calls and their
  outputs, reasoning). `input_items` is a request's own; `output_items` a
  response's; `expand` puts a stored conversation before a request's input
  (the router keeps the state: see `router_server.conversations`).
- `to_chat` translates an expanded request for a backend that speaks only
  chat. Faithful or refused: built-in tools (web search, file search,
  computer use, ...), file inputs, item references, `background`,
  `truncation: auto`, `include` and an unknown field are a 400
  `unsupported_feature` naming it. Dropped on purpose, because they do not
  change what the model is asked: `store` and `metadata` (the router keeps
  and echoes them), `reasoning.summary` (chat has no summaries: the
  backend's reasoning comes back as the reasoning item's content), earlier
  turns' reasoning items (chat takes no reasoning as input), and
  `stream_options`. The `developer` role is sent as `system`.
- `response_from_chat` and `StreamFromChat` translate the answer back, with
  item ids derived from the response id (no randomness): reasoning, then
  the message, then function calls; `length` is `incomplete`
  (`max_output_tokens`). A stream is translated chunk by chunk into the
  Responses events, one output item at a time, each done before the next
  is added, numbered by `sequence_number`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from router_core.accounting.records import TokenCounts, count_of
from router_core.problems import Catalog, ClientError
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
    optional_object,
    optional_range,
    require_str,
    type_of,
)

ROLES = ("user", "assistant", "system", "developer")
TOOL_CHOICES = ("auto", "none", "required")
_TRANSLATED = frozenset(
    {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream",
     "store", "metadata", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text",
     "user", "truncation", "service_tier", "stream_options", "include"}
)  # fmt: skip


# --- validation --------------------------------------------------------------------------


def _check_item(item: object, where: str, out: Problems) -> None:
    if not isinstance(item, dict):
        out.append(FieldProblem(where, f"must be an object, not {type_of(item)}"))
        return
    kind = item.get("type", "message")
    if kind == "message":
        if item.get("role") not in ROLES:
            out.append(
                FieldProblem(
                    join(where, "role"), "must be one of user, assistant, system, developer"
                )
            )
        content = item.get("content")
        if not isinstance(content, str | list):
            out.append(FieldProblem(join(where, "content"), "must be a string or an array"))
        elif isinstance(content, list):
            for i, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    out.append(FieldProblem(join(join(where, "content"), i), "must be a part"))
    elif kind == "function_call":
        for name in ("call_id", "name"):
            require_str(item, name, where, out)
        if not isinstance(item.get("arguments"), str):
            out.append(FieldProblem(join(where, "arguments"), "must be a string"))
    elif kind == "function_call_output":
        require_str(item, "call_id", where, out)
        if not isinstance(item.get("output"), str | list):
            out.append(FieldProblem(join(where, "output"), "must be a string or an array"))
    elif not isinstance(kind, str):
        out.append(FieldProblem(join(where, "type"), "must be a string"))


def _check_input(body: Mapping[str, Any], out: Problems) -> None:
    if "input" not in body or body["input"] is None:
        if not isinstance(body.get("previous_response_id"), str):
            out.append(FieldProblem("input", "required"))
        return
    given = body["input"]
    if isinstance(given, str):
        return
    if not isinstance(given, list) or not given:
        out.append(FieldProblem("input", "must be a string or a non-empty array of items"))
        return
    for i, item in enumerate(given):
        _check_item(item, join("input", i), out)


def _check_tools(body: Mapping[str, Any], out: Problems) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        out.append(FieldProblem("tools", f"must be an array, not {type_of(tools)}"))
        return
    for i, tool in enumerate(tools):
        where = join("tools", i)
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            out.append(FieldProblem(where, "must be an object with a type"))
        elif tool["type"] == "function":
            require_str(tool, "name", where, out)
            optional_object(tool, "parameters", where, out)


def _check_tool_choice(body: Mapping[str, Any], out: Problems) -> None:
    choice = body.get("tool_choice")
    if choice is None or choice in TOOL_CHOICES:
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        out.append(FieldProblem("tool_choice", "must be auto, none, required or an object"))
    elif choice["type"] == "function":
        require_str(choice, "name", "tool_choice", out)


def validate_responses(body: object) -> InferenceRequest:
    """A Responses request, or a 422 listing every problem."""
    if not isinstance(body, dict):
        raise not_an_object(body)
    problems: Problems = []
    model = require_str(body, "model", "", problems)
    _check_input(body, problems)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        problems.append(FieldProblem("instructions", "must be a string"))
    max_tokens = optional_count(body, "max_output_tokens", "", problems)
    stream = optional_bool(body, "stream", "", problems)
    for name in ("store", "parallel_tool_calls", "background"):
        optional_bool(body, name, "", problems)
    optional_range(body, "temperature", 0, 2, "", problems)
    optional_range(body, "top_p", 0, 1, "", problems)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        problems.append(FieldProblem("previous_response_id", "must be a non-empty string"))
    for name in ("metadata", "reasoning", "text"):
        optional_object(body, name, "", problems)
    _check_tools(body, problems)
    _check_tool_choice(body, problems)
    if problems or model is None:
        raise fail(problems)
    return InferenceRequest(Operation.RESPONSES, model, body, stream=stream, max_tokens=max_tokens)


# --- conversation items ----------------------------------------------------------------------


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's input as items (a string is one user message)."""
    given = body.get("input")
    if given is None:
        return []
    if isinstance(given, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": given}]}]  # fmt: skip
    return [dict(item) for item in given]


def output_items(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items a response adds to its conversation."""
    output = response.get("output")
    return [dict(item) for item in output if isinstance(item, Mapping)] if output else []


def expand(body: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`body` with the stored conversation before its own input, and no
    `previous_response_id` (instructions are not inherited, as in OpenAI's API)."""
    expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
    expanded["input"] = [*(dict(item) for item in history), *input_items(body)]
    return expanded


# --- request: Responses -> chat -------------------------------------------------------------


def _unsupported(feature: str, path: str) -> ClientError:
    return ClientError(
        Catalog.UNSUPPORTED_FEATURE,
        f"{feature} cannot be translated to OpenAI chat for this model's backend; "
        "send it to a backend that speaks OpenAI Responses natively.",
        param=path,
    )


def _part(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_image":
        raise _unsupported("An input_image by file_id", path)
    raise _unsupported(f"A {kind!r} content part", path)


def _content(content: object, path: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    given: list[Mapping[str, Any]] = content if isinstance(content, list) else []
    parts = [_part(p, join(path, i)) for i, p in enumerate(given)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: object) -> str:
    if isinstance(output, str):
        return output
    parts: list[object] = output if isinstance(output, list) else []
    texts = (p.get("text") for p in parts if isinstance(p, Mapping))
    return "".join(t for t in texts if isinstance(t, str))


def _chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    for i, item in enumerate(input_items(body)):
        where = join("input", i)
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append(
                {"role": role, "content": _content(item["content"], join(where, "content"))}
            )
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}  # fmt: skip
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"],
                 "content": _output_text(item.get("output"))}
            )  # fmt: skip
        elif kind == "reasoning":
            continue  # chat takes no reasoning as input (see the module's rules)
        else:
            raise _unsupported(f"An input item of type {kind!r}", where)
    return messages


def _chat_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise _unsupported(f"The built-in tool {tool.get('type')!r}", join("tools", i))
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: object) -> object:
    if isinstance(choice, str):
        return choice
    assert isinstance(choice, Mapping)
    if choice.get("type") != "function":
        raise _unsupported(f"The tool_choice {choice.get('type')!r}", "tool_choice")
    return {"type": "function", "function": {"name": choice["name"]}}


def _response_format(text: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = text.get("format")
    if not isinstance(spec, Mapping) or spec.get("type") in (None, "text"):
        return None
    if spec["type"] == "json_object":
        return {"type": "json_object"}
    if spec["type"] == "json_schema":
        schema = {k: spec[k] for k in ("name", "schema", "strict", "description") if k in spec}
        return {"type": "json_schema", "json_schema": schema}
    raise _unsupported(f"The text format {spec['type']!r}", "text.format")


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """An expanded Responses request as an OpenAI chat request (see the module's rules)."""
    for name in body:
        if name not in _TRANSLATED:
            raise _unsupported(f"The field {name!r}", name)
    if body.get("truncation") not in (None, "disabled"):
        raise _unsupported("truncation: auto", "truncation")
    if body.get("include"):
        raise _unsupported("include", "include")
    chat: dict[str, Any] = {"model": body["model"], "messages": _chat_messages(body)}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, Mapping):
        response_format = _response_format(text)
        if response_format is not None:
            chat["response_format"] = response_format
        if isinstance(text.get("verbosity"), str):
            chat["verbosity"] = text["verbosity"]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# --- answers: chat -> Responses ---------------------------------------------------------------


def usage_counts(usage: object) -> TokenCounts | None:
    """Responses' usage as counts (its input_tokens include the cached ones)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = count_of(usage, "input_tokens")
    output = count_of(usage, "output_tokens")
    inputs = usage.get("input_tokens_details")
    outputs = usage.get("output_tokens_details")
    return TokenCounts(
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=count_of(usage, "total_tokens") or prompt + output,
        cached_tokens=count_of(inputs, "cached_tokens") if isinstance(inputs, Mapping) else 0,
        cache_write_tokens=(
            count_of(inputs, "cache_write_tokens") if isinstance(inputs, Mapping) else 0
        ),
        reasoning_tokens=(
            count_of(outputs, "reasoning_tokens") if isinstance(outputs, Mapping) else 0
        ),
    )


def responses_usage(usage: object) -> dict[str, Any]:
    """Chat's usage in Responses' terms."""
    usage = usage if isinstance(usage, Mapping) else {}
    prompt, output = count_of(usage, "prompt_tokens"), count_of(usage, "completion_tokens")
    inputs = usage.get("prompt_tokens_details")
    outputs = usage.get("completion_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": count_of(inputs, "cached_tokens")
            if isinstance(inputs, Mapping)
            else 0,
            "cache_write_tokens": 0,  # chat does not report cache writes
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": (
                count_of(outputs, "reasoning_tokens") if isinstance(outputs, Mapping) else 0
            )
        },
        "total_tokens": count_of(usage, "total_tokens") or prompt + output,
    }


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [_text_part(text)] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content}  # fmt: skip


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content}


def _call_item(
    item_id: str, call_id: object, name: object, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}  # fmt: skip


def _response_object(
    request: Mapping[str, Any],
    *,
    response_id: str,
    model: str,
    created_at: int,
    output: list[dict[str, Any]],
    status: str,
    usage: dict[str, Any] | None,
    finish_reason: object = None,
) -> dict[str, Any]:
    incomplete = None
    if status == "completed" and finish_reason in ("length", "content_filter"):
        status = "incomplete"
        reason = "max_output_tokens" if finish_reason == "length" else "content_filter"
        incomplete = {"reason": reason}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": model,
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "store": request.get("store") is not False,
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": list(request.get("tools") or []),
        "text": request.get("text") or {"format": {"type": "text"}},
        "reasoning": request.get("reasoning"),
        "truncation": request.get("truncation") or "disabled",
        "user": request.get("user"),
    }


def _reasoning_of(message: Mapping[str, Any]) -> str | None:
    value = message.get("reasoning_content", message.get("reasoning"))
    return value if isinstance(value, str) and value else None


def response_from_chat(
    chat: Mapping[str, Any],
    *,
    response_id: str,
    model: str,
    created_at: int,
    request: Mapping[str, Any],
) -> dict[str, Any]:
    """A chat completion as a Response object."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    suffix = _suffix(response_id)
    output: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        output.append(_reasoning_item(f"rs_{suffix}_{len(output)}", reasoning))
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(_message_item(f"msg_{suffix}_{len(output)}", message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        output.append(
            _call_item(f"fc_{suffix}_{len(output)}", call.get("id"), function.get("name"),
                       arguments if isinstance(arguments, str) else "")
        )  # fmt: skip
    return _response_object(
        request, response_id=response_id, model=model, created_at=created_at, output=output,
        status="completed", usage=responses_usage(chat.get("usage")),
        finish_reason=choice.get("finish_reason"),
    )  # fmt: skip


def encode_event(event: Mapping[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class StreamFromChat:
    """Chat completion chunks in, Responses stream events out, one chunk at a time."""

    def __init__(
        self, *, response_id: str, model: str, created_at: int, request: Mapping[str, Any]
    ) -> None:
        self.response_id = response_id
        self.model = model
        self.created_at = created_at
        self.request = request
        self.suffix = _suffix(response_id)
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        # The open item: "reasoning", "message" or ("call", the chat tool call's index).
        self.open: object = None
        self.text = ""
        self.finish_reason: object = None
        self.usage: object = None
        self.response: dict[str, Any] | None = None
        self._item_id = ""
        self._call_id: object = None
        self._call_name: object = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return _response_object(
            self.request, response_id=self.response_id, model=self.model,
            created_at=self.created_at, output=list(self.output), status=status, usage=usage,
            finish_reason=self.finish_reason,
        )  # fmt: skip

    def _start(self) -> list[dict[str, Any]]:
        self.started = True
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    @property
    def _index(self) -> int:
        return len(self.output)

    def _close(self) -> list[dict[str, Any]]:
        """Finish the open item and add it to the output."""
        if self.open is None:
            return []
        index, text, item_id = self._index, self.text, self._item_id
        events: list[dict[str, Any]]
        if self.open == "message":
            part = _text_part(text)
            item = _message_item(item_id, text)
            events = [
                self._event("response.output_text.done", item_id=item_id, output_index=index,
                            content_index=0, text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item_id, output_index=index,
                            content_index=0, part=part),
            ]  # fmt: skip
        elif self.open == "reasoning":
            item = _reasoning_item(item_id, text)
            part = {"type": "reasoning_text", "text": text}
            events = [
                self._event("response.reasoning_text.done", item_id=item_id, output_index=index,
                            content_index=0, text=text),
                self._event("response.content_part.done", item_id=item_id, output_index=index,
                            content_index=0, part=part),
            ]  # fmt: skip
        else:
            item = _call_item(item_id, self._call_id, self._call_name, text)
            events = [
                self._event("response.function_call_arguments.done", item_id=item_id,
                            output_index=index, arguments=text),
            ]  # fmt: skip
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        self.output.append(item)
        self.open, self.text = None, ""
        return events

    def _begin(self, kind: object, prefix: str, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self.open, self.text = kind, ""
        self._item_id = f"{prefix}_{self.suffix}_{self._index}"
        item = {**item, "id": self._item_id}
        events.append(
            self._event("response.output_item.added", output_index=self._index, item=item)
        )
        return events

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = [] if self.started else self._start()
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            reasoning = _reasoning_of(delta)
            if reasoning:
                if self.open != "reasoning":
                    events += self._begin("reasoning", "rs", _reasoning_item("", None))
                    events.append(self._part_added({"type": "reasoning_text", "text": ""}))
                self.text += reasoning
                events.append(self._event(
                    "response.reasoning_text.delta", item_id=self._item_id,
                    output_index=self._index, content_index=0, delta=reasoning,
                ))  # fmt: skip
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != "message":
                    events += self._begin("message", "msg", _message_item("", "", "in_progress"))
                    events.append(self._part_added(_text_part("")))
                self.text += text
                events.append(self._event(
                    "response.output_text.delta", item_id=self._item_id,
                    output_index=self._index, content_index=0, delta=text, logprobs=[],
                ))  # fmt: skip
            for call in delta.get("tool_calls") or ():
                key = ("call", call.get("index", 0))
                function = call.get("function") or {}
                if self.open != key:
                    events += self._close()  # the previous item, with its own call id
                    self._call_id, self._call_name = call.get("id"), function.get("name")
                    item = _call_item("", self._call_id, self._call_name, "", "in_progress")
                    events += self._begin(key, "fc", item)
                fragment = function.get("arguments")
                if isinstance(fragment, str) and fragment:
                    self.text += fragment
                    events.append(self._event(
                        "response.function_call_arguments.delta", item_id=self._item_id,
                        output_index=self._index, delta=fragment,
                    ))  # fmt: skip
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
        return events

    def _part_added(self, part: dict[str, Any]) -> dict[str, Any]:
        return self._event("response.content_part.added", item_id=self._item_id,
                           output_index=self._index, content_index=0, part=part)  # fmt: skip

    def finish(self) -> list[dict[str, Any]]:
        """The chat stream completed: close the open item, then response.completed
        (response.incomplete when it stopped for length)."""
        events = [] if self.started else self._start()
        events += self._close()
        final = self._snapshot("completed", responses_usage(self.usage))
        self.response = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        events.append(self._event(kind, response=final))
        return events

    def failed(self, message: str) -> list[dict[str, Any]]:
        failed = self._snapshot("failed")
        failed["error"] = {"code": "server_error", "message": message}
        return [self._event("response.failed", response=failed)]


# --- request: chat -> Responses (the inverse, for round trips) --------------------------------


def _parts(content: object, role: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return content or ""
    kind = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if part.get("type") == "text":
            parts.append({"type": kind, "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            found = {"type": "input_image", "image_url": image.get("url")}
            if "detail" in image:
                found["detail"] = image["detail"]
            parts.append(found)
        else:
            raise _unsupported(f"A chat content part of type {part.get('type')!r}", "messages")
    return parts


def from_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Responses request (the inverse of `to_chat`)."""
    messages = list(body["messages"])
    out: dict[str, Any] = {"model": body["model"]}
    if (
        messages
        and messages[0].get("role") == "system"
        and isinstance(messages[0].get("content"), str)
    ):
        out["instructions"] = messages.pop(0)["content"]
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": message.get("content") or ""})  # fmt: skip
            continue
        if message.get("content") is not None or not message.get("tool_calls"):
            items.append({"type": "message", "role": role,
                          "content": _parts(message.get("content"), str(role))})  # fmt: skip
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append({"type": "function_call", "call_id": call.get("id"),
                          "name": function.get("name"),
                          "arguments": function.get("arguments", "")})  # fmt: skip
    out["input"] = items
    if body.get("max_tokens") is not None:
        out["max_output_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("tools"):
        out["tools"] = [{"type": "function", **t["function"]} for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        out["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}
    elif choice is not None:
        out["tool_choice"] = choice
    if body.get("stream"):
        out["stream"] = True
    return out
