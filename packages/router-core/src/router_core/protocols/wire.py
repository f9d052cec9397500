"""Which protocol a request travels in to each backend, and what comes back.

Rules:
- Each operation has one native protocol. A backend that lists it in
  `protocols` gets the request as the client sent it; one that speaks
  `openai` instead gets Messages and Responses translated to chat; one that
  speaks only `anthropic_messages` gets chat and Responses translated to
  Messages (Responses through chat: `chat_over_messages`). Any other cannot
  take it, and routing skips it with the reason `unable` gives.
- An answer is read in the protocol the backend answered in (its `wire`):
  its usage (`answer_counts`, from the wire's own usage, so Messages' cache
  writes are kept) and the client's body (`client_answer`), translated back.
- Ids and times are passed in; nothing here draws or reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router_core.accounting.records import (
    TokenCounts,
    completion_chars,
    estimate_tokens,
    token_counts,
)
from router_core.config import RouterConfig
from router_core.config_enums import Protocol
from router_core.protocols import chat_over_gemini, chat_over_messages, messages, responses
from router_core.requests import InferenceRequest, Operation

NATIVE: Mapping[Operation, Protocol] = {
    Operation.CHAT: Protocol.OPENAI,
    Operation.COMPLETION: Protocol.OPENAI,
    Operation.EMBEDDING: Protocol.OPENAI,
    Operation.MESSAGES: Protocol.ANTHROPIC_MESSAGES,
    Operation.RESPONSES: Protocol.OPENAI_RESPONSES,
    Operation.GEMINI: Protocol.GEMINI,
}
# What a chat-speaking wire can be sent, translated through chat.
_THROUGH_CHAT = (Operation.CHAT, Operation.MESSAGES, Operation.RESPONSES)


def wire_for(operation: Operation, speaks: tuple[Protocol, ...]) -> Operation | None:
    """What a backend speaking `speaks` is sent for `operation`: the operation
    itself (native), chat (translated), or None (it cannot take it)."""
    if NATIVE[operation] in speaks:
        return operation
    if Protocol.OPENAI in speaks and operation in (Operation.MESSAGES, Operation.RESPONSES):
        return Operation.CHAT
    if Protocol.ANTHROPIC_MESSAGES in speaks and operation in (
        Operation.CHAT,
        Operation.RESPONSES,
    ):
        return Operation.MESSAGES
    if Protocol.GEMINI in speaks and operation in _THROUGH_CHAT:
        return Operation.GEMINI
    return None


def unable(config: RouterConfig, operation: Operation) -> dict[str, str]:
    """The backends that cannot take `operation`, each with why (for routing)."""
    out: dict[str, str] = {}
    for name, backend in config.backends.items():
        if wire_for(operation, backend.speaks) is None:
            speaks = ", ".join(backend.speaks)
            out[name] = f"speaks {speaks}, not {NATIVE[operation]}"
    return out


def to_backend(request: InferenceRequest, wire: Operation) -> Mapping[str, Any]:
    """The body a backend on `wire` is sent (its model is set by the caller).

    Raises `ClientError(UNSUPPORTED_FEATURE)` when the request cannot be
    translated faithfully to chat.
    """
    body = request.body
    if request.operation is Operation.RESPONSES:
        # The router keeps the conversation: `input` already holds it whole
        # (see router_server.conversations), so the backend keeps nothing.
        body = {k: v for k, v in body.items() if k != "previous_response_id"}
        if wire is Operation.RESPONSES:
            return {**body, "store": False}
        chat = responses.to_chat(body)
        if wire is Operation.GEMINI:
            return chat_over_gemini.to_gemini(chat)
        return chat_over_messages.to_messages(chat) if wire is Operation.MESSAGES else chat
    if wire is request.operation:
        return body
    if request.operation is Operation.MESSAGES:
        chat = messages.to_chat(body)
        return chat_over_gemini.to_gemini(chat) if wire is Operation.GEMINI else chat
    if request.operation is Operation.CHAT and wire is Operation.GEMINI:
        return chat_over_gemini.to_gemini(body)
    if request.operation is Operation.CHAT and wire is Operation.MESSAGES:
        return chat_over_messages.to_messages(body)
    raise ValueError(f"{request.operation.value} is not sent as {wire.value}")


def _native_text_chars(answer: Mapping[str, Any]) -> int:
    """Characters of generated text in a Messages or Responses answer."""
    total = 0
    for block in answer.get("content") or answer.get("output") or ():
        if not isinstance(block, Mapping):
            continue
        for key in ("text", "thinking", "arguments"):
            value = block.get(key)
            if isinstance(value, str):
                total += len(value)
        parts = block.get("content")
        if isinstance(parts, list):
            texts = (p.get("text") for p in parts if isinstance(p, Mapping))
            total += sum(len(t) for t in texts if isinstance(t, str))
    return total


def answer_counts(
    request_body: Mapping[str, Any], wire: Operation, answer: Mapping[str, Any]
) -> TokenCounts:
    """The token counts of a whole answer on `wire` (estimated when it has no usage)."""
    usage = answer.get("usage")
    if wire is Operation.GEMINI:
        reported = chat_over_gemini.usage_counts(answer.get("usageMetadata"))
    elif wire is Operation.MESSAGES:
        reported = messages.usage_counts(usage)
    elif wire is Operation.RESPONSES:
        reported = responses.usage_counts(usage)
    else:
        return token_counts(request_body, usage, estimate_tokens(completion_chars(answer)))
    if reported is not None:
        return reported
    if wire is Operation.GEMINI:  # its text, as chat would carry it
        chat = chat_over_gemini.chat_from_gemini(answer, model="", completion_id="", created=0)
        return token_counts(request_body, None, estimate_tokens(completion_chars(chat)))
    return token_counts(request_body, None, estimate_tokens(_native_text_chars(answer)))


def stream_counts(
    request_body: Mapping[str, Any], reported: TokenCounts | None, content_events: int
) -> TokenCounts:
    """A stream's counts: what the backend reported, else an estimate (about a
    token per content event relayed)."""
    if reported is not None:
        return reported
    return token_counts(request_body, None, content_events)


def client_answer(
    request: InferenceRequest,
    wire: Operation,
    answer: dict[str, Any],
    *,
    public_model: str,
    answer_id: str,
    created_at: int,
) -> dict[str, Any]:
    """The body the client gets for a backend's whole `answer` on `wire`."""
    operation = request.operation
    if wire is Operation.GEMINI or (
        wire is Operation.MESSAGES and operation is not Operation.MESSAGES
    ):
        # Anthropic and Gemini backends: read as chat first, then as the client asked.
        read = (
            chat_over_gemini.chat_from_gemini
            if wire is Operation.GEMINI
            else chat_over_messages.chat_from_message
        )
        answer = read(answer, model=public_model, completion_id=answer_id, created=created_at)
        wire = Operation.CHAT
        if operation is Operation.CHAT:
            return answer
    if operation is Operation.MESSAGES and wire is Operation.CHAT:
        return messages.response_from_chat(answer, model=public_model, message_id=answer_id)
    if operation is Operation.RESPONSES and wire is Operation.CHAT:
        return responses.response_from_chat(
            answer,
            response_id=answer_id,
            model=public_model,
            created_at=created_at,
            request=request.body,
        )
    if operation is Operation.RESPONSES:
        # Sent with `store: false` and the conversation whole: the client sees
        # what it asked, under the router's id.
        answer["id"] = answer_id
        answer["store"] = request.body.get("store") is not False
        answer["previous_response_id"] = request.body.get("previous_response_id")
    if "model" in answer:
        answer["model"] = public_model
    return answer


__all__ = [
    "NATIVE",
    "answer_counts",
    "client_answer",
    "stream_counts",
    "to_backend",
    "unable",
    "wire_for",
]
