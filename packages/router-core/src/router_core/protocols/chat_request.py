"""What every translation of a chat request to a provider's wire checks alike.

Rules:
- A provider names the fields it translates and those it takes only at a
  neutral value; `check` refuses any other field, by name, with the
  provider's own 400 `unsupported_feature` (its `Refusal`).
- Every provider has one system prompt before the conversation: `turns`
  hands back the leading system and developer messages' text and the turns
  after them, refusing a system message once the conversation has begun
  and a message `name`, which no provider carries.
- Tools are functions; a tool call's arguments are a JSON object (else the
  request is malformed: 422 `validation_failed`).
- Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from router_core.problems import Catalog, ClientError

# (feature, param) -> the provider's 400 naming what it cannot express.
Refusal = Callable[[str, str], ClientError]


def refusal(provider: str) -> Refusal:
    def refuse(feature: str, param: str) -> ClientError:
        return ClientError(
            Catalog.UNSUPPORTED_FEATURE,
            f"{feature} cannot be sent to this model's backend, which speaks {provider}.",
            param=param,
        )

    return refuse


def check(
    body: Mapping[str, Any],
    translated: frozenset[str],
    neutral: Mapping[str, tuple[object, ...]],
    refuse: Refusal,
) -> None:
    """Refuse a field the provider neither translates nor finds at its neutral value,
    and a tool that is not a function."""
    for field, value in body.items():
        if field in translated:
            continue
        if field in neutral and value in neutral[field]:
            continue
        raise refuse(f"The field {field!r}", field)
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise refuse("A tool that is not a function", f"tools[{i}]")


def turns(
    messages: Sequence[Any], refuse: Refusal
) -> tuple[list[str], list[tuple[str, Mapping[str, Any]]]]:
    """The leading system prompt's texts, and every later message with its path."""
    system: list[str] = []
    rest: list[tuple[str, Mapping[str, Any]]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            continue
        if "name" in message:
            raise refuse("A message's name", f"{where}.name")
        if message.get("role") in ("system", "developer"):
            if rest:
                raise refuse("A system message after the conversation has begun", where)
            system.append(text_of(message.get("content")))
        else:
            rest.append((where, message))
    return system, rest


def text_of(content: object) -> str:
    """A message's text: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def json_object(text: str) -> dict[str, Any] | None:
    """`text` parsed, if it is a JSON object."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def arguments(call: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A tool call's arguments, which must be a JSON object."""
    parsed = json_object((call.get("function") or {}).get("arguments") or "{}")
    if parsed is None:
        raise ClientError(
            Catalog.VALIDATION_FAILED, "A tool call's arguments must be a JSON object.", param=where
        )
    return parsed


def stop_sequences(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)
