"""What a relayed stream's events become, per client protocol and backend wire.

Rules:
- A `Relay` takes the backend's SSE events one at a time (each as the event
  splitter returns it: its lines joined by LF, no blank line after) and
  returns the bytes to send the client for it (each event ending in a blank
  line; empty: nothing to send). It never reorders or merges events.
- It keeps what the stream reported, for the request's usage record and its
  limits: the backend's own usage (`reported`, as `TokenCounts`), how many
  content events went out (an estimate when usage never came), and whether
  the stream completed (`done`). A stream that ends without completing, or
  breaks, is closed with `broken(message)`: an explicit error event in the
  client's protocol, never a silent truncation.
- Native relays pass events through, with the public model name (and, for
  Responses, the router's response id) written over the backend's.
  Translated relays parse OpenAI chat chunks and emit the client's protocol
  event by event (`router_core.protocols.messages` / `.responses`). From an
  Anthropic backend, Messages events become chat chunks
  (`chat_over_messages`); from a Gemini backend, its chunks do
  (`chat_over_gemini`, whose stream has no end marker: the chunk with a
  finish reason ends it). For a completions, Messages or Responses client
  those chat chunks go on through the chat-to-client relay (`ThroughChat`).
- Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from router_core.accounting.records import TokenCounts, reported_counts
from router_core.problems import Catalog
from router_core.protocols import (
    chat_over_bedrock,
    chat_over_gemini,
    chat_over_messages,
    completions,
    messages,
    responses,
)
from router_core.requests import Operation

_DATA = b"data:"
_DONE = b"[DONE]"
_END = b"\n\n"


class Relay(Protocol):
    # The backend's own usage, once it reported it.
    reported: TokenCounts | None
    content_events: int
    done: bool

    # A Responses stream's completed response, to store (None for other protocols).
    @property
    def response(self) -> dict[str, Any] | None: ...

    def event(self, event: bytes) -> bytes: ...

    def broken(self, message: str) -> bytes: ...


def _data(event: bytes) -> bytes | None:
    """The `data:` payload of an event (its one data line), or None."""
    if event.startswith(_DATA):
        start = 5
    else:
        start = event.find(b"\n" + _DATA)
        if start < 0:
            return None
        start += 6
    end = event.find(b"\n", start)
    return event[start : end if end >= 0 else len(event)].strip()


def _json(data: bytes | None) -> dict[str, Any] | None:
    if data is None or not data.startswith(b"{"):
        return None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


class ChatRelay:
    """OpenAI chat or completion chunks, to a client that asked for them."""

    __slots__ = ("content_events", "done", "public_model", "reported", "strip_usage")
    response = None

    def __init__(self, public_model: str, *, strip_usage: bool) -> None:
        self.public_model = public_model
        # Drop the usage-only chunk: the router asked for it, the client did not.
        self.strip_usage = strip_usage
        self.reported: TokenCounts | None = None
        self.content_events = 0
        self.done = False

    def event(self, event: bytes) -> bytes:
        if not event.startswith(_DATA):
            return event + _END
        data = event[5:].strip()
        if data == _DONE:
            self.done = True
            return event + _END
        chunk = _json(data)
        if chunk is None:
            return event + _END
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.reported = reported_counts(usage)
            if self.strip_usage and not chunk.get("choices"):
                return b""
        if chunk.get("choices"):
            self.content_events += 1
        if "model" in chunk:
            chunk["model"] = self.public_model
            return b"data: " + orjson.dumps(chunk) + _END
        return event + _END

    def broken(self, message: str) -> bytes:
        return _chat_error(message)


def _chat_error(message: str) -> bytes:
    """A chat stream's error event: what OpenAI sends when a stream fails."""
    error = {
        "error": {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": Catalog.BACKEND_ERROR.code,
        }
    }
    return b"data: " + orjson.dumps(error) + _END


