"""Embeddings routed to Gemini, Vertex AI and Bedrock, against the mock playing each.

One router holds one backend of each provider kind, all on the keyed mock
(`mock_b`): Gemini with its API key, Vertex AI with a service account whose
public half the mock was given, Bedrock SigV4-signed with the mock's key as
the secret. The official openai SDK is the client (it asks for base64 and
decodes it, as against OpenAI). Each test checks what reached the mock's
provider path, what came back, and the usage record.
"""

from __future__ import annotations

import base64
import copy
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.mock_backend.embeddings import (
    COHERE_DIMENSIONS,
    GEMINI_DIMENSIONS,
    typed,
    vector,
)
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, BACKEND_SECRET_ENV
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers.support import oai, root, served
from tests.system.providers.test_bedrock import aws_env
from tests.system.providers.test_vertex import service_account

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
GEMINI_MODEL = "gemini-embedding-001"
VERTEX_MODEL = "text-embedding-005"
EMBED = f"/v1beta/models/{GEMINI_MODEL}:embedContent"
BATCH = f"/v1beta/models/{GEMINI_MODEL}:batchEmbedContents"
PREDICT = (
    f"/v1/projects/my-project/locations/us-central1/publishers/google/models/{VERTEX_MODEL}:predict"
)
INVOKE_TITAN = f"/model/{TITAN}/invoke"
INVOKE_COHERE = f"/model/{COHERE}/invoke"
LOCAL = "/v1/embeddings"


