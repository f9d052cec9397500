"""Which protocol each backend is sent, and the relays of native streams."""

from __future__ import annotations

import random
from collections.abc import Mapping

import orjson
import pytest

from router_core.config_codec import structure
from router_core.config_enums import Protocol
from router_core.limits.plan import with_max_tokens
from router_core.protocols.relay import (
    ChatRelay,
    NativeMessagesRelay,
    NativeResponsesRelay,
    relay_for,
)
from router_core.protocols.wire import unable, wire_for
from router_core.requests import Operation
from router_core.routing import SkipReason, decide

OPENAI = (Protocol.OPENAI,)
EVERY = tuple(Protocol)


@pytest.mark.parametrize(
    ("operation", "speaks", "wire"),
    [
        (Operation.CHAT, OPENAI, Operation.CHAT),
        (Operation.EMBEDDING, OPENAI, Operation.EMBEDDING),
        (Operation.MESSAGES, OPENAI, Operation.CHAT),
        (Operation.RESPONSES, OPENAI, Operation.CHAT),
        (Operation.MESSAGES, EVERY, Operation.MESSAGES),
        (Operation.RESPONSES, EVERY, Operation.RESPONSES),
        (Operation.MESSAGES, (Protocol.ANTHROPIC_MESSAGES,), Operation.MESSAGES),
        # An Anthropic backend takes chat, completions and Responses translated
        # to Messages...
        (Operation.CHAT, (Protocol.ANTHROPIC_MESSAGES,), Operation.MESSAGES),
        (Operation.COMPLETION, (Protocol.ANTHROPIC_MESSAGES,), Operation.MESSAGES),
        (Operation.RESPONSES, (Protocol.ANTHROPIC_MESSAGES,), Operation.MESSAGES),
        # ...but nothing Messages has no counterpart for.
        (Operation.EMBEDDING, (Protocol.ANTHROPIC_MESSAGES,), None),
        # Completions reach Gemini and Bedrock through chat, and go as they are
        # to an OpenAI-speaking backend (Azure OpenAI included).
        (Operation.COMPLETION, (Protocol.GEMINI,), Operation.GEMINI),
        (Operation.COMPLETION, (Protocol.BEDROCK,), Operation.BEDROCK),
        (Operation.COMPLETION, OPENAI, Operation.COMPLETION),
        (Operation.COMPLETION, (Protocol.OPENAI_RESPONSES,), None),
        (Operation.MESSAGES, (Protocol.OPENAI_RESPONSES,), None),
    ],
)
def test_wire_for(
    operation: Operation, speaks: tuple[Protocol, ...], wire: Operation | None
) -> None:
    assert wire_for(operation, speaks) is wire


def test_routing_skips_a_backend_that_cannot_take_the_protocol() -> None:
    config = structure(
        {
            "backends": {
                "oai": {"base_url": "http://a/v1"},
                "claude": {"base_url": "http://b/v1", "protocols": ["anthropic_messages"]},
            },
            "models": {"m": {"backends": [{"backend": "oai"}, {"backend": "claude"}]}},
        }
    )
    assert unable(config, Operation.MESSAGES) == {}
    assert unable(config, Operation.CHAT) == {}
    cannot = unable(config, Operation.EMBEDDING)
    assert cannot == {"claude": "speaks anthropic_messages, not openai"}
    choice = decide("m", config.models["m"], "org", None, random.Random(1), unable=cannot)
    assert [c.backend for c in choice.candidates] == ["oai"]
    (skipped,) = choice.skipped
    assert (skipped.backend, skipped.reason) == ("claude", SkipReason.PROTOCOL)


def test_max_tokens_goes_in_the_protocols_own_field() -> None:
    assert with_max_tokens({"input": "x"}, 9, Operation.RESPONSES) == {
        "input": "x",
        "max_output_tokens": 9,
    }
    assert with_max_tokens({"messages": []}, 9, Operation.MESSAGES)["max_tokens"] == 9
    assert with_max_tokens({"max_completion_tokens": 3}, 9)["max_completion_tokens"] == 9