class NativeMessagesRelay:
    """Anthropic Messages events from a backend that speaks them."""

    response = None

    def __init__(self, public_model: str) -> None:
        self.public_model = public_model
        self.reported: TokenCounts | None = None
        self._usage: dict[str, Any] = {}
        self.content_events = 0
        self.done = False

    def event(self, event: bytes) -> bytes:
        payload = _json(_data(event))
        if payload is None:
            return event + _END
        kind = payload.get("type")
        if kind == "content_block_delta":
            self.content_events += 1
            return event + _END
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            message = payload["message"]
            self._merge(message.get("usage"))
            message["model"] = self.public_model
            return messages.encode_event("message_start", payload)
        if kind == "message_delta":
            self._merge(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        return event + _END

    def _merge(self, usage: object) -> None:
        if isinstance(usage, Mapping):
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            self.reported = messages.usage_counts(self._usage)

    def broken(self, message: str) -> bytes:
        return messages.encode_event(
            "error", {"type": "error", "error": {"type": "api_error", "message": message}}
        )


class NativeResponsesRelay:
    """OpenAI Responses events from a backend that speaks them; the response
    takes the router's id, and the completed one is kept (`response`) to store."""

    def __init__(self, public_model: str, response_id: str) -> None:
        self.public_model = public_model
        self.response_id = response_id
        self.reported: TokenCounts | None = None
        self.content_events = 0
        self.done = False
        self.response: dict[str, Any] | None = None
        self._sequence = -1

    def event(self, event: bytes) -> bytes:
        payload = _json(_data(event))
        if payload is None:
            return event + _END
        sequence = payload.get("sequence_number")
        if isinstance(sequence, int):
            self._sequence = sequence
        kind = payload.get("type")
        if isinstance(kind, str) and kind.endswith(".delta"):
            self.content_events += 1
            return event + _END
        response = payload.get("response")
        if not isinstance(response, dict):
            return event + _END
        response["id"] = self.response_id
        response["model"] = self.public_model
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            self.response = response
            self.reported = responses.usage_counts(response.get("usage"))
        elif kind == "response.failed":
            self.reported = responses.usage_counts(response.get("usage"))
        return responses.encode_event(payload)

    def broken(self, message: str) -> bytes:
        self._sequence += 1
        return responses.encode_event(
            {
                "type": "error",
                "code": Catalog.BACKEND_ERROR.code,
                "message": message,
                "param": None,
                "sequence_number": self._sequence,
            }
        )


class ChatToMessagesRelay:
    """OpenAI chat chunks from the backend, as Anthropic Messages events."""

    response = None

    def __init__(self, public_model: str, message_id: str) -> None:
        self.chat = ChatRelay(public_model, strip_usage=False)
        self.translator = messages.StreamFromChat(model=public_model, message_id=message_id)
        self.content_events = 0
        self.done = False
        self.reported: TokenCounts | None = None

    def event(self, event: bytes) -> bytes:
        data = _data(event)
        if data == _DONE:
            self.done = True
            return b"".join(messages.encode_event(n, d) for n, d in self.translator.finish())
        chunk = _json(data)
        if chunk is None:
            return b""
        self.chat.event(event)
        self.reported, self.content_events = self.chat.reported, self.chat.content_events
        return b"".join(messages.encode_event(n, d) for n, d in self.translator.feed(chunk))

    def broken(self, message: str) -> bytes:
        return b"".join(messages.encode_event(n, d) for n, d in self.translator.error(message))


class ChatToResponsesRelay:
    """OpenAI chat chunks from the backend, as OpenAI Responses events; the
    completed response is kept (`response`) to store."""

    def __init__(
        self, public_model: str, response_id: str, created_at: int, request: Mapping[str, Any]
    ) -> None:
        self.chat = ChatRelay(public_model, strip_usage=False)
        self.translator = responses.StreamFromChat(
            response_id=response_id, model=public_model, created_at=created_at, request=request
        )
        self.content_events = 0
        self.done = False
        self.reported: TokenCounts | None = None

    @property
    def response(self) -> dict[str, Any] | None:
        return self.translator.response

    def event(self, event: bytes) -> bytes:
        data = _data(event)
        if data == _DONE:
            self.done = True
            return b"".join(responses.encode_event(e) for e in self.translator.finish())
        chunk = _json(data)
        if chunk is None:
            return b""
        self.chat.event(event)
        self.reported, self.content_events = self.chat.reported, self.chat.content_events
        return b"".join(responses.encode_event(e) for e in self.translator.feed(chunk))

    def broken(self, message: str) -> bytes:
        return b"".join(responses.encode_event(e) for e in self.translator.failed(message))


class ChatToCompletionsRelay:
    """OpenAI chat chunks from the backend, as legacy completion chunks; the
    usage chunk is dropped when the client did not ask for it."""

    response = None

    def __init__(
        self, public_model: str, completion_id: str, created_at: int, *, strip_usage: bool
    ) -> None:
        self.chat = ChatRelay(public_model, strip_usage=False)
        self.translator = completions.StreamFromChat(
            model=public_model, completion_id=completion_id, created=created_at
        )
        self.strip_usage = strip_usage
        self.content_events = 0
        self.done = False
        self.reported: TokenCounts | None = None

    def event(self, event: bytes) -> bytes:
        data = _data(event)
        if data == _DONE:
            self.done = True
            return b"data: [DONE]" + _END
        chunk = _json(data)
        if chunk is None:
            return b""
        self.chat.event(event)
        self.reported, self.content_events = self.chat.reported, self.chat.content_events
        if "error" in chunk and not chunk.get("choices"):
            return event + _END  # the stream's error event, as OpenAI sends it
        out = self.translator.feed(chunk)
        if out is None or (self.strip_usage and not out["choices"]):
            return b""
        return b"data: " + orjson.dumps(out) + _END

    def broken(self, message: str) -> bytes:
        return _chat_error(message)


class MessagesToChatRelay:
    """Anthropic Messages events from the backend, as OpenAI chat chunks."""

    response = None

    def __init__(
        self, public_model: str, completion_id: str, created_at: int, *, strip_usage: bool
    ) -> None:
        self.native = NativeMessagesRelay(public_model)
        self.translator = chat_over_messages.StreamToChat(
            model=public_model, completion_id=completion_id, created=created_at
        )
        self.strip_usage = strip_usage
        self.reported: TokenCounts | None = None
        self.content_events = 0
        self.done = False

    def event(self, event: bytes) -> bytes:
        payload = _json(_data(event))
        if payload is None:
            return b""
        self.native.event(event)
        self.reported, self.content_events = self.native.reported, self.native.content_events
        kind = payload.get("type")
        if kind == "error":
            error = payload.get("error")
            message = error.get("message") if isinstance(error, Mapping) else None
            return self.broken(str(message or "the backend's stream failed"))
        out = [b"data: " + orjson.dumps(c) + _END for c in self.translator.feed(payload)]
        if kind == "message_stop":
            self.done = True
            if not self.strip_usage:
                out.append(b"data: " + orjson.dumps(self.translator.usage_chunk()) + _END)
            out.append(b"data: [DONE]" + _END)
        return b"".join(out)

    def broken(self, message: str) -> bytes:
        return _chat_error(message)


def _carries_content(chunk: Mapping[str, Any]) -> bool:
    delta = chunk["choices"][0]["delta"]
    return bool(delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))


