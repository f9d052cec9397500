"""Legacy completions to a backend reached through chat: the request refused
or carried faithfully to each provider's wire, and the answer (whole and
streamed) back as a text completion."""

from __future__ import annotations

from typing import Any

import openai.types as oai_types
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_core.problems import ClientError
from router_core.protocols import chat_over_bedrock, chat_over_gemini, messages
from router_core.protocols import completions as cp
from router_core.protocols.relay import ChatToCompletionsRelay, relay_for
from router_core.protocols.wire import client_answer, to_backend
from router_core.requests import InferenceRequest, Operation

from tests.core.protocol.strategies import chat_answer as _chat_answer
from tests.core.protocol.strategies import chat_chunks, completions, text

BASE = {"model": "pub", "prompt": "hi"}
PROVIDER_WIRES = (Operation.MESSAGES, Operation.GEMINI, Operation.BEDROCK)


def _request(body: dict[str, Any]) -> InferenceRequest:
    return InferenceRequest(Operation.COMPLETION, "pub", body)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1], [2]]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [""]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"logprobs": 0}, "logprobs"),
        ({"logprobs": 5}, "logprobs"),
        ({"best_of": 2}, "best_of"),
        ({"best_of": True}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"top_k": 3}, "top_k"),
    ],
)
def test_what_chat_cannot_carry_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    for wire in PROVIDER_WIRES:
        with pytest.raises(ClientError) as caught:
            to_backend(_request({**BASE, **extra}), wire)
        assert caught.value.problem.code == "unsupported_feature"
        assert caught.value.problem.status == 400
        assert caught.value.param == param
        assert param in str(caught.value.detail)


def test_neutral_values_and_a_single_prompt_in_a_list_are_carried() -> None:
    body = {**BASE, "prompt": ["only"], "echo": False, "logprobs": None, "best_of": 1,
            "suffix": "", "n": 1}  # fmt: skip
    assert cp.to_chat(body) == {
        "model": "pub", "n": 1, "max_tokens": cp.DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "only"}],
    }  # fmt: skip


def test_what_the_provider_cannot_express_is_refused_by_its_codec() -> None:
    """Fields chat has go on to the provider's codec, which refuses as for chat."""
    with pytest.raises(ClientError) as caught:
        to_backend(_request({**BASE, "n": 2}), Operation.GEMINI)
    assert (caught.value.problem.code, caught.value.param) == ("unsupported_feature", "n")
    with pytest.raises(ClientError) as caught:
        to_backend(_request({**BASE, "seed": 3}), Operation.BEDROCK)
    assert caught.value.param == "seed"


requests = st.fixed_dictionaries(
    {"model": st.just("pub"), "prompt": text | st.lists(text, min_size=1, max_size=1)},
    optional={
        "max_tokens": st.integers(1, 4096),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "stop": text | st.lists(text, min_size=1, max_size=4),
        "stream": st.booleans(),
        "echo": st.just(False),
        "suffix": st.sampled_from([None, ""]),
        "best_of": st.sampled_from([None, 1]),
    },
)


def _prompt(body: dict[str, Any]) -> str:
    prompt = body["prompt"]
    return prompt if isinstance(prompt, str) else prompt[0]


@settings(max_examples=200, deadline=None)
@given(requests)
def test_a_request_reaches_every_provider_wire_and_reads_back(body: dict[str, Any]) -> None:
    """Completions to Messages (and back to chat, as an Anthropic front reads
    it), to Gemini and to Bedrock: the prompt is the one user turn, and the
    limit, sampling and stop sequences arrive."""
    max_tokens = body.get("max_tokens", cp.DEFAULT_MAX_TOKENS)
    stop = body.get("stop")
    stops = None if stop is None else [stop] if isinstance(stop, str) else stop

    sent = to_backend(_request(body), Operation.MESSAGES)
    back = messages.to_chat(sent)
    assert back["messages"] == [{"role": "user", "content": _prompt(body)}]
    assert back["max_tokens"] == max_tokens
    assert (back.get("temperature"), back.get("top_p")) == (
        body.get("temperature"), body.get("top_p")
    )  # fmt: skip
    assert sent.get("stop_sequences") == stops

    gemini = to_backend(_request(body), Operation.GEMINI)
    assert gemini["contents"] == [{"role": "user", "parts": [{"text": _prompt(body)}]}]
    assert gemini["generationConfig"]["maxOutputTokens"] == max_tokens
    assert gemini["generationConfig"].get("stopSequences") == stops
    assert gemini == chat_over_gemini.to_gemini(cp.to_chat(body))

    converse = to_backend(_request(body), Operation.BEDROCK)
    assert converse["messages"] == [{"role": "user", "content": [{"text": _prompt(body)}]}]
    assert converse["inferenceConfig"]["maxTokens"] == max_tokens
    assert converse == chat_over_bedrock.to_converse(cp.to_chat(body))


def chat_answer(c: dict[str, Any]) -> dict[str, Any]:
    """The chat answer, with the total every provider's codec writes."""
    answer = _chat_answer(c)
    usage = answer["usage"]
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return answer