def _event(name: str, data: Mapping[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data)


def _payload(sent: bytes) -> dict[str, object]:
    (line,) = [x for x in sent.split(b"\n") if x.startswith(b"data: ")]
    parsed = orjson.loads(line[6:])
    assert isinstance(parsed, dict)
    return parsed


def test_chat_relay_rewrites_the_model_and_strips_the_usage_it_asked_for() -> None:
    relay = ChatRelay("public", strip_usage=True)
    chunk = {"model": "backend-model", "choices": [{"delta": {"content": "hi"}}]}
    assert _payload(relay.event(b"data: " + orjson.dumps(chunk)))["model"] == "public"
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    assert relay.event(b"data: " + orjson.dumps(usage)) == b""
    assert relay.reported is not None
    assert relay.reported.prompt_tokens == 3
    before = relay.done
    assert relay.event(b"data: [DONE]") == b"data: [DONE]\n\n"
    assert (before, relay.done) == (False, True)
    assert relay.content_events == 1
    assert b'"code":"backend_error"' in relay.broken("gone")


def test_native_messages_relay_passes_events_and_merges_usage() -> None:
    relay = NativeMessagesRelay("public")
    start = {
        "type": "message_start",
        "message": {"id": "msg_1", "model": "backend", "usage": {"input_tokens": 7,
                    "cache_read_input_tokens": 2, "output_tokens": 1}},
    }  # fmt: skip
    sent = relay.event(_event("message_start", start))
    assert sent.startswith(b"event: message_start\n")
    message = _payload(sent)["message"]
    assert isinstance(message, dict)
    assert message["model"] == "public"
    delta: dict[str, object] = {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "hi"}}  # fmt: skip
    raw = _event("content_block_delta", delta)
    assert relay.event(raw) == raw + b"\n\n"
    relay.event(_event("message_delta", {"type": "message_delta", "delta": {},
                                         "usage": {"output_tokens": 5}}))  # fmt: skip
    before = relay.done
    relay.event(_event("message_stop", {"type": "message_stop"}))
    assert (before, relay.done) == (False, True)
    assert relay.content_events == 1
    assert relay.reported is not None
    # input 7 + 2 read from the cache; output from message_delta's cumulative count.
    assert relay.reported.prompt_tokens == 9
    assert relay.reported.cached_tokens == 2
    assert relay.reported.completion_tokens == 5
    error = relay.broken("gone")
    assert error.startswith(b"event: error\n")
    assert _payload(error)["type"] == "error"


def test_native_responses_relay_takes_the_routers_id_and_keeps_the_response() -> None:
    relay = NativeResponsesRelay("public", "resp_router")
    started = {"id": "resp_backend", "model": "b", "status": "in_progress"}
    created = {"type": "response.created", "sequence_number": 0, "response": started}
    response = _payload(relay.event(_event("response.created", created)))["response"]
    assert isinstance(response, dict)
    assert response["id"] == "resp_router"
    assert response["model"] == "public"
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi"}
    relay.event(_event("response.output_text.delta", delta))
    done = {"type": "response.completed", "sequence_number": 2, "response": {
        "id": "resp_backend", "model": "b", "status": "completed",
        "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}}}  # fmt: skip
    relay.event(_event("response.completed", done))
    assert relay.done
    assert relay.response is not None
    assert relay.response["id"] == "resp_router"
    assert relay.reported is not None
    assert relay.reported.completion_tokens == 2
    error = _payload(relay.broken("gone"))
    assert error["type"] == "error"
    assert error["sequence_number"] == 3


def test_relay_for_picks_native_or_translated() -> None:
    def pick(operation: Operation, wire: Operation) -> type:
        return type(
            relay_for(
                operation,
                wire,
                "m",
                strip_usage=False,
                answer_id="x",
                created_at=0,
                request={"model": "m", "input": "hi"},
            )
        )

    assert pick(Operation.CHAT, Operation.CHAT) is ChatRelay
    assert pick(Operation.MESSAGES, Operation.MESSAGES) is NativeMessagesRelay
    assert pick(Operation.RESPONSES, Operation.RESPONSES) is NativeResponsesRelay
    assert pick(Operation.MESSAGES, Operation.CHAT).__name__ == "ChatToMessagesRelay"
    assert pick(Operation.RESPONSES, Operation.CHAT).__name__ == "ChatToResponsesRelay"