class _StreamToChat(Protocol):
    finished: bool

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def usage_chunk(self) -> dict[str, Any]: ...


class _ProviderToChatRelay:
    """A provider's stream (Gemini's chunks, Bedrock's decoded events), as OpenAI
    chat chunks, ending where the translator says the provider's stream ends."""

    response = None

    def __init__(
        self, public_model: str, completion_id: str, created_at: int, *, strip_usage: bool
    ) -> None:
        self.translator = self._translator(public_model, completion_id, created_at)
        self.strip_usage = strip_usage
        self.reported: TokenCounts | None = None
        self.content_events = 0
        self.done = False

    def _translator(self, model: str, completion_id: str, created: int) -> _StreamToChat:
        raise NotImplementedError

    def _error(self, payload: Mapping[str, Any]) -> str | None:
        """The provider's error message if `payload` is an error, else None."""
        raise NotImplementedError

    def _counts(self, payload: Mapping[str, Any]) -> TokenCounts | None:
        raise NotImplementedError

    def event(self, event: bytes) -> bytes:
        payload = _json(_data(event))
        if payload is None or self.done:
            return b""
        error = self._error(payload)
        if error is not None:
            return self.broken(error)
        chunks = self.translator.feed(payload)
        self.content_events += sum(1 for c in chunks if _carries_content(c))
        usage = self._counts(payload)
        if usage is not None:
            self.reported = usage
        out = [b"data: " + orjson.dumps(c) + _END for c in chunks]
        if self.translator.finished:
            self.done = True
            if not self.strip_usage:
                out.append(b"data: " + orjson.dumps(self.translator.usage_chunk()) + _END)
            out.append(b"data: [DONE]" + _END)
        return b"".join(out)

    def broken(self, message: str) -> bytes:
        return _chat_error(message)


