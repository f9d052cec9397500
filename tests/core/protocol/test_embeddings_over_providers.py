"""OpenAI embeddings to Gemini, Vertex AI and Bedrock (Titan, Cohere): the calls a
request is cut into, and their answers read back as one OpenAI answer."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.accounting.records import estimated_counts
from router_core.config import Backend
from router_core.config_enums import BackendKind, Protocol
from router_core.problems import ClientError, DependencyError
from router_core.protocols import embeddings_over_providers as ep
from router_core.protocols.wire import answer_counts, client_answer, wire_for
from router_core.requests import InferenceRequest, Operation

F = ep.Family
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-multilingual-v3"
MODELS = {F.GEMINI: "gemini-embedding-001", F.VERTEX: "text-embedding-005", F.TITAN: TITAN,
          F.COHERE: COHERE}  # fmt: skip
texts = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=260)
families = st.sampled_from(list(F))


def sent_texts(family: ep.Family, call: ep.EmbedCall) -> list[str]:
    """The texts one call carries, read as its provider would."""
    body = call.body
    if family is F.GEMINI:
        if call.method == "embedContent":
            return [body["content"]["parts"][0]["text"]]
        return [r["content"]["parts"][0]["text"] for r in body["requests"]]
    if family is F.VERTEX:
        return [i["content"] for i in body["instances"]]
    if family is F.TITAN:
        return [body["inputText"]]
    return list(body["texts"])


def fake_vector(text: str, size: int = 3) -> list[float]:
    return [float(len(text)), float(ord(text[0])), float(size)][:size] + [0.5] * (size - 3)


def provider_answer(family: ep.Family, call: ep.EmbedCall) -> dict[str, Any]:
    """What a faithful provider answers `call` (vectors from the text, words as tokens)."""
    said = sent_texts(family, call)
    if family is F.GEMINI:
        if call.method == "embedContent":
            return {"embedding": {"values": fake_vector(said[0])}}
        return {"embeddings": [{"values": fake_vector(t)} for t in said]}
    if family is F.VERTEX:
        return {"predictions": [{"embeddings": {"values": fake_vector(t), "statistics": {
            "token_count": len(t.split()), "truncated": False}}} for t in said]}  # fmt: skip
    if family is F.TITAN:
        return {"embedding": fake_vector(said[0]), "inputTextTokenCount": len(said[0].split())}
    return {"embeddings": [fake_vector(t) for t in said], "id": "x", "texts": said,
            "response_type": "embeddings_floats"}  # fmt: skip


def run(
    family: ep.Family, body: Mapping[str, Any]
) -> tuple[Sequence[ep.EmbedCall], dict[str, Any]]:
    calls = ep.calls(body, family, MODELS[family])
    return calls, ep.combined(family, [provider_answer(family, c) for c in calls])


@given(family=families, inputs=texts)
def test_calls_carry_every_input_once_in_order_within_the_providers_limits(
    family: ep.Family, inputs: list[str]
) -> None:
    calls = ep.calls({"model": "m", "input": inputs}, family, MODELS[family])
    assert [t for c in calls for t in sent_texts(family, c)] == inputs
    limit = {F.GEMINI: 100, F.VERTEX: 250, F.TITAN: 1, F.COHERE: 96}[family]
    assert all(len(sent_texts(family, c)) <= limit for c in calls)
    # As few calls as the limit allows: a list is never cut finer than it must be.
    assert len(calls) == -(-len(inputs) // limit)


@given(family=families, inputs=texts, as_base64=st.booleans())
def test_answers_come_back_as_one_openai_list_in_input_order(
    family: ep.Family, inputs: list[str], as_base64: bool
) -> None:
    body: dict[str, Any] = {"model": "pub", "input": inputs}
    if as_base64:
        body["encoding_format"] = "base64"
    _, combined = run(family, body)
    answer = ep.to_openai(body, combined, public_model="pub")
    assert (answer["object"], answer["model"]) == ("list", "pub")
    assert [d["index"] for d in answer["data"]] == list(range(len(inputs)))
    for item, text in zip(answer["data"], inputs, strict=True):
        vector = item["embedding"]
        if as_base64:
            packed = base64.b64decode(vector)
            vector = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        assert vector == fake_vector(text)


@given(family=families, inputs=texts)
def test_usage_is_reported_where_the_provider_counts_else_estimated(
    family: ep.Family, inputs: list[str]
) -> None:
    body = {"model": "pub", "input": inputs}
    _, combined = run(family, body)
    counts = ep.counts(body, combined)
    if family in (F.TITAN, F.VERTEX):
        words = sum(len(t.split()) for t in inputs)
        assert (counts.prompt_tokens, counts.total_tokens, counts.estimated) == (
            words, words, False,
        )  # fmt: skip
    else:
        assert counts == estimated_counts(body, 0)
        assert counts.estimated
    assert ep.to_openai(body, combined, public_model="p")["usage"] == {
        "prompt_tokens": counts.prompt_tokens, "total_tokens": counts.total_tokens,
    }  # fmt: skip


def test_one_string_to_gemini_is_embed_content_and_a_list_a_batch() -> None:
    (one,) = ep.calls({"input": "hi", "dimensions": 64}, F.GEMINI, "gemini-embedding-001")
    assert (one.method, one.body) == (
        "embedContent", {"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 64},
    )  # fmt: skip
    (batch,) = ep.calls({"input": ["a", "b"]}, F.GEMINI, "gemini-embedding-001")
    assert batch.method == "batchEmbedContents"
    assert batch.body["requests"][1] == {
        "model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]},
    }  # fmt: skip


def test_each_family_writes_its_own_body() -> None:
    (vertex,) = ep.calls({"input": ["a", "b"], "dimensions": 8}, F.VERTEX, "text-embedding-005")
    assert (vertex.method, vertex.body) == (
        "predict",
        {"instances": [{"content": "a"}, {"content": "b"}],
         "parameters": {"outputDimensionality": 8}},
    )  # fmt: skip
    # gemini-embedding models on Vertex take one instance a call.
    assert len(ep.calls({"input": ["a", "b"]}, F.VERTEX, "gemini-embedding-001")) == 2
    (titan,) = ep.calls({"input": "a", "dimensions": 512}, F.TITAN, TITAN)
    assert (titan.method, titan.body) == (
        "invoke", {"inputText": "a", "normalize": True, "dimensions": 512},
    )  # fmt: skip
    (v1,) = ep.calls({"input": "a"}, F.TITAN, "amazon.titan-embed-text-v1")
    assert v1.body == {"inputText": "a"}
    (cohere,) = ep.calls({"input": ["a"], "user": "u"}, F.COHERE, COHERE)
    assert cohere.body == {"texts": ["a"], "input_type": "search_document"}


@pytest.mark.parametrize(
    ("model", "family"),
    [
        (TITAN, F.TITAN),
        ("us.amazon.titan-embed-text-v2:0", F.TITAN),
        ("arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-english-v3", F.COHERE),
        ("eu.cohere.embed-multilingual-v3", F.COHERE),
    ],
)
def test_the_bedrock_family_is_read_from_the_model_id(model: str, family: ep.Family) -> None:
    backend = Backend(base_url="https://bedrock.test", kind=BackendKind.BEDROCK)
    assert ep.family_of(backend, model) is family


def test_an_unknown_bedrock_family_is_a_400_naming_the_model() -> None:
    backend = Backend(base_url="https://bedrock.test", kind=BackendKind.BEDROCK)
    with pytest.raises(ClientError) as caught:
        ep.family_of(backend, "meta.llama3-8b-instruct-v1:0")
    assert caught.value.problem.code == "unsupported_feature"
    assert caught.value.param == "model"
    assert "meta.llama3-8b-instruct-v1:0" in caught.value.detail


@pytest.mark.parametrize(
    ("family", "body", "param"),
    [
        (F.GEMINI, {"input": [1, 2, 3]}, "input"),
        (F.VERTEX, {"input": [[1, 2], [3]]}, "input"),
        (F.TITAN, {"input": "a", "dimensions": 300}, "dimensions"),
        (F.COHERE, {"input": "a", "dimensions": 256}, "dimensions"),
        (F.GEMINI, {"input": "a", "task_type": "RETRIEVAL_QUERY"}, "task_type"),
    ],
)
def test_what_a_family_cannot_take_is_refused_by_name(
    family: ep.Family, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(ClientError) as caught:
        ep.calls({"model": "m", **body}, family, MODELS[family])
    assert (caught.value.problem.code, caught.value.param) == ("unsupported_feature", param)


def test_dimensions_on_titan_v1_are_refused() -> None:
    with pytest.raises(ClientError) as caught:
        ep.calls({"input": "a", "dimensions": 256}, F.TITAN, "amazon.titan-embed-text-v1")
    assert caught.value.param == "dimensions"


@pytest.mark.parametrize(
    "answers",
    [
        [{"embedding": {"values": "nope"}}],
        [None],
        [{"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}],  # two vectors for one input
        [{"error": {"code": 500}}],
    ],
)
def test_a_malformed_answer_is_a_backend_error(answers: list[object]) -> None:
    body = {"input": ["only one"]}
    with pytest.raises(DependencyError) as caught:
        ep.to_openai(body, ep.combined(F.GEMINI, answers), public_model="p")
    assert caught.value.problem.code == "backend_error"
    assert ep.counts(body, ep.combined(F.GEMINI, answers)).estimated


def test_the_wire_takes_embeddings_to_providers_and_reads_them_back() -> None:
    for speaks in ((Protocol.GEMINI,), (Protocol.BEDROCK,)):
        assert wire_for(Operation.EMBEDDING, speaks) is Operation.PROVIDER_EMBEDDING
    request = InferenceRequest(Operation.EMBEDDING, "pub", {"model": "pub", "input": "a b"})
    _, combined = run(F.TITAN, request.body)
    answer = client_answer(
        request, Operation.PROVIDER_EMBEDDING, combined, public_model="pub", answer_id="x",
        created_at=0,
    )  # fmt: skip
    assert answer["data"][0]["embedding"] == fake_vector("a b")
    assert answer_counts(request.body, Operation.PROVIDER_EMBEDDING, combined).prompt_tokens == 2


def test_input_type_becomes_each_familys_own_setting() -> None:
    (one,) = ep.calls(
        {"input": "q", "input_type": "search_query"}, F.GEMINI, "gemini-embedding-001"
    )
    assert one.body["taskType"] == "RETRIEVAL_QUERY"
    (batch,) = ep.calls(
        {"input": ["a", "b"], "input_type": "semantic_similarity"}, F.GEMINI, "gemini-embedding-001"
    )
    assert [r["taskType"] for r in batch.body["requests"]] == ["SEMANTIC_SIMILARITY"] * 2
    (vertex,) = ep.calls(
        {"input": ["a"], "input_type": "search_document"}, F.VERTEX, "text-embedding-005"
    )
    assert vertex.body["instances"] == [{"content": "a", "task_type": "RETRIEVAL_DOCUMENT"}]
    (cohere,) = ep.calls({"input": ["a"], "input_type": "clustering"}, F.COHERE, COHERE)
    assert cohere.body == {"texts": ["a"], "input_type": "clustering"}
    # Unset: the provider's default (Cohere requires one: search_document).
    (plain,) = ep.calls({"input": "q"}, F.GEMINI, "gemini-embedding-001")
    assert "taskType" not in plain.body


@pytest.mark.parametrize(
    ("family", "model", "value", "names"),
    [
        (F.COHERE, COHERE, "semantic_similarity", "search_query, search_document"),
        (F.GEMINI, "gemini-embedding-001", "RETRIEVAL_QUERY", "code_retrieval_query"),
        (F.VERTEX, "text-embedding-005", 3, "fact_verification"),
        (F.TITAN, TITAN, "search_query", "input_type"),
    ],
)
def test_an_input_type_the_family_has_not_is_a_400_naming_it(
    family: ep.Family, model: str, value: object, names: str
) -> None:
    with pytest.raises(ClientError) as caught:
        ep.calls({"input": "a", "input_type": value}, family, model)
    assert caught.value.problem.code == "unsupported_feature"
    assert caught.value.problem.status == 400
    assert caught.value.param == "input_type"
    assert names in caught.value.detail
