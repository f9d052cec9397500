"""Which protocol a request travels in to each backend, and what comes back.

Rules:
- Each operation has one native protocol. A backend that lists it in
  `protocols` gets the request as the client sent it; one that speaks
  `openai` instead gets Messages and Responses translated to chat; one that
  speaks only `anthropic_messages` gets chat, completions and Responses
  translated to Messages (completions and Responses through chat:
  `chat_over_messages`); Gemini and Bedrock backends get the same through
  chat (`_VIA_CHAT`). Legacy completions reach a non-OpenAI wire as chat
  (`completions`). Any other cannot take it, and routing skips it with the
  reason `unable` gives.
- An answer is read in the protocol the backend answered in (its `wire`):
  its usage (`answer_counts`, from the wire's own usage, so Messages' cache
  writes are kept) and the client's body (`client_answer`), translated back.
- Ids and times are passed in; nothing here draws or reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from router_core.accounting.records import (
    TokenCounts,
    completion_chars,
    estimate_tokens,
    token_counts,
)
from router_core.config import RouterConfig
from router_core.config_enums import Protocol
from router_core.protocols import (
    chat_over_bedrock,
    chat_over_gemini,
    chat_over_messages,
    completions,
    embeddings_over_providers,
    messages,
    responses,
)
from router_core.requests import InferenceRequest, Operation

NATIVE: Mapping[Operation, Protocol] = {
    Operation.CHAT: Protocol.OPENAI,
    Operation.COMPLETION: Protocol.OPENAI,
    Operation.EMBEDDING: Protocol.OPENAI,
    Operation.MESSAGES: Protocol.ANTHROPIC_MESSAGES,
    Operation.RESPONSES: Protocol.OPENAI_RESPONSES,
    Operation.GEMINI: Protocol.GEMINI,
    Operation.BEDROCK: Protocol.BEDROCK,
    Operation.PROVIDER_EMBEDDING: Protocol.OPENAI,
}
# What a chat-speaking wire can be sent, translated through chat.
_THROUGH_CHAT = (Operation.CHAT, Operation.COMPLETION, Operation.MESSAGES, Operation.RESPONSES)


@attrs.frozen
class _ViaChat:
    """A provider's codec: chat requests to its wire, its answers back to chat."""

    request: Callable[[Mapping[str, Any]], dict[str, Any]]
    # (answer, *, model, completion_id, created) -> a chat completion
    answer: Callable[..., dict[str, Any]]
    counts: Callable[[Mapping[str, Any]], TokenCounts | None]


# Wires no client speaks: everything reaches them through chat.
_VIA_CHAT: Mapping[Operation, _ViaChat] = {
    Operation.GEMINI: _ViaChat(
        chat_over_gemini.to_gemini,
        chat_over_gemini.chat_from_gemini,
        lambda answer: chat_over_gemini.usage_counts(answer.get("usageMetadata")),
    ),
    Operation.BEDROCK: _ViaChat(
        chat_over_bedrock.to_converse,
        chat_over_bedrock.chat_from_converse,
        lambda answer: chat_over_bedrock.usage_counts(answer.get("usage")),
    ),
}


def wire_for(operation: Operation, speaks: tuple[Protocol, ...]) -> Operation | None:
    """What a backend speaking `speaks` is sent for `operation`: the operation
    itself (native), chat (translated), or None (it cannot take it)."""
    if NATIVE[operation] in speaks:
        return operation
    if Protocol.OPENAI in speaks and operation in (Operation.MESSAGES, Operation.RESPONSES):
        return Operation.CHAT
    if Protocol.ANTHROPIC_MESSAGES in speaks and operation in (
        Operation.CHAT,
        Operation.COMPLETION,
        Operation.RESPONSES,
    ):
        return Operation.MESSAGES
    for wire in _VIA_CHAT:
        if NATIVE[wire] in speaks and operation in _THROUGH_CHAT:
            return wire
    if operation is Operation.EMBEDDING and (
        Protocol.GEMINI in speaks or Protocol.BEDROCK in speaks
    ):
        return Operation.PROVIDER_EMBEDDING
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
    if wire is Operation.PROVIDER_EMBEDDING:
        # Cut into calls per candidate, since the body depends on the model
        # (`embeddings_over_providers.calls`).
        return body
    if request.operation is Operation.RESPONSES:
        # The router keeps the conversation: `input` already holds it whole
        # (see router_server.conversations), so the backend keeps nothing.
        body = {k: v for k, v in body.items() if k != "previous_response_id"}
        if wire is Operation.RESPONSES:
            return {**body, "store": False}
    elif wire is request.operation:
        return body
    chat = _as_chat(request.operation, body)
    if wire is Operation.CHAT and chat is not None:
        return chat
    if wire is Operation.MESSAGES and chat is not None:
        return chat_over_messages.to_messages(chat)
    codec = _VIA_CHAT.get(wire)
    if codec is not None and chat is not None:
        return codec.request(chat)
    raise ValueError(f"{request.operation.value} is not sent as {wire.value}")


def _as_chat(operation: Operation, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request as chat completions, for a wire reached through chat."""
    if operation is Operation.CHAT:
        return body
    if operation is Operation.MESSAGES:
        return messages.to_chat(body)
    if operation is Operation.RESPONSES:
        return responses.to_chat(body)
    if operation is Operation.COMPLETION:
        return completions.to_chat(body)
    return None


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
    if wire is Operation.PROVIDER_EMBEDDING:
        return embeddings_over_providers.counts(request_body, answer)
    usage = answer.get("usage")
    codec = _VIA_CHAT.get(wire)
    if codec is not None:
        reported = codec.counts(answer)
    elif wire is Operation.MESSAGES:
        reported = messages.usage_counts(usage)
    elif wire is Operation.RESPONSES:
        reported = responses.usage_counts(usage)
    else:
        return token_counts(request_body, usage, estimate_tokens(completion_chars(answer)))
    if reported is not None:
        return reported
    if codec is not None:  # its text, as chat would carry it
        chat = codec.answer(answer, model="", completion_id="", created=0)
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
    if wire is Operation.PROVIDER_EMBEDDING:
        return embeddings_over_providers.to_openai(request.body, answer, public_model=public_model)
    codec = _VIA_CHAT.get(wire)
    if codec is not None or (wire is Operation.MESSAGES and operation is not Operation.MESSAGES):
        # Anthropic, Gemini and Bedrock backends: read as chat, then as the client asked.
        read = codec.answer if codec is not None else chat_over_messages.chat_from_message
        answer = read(answer, model=public_model, completion_id=answer_id, created=created_at)
        wire = Operation.CHAT
        if operation is Operation.CHAT:
            return answer
    if operation is Operation.COMPLETION and wire is Operation.CHAT:
        return completions.from_chat(
            answer, model=public_model, completion_id=answer_id, created=created_at
        )
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