def _expected(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    finish = "stop" if c["finish"] == "tool_calls" else c["finish"]
    return c["content"] or "", finish, chat_answer(c)["usage"]


@settings(max_examples=200, deadline=None)
@given(completions)
def test_an_answer_reads_as_a_text_completion(c: dict[str, Any]) -> None:
    answer = cp.from_chat(chat_answer(c), model="pub", completion_id="cmpl-1", created=5)
    oai_types.Completion.model_validate(answer)
    assert (answer["id"], answer["object"], answer["model"], answer["created"]) == (
        "cmpl-1", "text_completion", "pub", 5
    )  # fmt: skip
    (choice,) = answer["choices"]
    assert (choice["text"], choice["finish_reason"], answer["usage"]) == _expected(c)


def _frames(out: bytes) -> list[bytes]:
    return [f for f in out.split(b"\n\n") if f]


@settings(max_examples=200, deadline=None)
@given(completions, st.integers(1, 7), st.booleans())
def test_a_stream_reads_as_completion_chunks_one_by_one(
    c: dict[str, Any], cut: int, strip_usage: bool
) -> None:
    relay = ChatToCompletionsRelay("pub", "cmpl-1", 5, strip_usage=strip_usage)
    chunks = [{"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", **k}
              for k in chat_chunks(c, cut)]  # fmt: skip
    chunks[-1]["usage"] = chat_answer(c)["usage"]
    out = b"".join(relay.event(b"data: " + orjson.dumps(k)) for k in chunks)
    before_done = relay.done
    out += relay.event(b"data: [DONE]")
    assert (before_done, relay.done) == (False, True)
    frames = _frames(out)
    assert frames[-1] == b"data: [DONE]"
    relayed = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    for chunk in relayed:
        # The SDK reads each chunk as a Completion, whose type wants a finish
        # reason that OpenAI's own streams leave null until the last chunk.
        choices = [{**ch, "finish_reason": ch["finish_reason"] or "stop"}
                   for ch in chunk["choices"]]  # fmt: skip
        oai_types.Completion.model_validate({**chunk, "choices": choices})
        assert (chunk["id"], chunk["object"]) == ("cmpl-1", "text_completion")
        assert chunk["model"] == "pub"
    texts = [choice["text"] for k in relayed for choice in k["choices"]]
    assert all(texts[:-1])  # every chunk but the finish carries text
    finishes = [choice["finish_reason"] for k in relayed for choice in k["choices"]]
    usages = [k["usage"] for k in relayed if not k["choices"]]
    text_, finish, usage = _expected(c)
    assert ("".join(texts), finishes[-1], finishes[:-1].count(None)) == (
        text_, finish, len(finishes) - 1
    )  # fmt: skip
    assert usages == ([] if strip_usage else [usage])
    assert relay.reported is not None
    assert relay.reported.completion_tokens == c["completion"]


def _gemini_chunk(text_: str, finish: str | None = None) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text_}]}}
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if finish is not None:
        candidate["finishReason"] = finish
        chunk["usageMetadata"] = {"promptTokenCount": 2, "candidatesTokenCount": 3,
                                  "totalTokenCount": 5}  # fmt: skip
    return b"data: " + orjson.dumps(chunk)


@pytest.mark.parametrize("strip_usage", [True, False])
def test_a_provider_stream_goes_through_chat_to_completion_chunks(strip_usage: bool) -> None:
    relay = relay_for(Operation.COMPLETION, Operation.GEMINI, "pub", strip_usage=strip_usage,
                      answer_id="cmpl-9", created_at=5, request=BASE)  # fmt: skip
    out = relay.event(_gemini_chunk("hel")) + relay.event(_gemini_chunk("lo", "MAX_TOKENS"))
    assert relay.done
    frames = _frames(out)
    assert frames[-1] == b"data: [DONE]"
    relayed = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    assert "".join(ch["text"] for k in relayed for ch in k["choices"]) == "hello"
    assert [ch["finish_reason"] for k in relayed for ch in k["choices"]][-1] == "length"
    assert [k["usage"]["completion_tokens"] for k in relayed if not k["choices"]] == (
        [] if strip_usage else [3]
    )
    assert relay.reported is not None
    assert relay.reported.completion_tokens == 3


def test_a_broken_provider_stream_ends_with_openais_error_event() -> None:
    relay = relay_for(Operation.COMPLETION, Operation.MESSAGES, "pub", strip_usage=True,
                      answer_id="cmpl-9", created_at=5, request=BASE)  # fmt: skip
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = relay.event(b"event: error\ndata: " + orjson.dumps(error))
    (frame,) = _frames(out)
    assert orjson.loads(frame.removeprefix(b"data: "))["error"]["message"] == "Overloaded"
    assert not relay.done
    broken = orjson.loads(_frames(relay.broken("cut off"))[0].removeprefix(b"data: "))
    assert broken["error"]["message"] == "cut off"


def test_a_whole_provider_answer_reads_back_as_a_text_completion() -> None:
    message = {"id": "msg_x", "type": "message", "role": "assistant", "model": "m",
               "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 2, "output_tokens": 1}}  # fmt: skip
    answer = client_answer(_request(BASE), Operation.MESSAGES, message, public_model="pub",
                           answer_id="cmpl-2", created_at=7)  # fmt: skip
    oai_types.Completion.model_validate(answer)
    assert (answer["id"], answer["object"], answer["choices"][0]["text"]) == (
        "cmpl-2", "text_completion", "hello"
    )  # fmt: skip
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 1