def embeddings_config(config_data: dict[str, Any], mocks: Mocks, key: Path) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    timeouts = {"connect_timeout_s": 1, "read_timeout_s": 5}
    provider = root(mocks[1])
    data["backends"] |= {
        "gemini": {"kind": "gemini", "base_url": provider + "/v1beta",
                   "api_key_env": BACKEND_SECRET_ENV, **timeouts},
        "vertex": {"kind": "vertex", "base_url": provider + "/v1", **timeouts, "vertex": {
            "project": "my-project", "location": "us-central1", "credentials_file": str(key)}},
        "bedrock": {"kind": "bedrock", "base_url": provider, "bedrock": {"region": "us-east-1"},
                    **timeouts},
    }  # fmt: skip
    local = {"backend": "mock-a", "model": "mock-embed", "tier": 1}
    data["models"] |= {
        "gemini-embed": {"backends": [{"backend": "gemini", "model": GEMINI_MODEL}, local]},
        "vertex-embed": {"backends": [{"backend": "vertex", "model": VERTEX_MODEL}, local]},
        "titan": {"backends": [{"backend": "bedrock", "model": TITAN}, local]},
        "cohere": {"backends": [{"backend": "bedrock", "model": COHERE}, local]},
        "llama-embed": {"backends": [{"backend": "bedrock", "model": "meta.llama3-8b-v1:0"}]},
    }
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def router(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> RouterProcess:
    key, public = service_account(tmp_path, root(mocks[1]) + "/token")
    mocks[1].configure(google_public_key=public)
    return start_router(embeddings_config(config_data, mocks, key), env=aws_env(tmp_path))


def record(tmp_path: Path) -> dict[str, Any]:
    (only,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(only) == []
    assert BACKEND_SECRET not in str(only)
    return only


def test_gemini_one_input_is_embed_content(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    with oai(router) as client:
        answer = client.embeddings.create(model="gemini-embed", input="hello there world")
    (item,) = answer.data
    assert item.embedding == pytest.approx(vector("hello there world", GEMINI_DIMENSIONS))
    assert answer.model == "gemini-embed"
    assert served(mocks[1], EMBED) == 1
    # Gemini counts no tokens: estimated from the text (17 characters), and said so.
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (5, 5)
    usage = record(tmp_path)
    assert (usage["operation"], usage["backend"], usage["backend_model"]) == (
        "embedding", "gemini", GEMINI_MODEL,
    )  # fmt: skip
    assert (usage["usage"]["prompt_tokens"], usage["usage"]["estimated"]) == (5, True)


def test_gemini_list_is_one_batch_with_dimensions(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    texts = ["alpha", "beta gamma", "delta"]
    with oai(router) as client:
        answer = client.embeddings.create(model="gemini-embed", input=texts, dimensions=16)
    assert [d.index for d in answer.data] == [0, 1, 2]
    for item, text in zip(answer.data, texts, strict=True):
        assert item.embedding == pytest.approx(vector(text, 16))
    assert (served(mocks[1], BATCH), served(mocks[1], EMBED)) == (1, 0)


def test_floats_come_back_as_floats_when_asked(router: RouterProcess) -> None:
    body = {"model": "gemini-embed", "input": "plain", "encoding_format": "float"}
    reply = httpx.post(
        router.url + "/v1/embeddings", json=body,
        headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30,
    )  # fmt: skip
    assert reply.status_code == 200
    assert reply.json()["data"][0]["embedding"] == pytest.approx(vector("plain", GEMINI_DIMENSIONS))
    base = httpx.post(
        router.url + "/v1/embeddings", json={**body, "encoding_format": "base64", "dimensions": 4},
        headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30,
    )  # fmt: skip
    packed = base64.b64decode(base.json()["data"][0]["embedding"])
    assert list(struct.unpack("<4f", packed)) == pytest.approx(vector("plain", 4), abs=1e-6)


def test_vertex_predict_with_reported_token_counts(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    texts = ["one two three", "four"]
    with oai(router) as client:
        answer = client.embeddings.create(model="vertex-embed", input=texts, dimensions=32)
    for item, text in zip(answer.data, texts, strict=True):
        assert item.embedding == pytest.approx(vector(text, 32))
    assert served(mocks[1], PREDICT) == 1
    assert mocks[1].stats()["tokens_issued"] == 1
    assert answer.usage.prompt_tokens == 4  # the mock's statistics.token_count: words
    usage = record(tmp_path)
    assert (usage["backend"], usage["usage"]["prompt_tokens"], usage["usage"]["estimated"]) == (
        "vertex", 4, False,
    )  # fmt: skip


def test_titan_list_fans_out_one_signed_call_per_text(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    texts = [f"text number {i}" for i in range(7)]
    with oai(router) as client:
        answer = client.embeddings.create(model="titan", input=texts, dimensions=256)
    assert len(answer.data) == 7
    for item, text in zip(answer.data, texts, strict=True):
        assert item.embedding == pytest.approx(vector(text, 256))
    assert served(mocks[1], INVOKE_TITAN) == 7
    assert mocks[1].stats()["refused_signatures"] == 0
    assert answer.usage.prompt_tokens == 21  # inputTextTokenCount, summed
    usage = record(tmp_path)
    assert (usage["backend_model"], usage["usage"]["prompt_tokens"]) == (TITAN, 21)
    assert usage["usage"]["estimated"] is False


def test_cohere_takes_the_list_in_one_call(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    with oai(router) as client:
        answer = client.embeddings.create(model="cohere", input=["first", "second one"])
    assert answer.data[1].embedding == pytest.approx(vector("second one", COHERE_DIMENSIONS))
    assert served(mocks[1], INVOKE_COHERE) == 1
    assert record(tmp_path)["usage"]["estimated"] is True


@pytest.mark.parametrize(
    ("model", "path", "sent", "dimensions"),
    [
        ("gemini-embed", BATCH, "RETRIEVAL_QUERY", GEMINI_DIMENSIONS),
        ("vertex-embed", PREDICT, "RETRIEVAL_QUERY", GEMINI_DIMENSIONS),
        ("cohere", INVOKE_COHERE, "search_query", COHERE_DIMENSIONS),
    ],
)
def test_input_type_reaches_each_provider_as_its_own_setting(
    router: RouterProcess, mocks: Mocks, model: str, path: str, sent: str, dimensions: int
) -> None:
    with oai(router) as client:
        answer = client.embeddings.create(
            model=model, input=["where is it"], extra_body={"input_type": "search_query"}
        )
    # The mock's vector is that of TYPE:text when the provider got the type.
    assert answer.data[0].embedding == pytest.approx(vector(typed("where is it", sent), dimensions))
    assert served(mocks[1], path) == 1


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("gemini-embed", {"input": [[1, 2, 3]]}, "input"),
        ("titan", {"input": "hi", "dimensions": 300}, "dimensions"),
        ("cohere", {"input": "hi", "dimensions": 256}, "dimensions"),
        ("vertex-embed", {"input": "hi", "extra_body": {"truncate": "END"}}, "truncate"),
        ("llama-embed", {"input": "hi"}, "model"),
        ("titan", {"input": "hi", "extra_body": {"input_type": "search_query"}}, "input_type"),
        ("cohere", {"input": "hi", "extra_body": {"input_type": "code"}}, "input_type"),
    ],
)
def test_what_a_provider_cannot_take_is_a_400_naming_it(
    router: RouterProcess, mocks: Mocks, model: str, extra: dict[str, Any], param: str
) -> None:
    with oai(router) as client, pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=model, **extra)
    assert isinstance(caught.value.body, dict)
    assert (caught.value.body["code"], caught.value.body["param"]) == (
        "unsupported_feature", param,
    )  # fmt: skip
    sent = [EMBED, BATCH, PREDICT, INVOKE_TITAN, INVOKE_COHERE]
    assert [served(mocks[1], path) for path in sent] == [0] * 5  # refused before any call


@pytest.mark.parametrize(
    ("model", "path"),
    [("gemini-embed", BATCH), ("vertex-embed", PREDICT), ("titan", INVOKE_TITAN),
     ("cohere", INVOKE_COHERE)],
)  # fmt: skip
def test_throttled_provider_fails_over_to_the_next_backend(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, model: str, path: str
) -> None:
    mock_a, provider = mocks
    provider.configure(error_rate=1.0, error_status=429, retry_after_s=30)
    with oai(router) as client:
        answer = client.embeddings.create(model=model, input=["a", "b"])
    assert len(answer.data) == 2
    assert served(provider, path) >= 1
    assert served(mock_a, LOCAL) == 1
    assert record(tmp_path)["backend"] == "mock-a"


def test_a_provider_error_mid_fan_out_fails_the_attempt_over(
    router: RouterProcess, mocks: Mocks
) -> None:
    mock_a, provider = mocks
    provider.configure(error_rate=0.5, error_status=503, seed=3)
    with oai(router) as client:
        answer = client.embeddings.create(model="titan", input=[str(i) for i in range(12)])
    # Some call failed: the whole attempt went to the next backend, whole.
    assert len(answer.data) == 12
    assert served(mock_a, LOCAL) == 1


def test_a_wrong_aws_secret_is_refused_by_the_signature_check(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    key, public = service_account(tmp_path, root(mocks[1]) + "/token")
    mocks[1].configure(google_public_key=public)
    config = embeddings_config(config_data, mocks, key)
    router = start_router(config, env=aws_env(tmp_path, secret="not-the-secret"))
    with oai(router) as client:
        answer = client.embeddings.create(model="titan", input="x")
    assert len(answer.data) == 1
    assert mocks[1].stats()["refused_signatures"] >= 1
    assert served(mocks[0], LOCAL) == 1


def test_the_platform_contract_embeds_through_a_provider_too(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    body = {
        "request_id": "6f1c2a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f",
        "model": "titan",
        "operation": "embedding",
        "payload": {"input": ["a b", "c"]},
    }
    reply = httpx.post(
        router.url + "/v1/inference", json=body,
        headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30,
    )  # fmt: skip
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["backend"] == "bedrock"
    assert [d["embedding"] for d in answer["output"]["data"]] == [
        pytest.approx(vector("a b", 1024)), pytest.approx(vector("c", 1024)),
    ]  # fmt: skip
    assert answer["usage"]["prompt_tokens"] == 3
    assert served(mocks[1], INVOKE_TITAN) == 2
    assert record(tmp_path)["client_request_id"] == body["request_id"]