class GeminiToChatRelay(_ProviderToChatRelay):
    """Google Gemini stream chunks from the backend, as OpenAI chat chunks."""

    def _translator(self, model: str, completion_id: str, created: int) -> _StreamToChat:
        return chat_over_gemini.StreamToChat(
            model=model, completion_id=completion_id, created=created
        )

    def _error(self, payload: Mapping[str, Any]) -> str | None:
        error = payload.get("error")
        if not isinstance(error, Mapping):
            return None
        return str(error.get("message") or "the backend's stream failed")

    def _counts(self, payload: Mapping[str, Any]) -> TokenCounts | None:
        return chat_over_gemini.usage_counts(payload.get("usageMetadata"))


class BedrockToChatRelay(_ProviderToChatRelay):
    """AWS Bedrock ConverseStream events (decoded by the server), as OpenAI chat chunks."""

    def _translator(self, model: str, completion_id: str, created: int) -> _StreamToChat:
        return chat_over_bedrock.StreamToChat(
            model=model, completion_id=completion_id, created=created
        )

    def _error(self, payload: Mapping[str, Any]) -> str | None:
        if payload.get("type") != "exception":
            return None
        return f"{payload.get('exception')}: {payload.get('message') or 'the stream failed'}"

    def _counts(self, payload: Mapping[str, Any]) -> TokenCounts | None:
        if payload.get("type") != "metadata":
            return None
        return chat_over_bedrock.usage_counts(payload.get("usage"))


class ThroughChat:
    """Two relays in a row: the backend's events to chat chunks, and those to the
    client's protocol. The counts are the first's (the backend's own usage)."""

    def __init__(self, first: Relay, second: Relay) -> None:
        self.first, self.second = first, second
        self.reported: TokenCounts | None = None
        self.content_events = 0
        self.done = False

    @property
    def response(self) -> dict[str, Any] | None:
        return self.second.response

    def event(self, event: bytes) -> bytes:
        chunks = self.first.event(event)
        self.reported, self.content_events = self.first.reported, self.first.content_events
        out = b"".join(self.second.event(c) for c in chunks.split(_END) if c)
        self.done = self.second.done
        return out

    def broken(self, message: str) -> bytes:
        return self.second.broken(message)


_TO_CHAT: Mapping[Operation, type[_ProviderToChatRelay]] = {
    Operation.GEMINI: GeminiToChatRelay,
    Operation.BEDROCK: BedrockToChatRelay,
}


def relay_for(
    operation: Operation,
    wire: Operation,
    public_model: str,
    *,
    strip_usage: bool,
    answer_id: str,
    created_at: int,
    request: Mapping[str, Any],
) -> Relay:
    """The relay for a stream the client asked for in `operation`'s protocol,
    answered by a backend speaking `wire`'s."""
    via_chat = _TO_CHAT.get(wire)
    if via_chat is not None or (wire is Operation.MESSAGES and operation is not wire):
        to_chat = via_chat or MessagesToChatRelay
        if operation is Operation.CHAT:
            return to_chat(public_model, answer_id, created_at, strip_usage=strip_usage)
        return ThroughChat(
            to_chat(public_model, answer_id, created_at, strip_usage=False),
            relay_for(operation, Operation.CHAT, public_model, strip_usage=strip_usage,
                      answer_id=answer_id, created_at=created_at, request=request),
        )  # fmt: skip
    if operation is wire:
        if operation is Operation.MESSAGES:
            return NativeMessagesRelay(public_model)
        if operation is Operation.RESPONSES:
            return NativeResponsesRelay(public_model, answer_id)
        return ChatRelay(public_model, strip_usage=strip_usage)
    if operation is Operation.COMPLETION:
        return ChatToCompletionsRelay(public_model, answer_id, created_at, strip_usage=strip_usage)
    if operation is Operation.MESSAGES:
        return ChatToMessagesRelay(public_model, answer_id)
    if operation is Operation.RESPONSES:
        return ChatToResponsesRelay(public_model, answer_id, created_at, request)
    raise ValueError(f"no relay from {wire.value} to {operation.value}")
