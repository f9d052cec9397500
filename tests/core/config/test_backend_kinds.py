"""Backend kinds: each kind's settings are checked, with their paths, all at once."""

from __future__ import annotations

from typing import Any

import pytest

from router_core.config_codec import ConfigInvalid, structure
from router_core.config_enums import BackendKind, Protocol


def config(backend: dict[str, Any], target: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "backends": {"az": backend},
        "models": {"gpt-4o": {"backends": [{"backend": "az", **(target or {})}]}},
    }


def azure(**changes: Any) -> dict[str, Any]:
    backend: dict[str, Any] = {
        "base_url": "https://example.openai.azure.com",
        "kind": "azure_openai",
        "api_key_env": "AZURE_OPENAI_KEY",
        "azure": {"api_version": "2024-10-21", "deployments": {"gpt-4o": "gpt4o-prod"}},
    }
    for key, value in changes.items():
        if key.startswith("azure_"):
            backend["azure"][key.removeprefix("azure_")] = value
        elif value is None:
            backend.pop(key)
        else:
            backend[key] = value
    return backend


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as caught:
        structure(data)
    return {p.path: p.message for p in caught.value.problems}


def test_an_azure_backend() -> None:
    backend = structure(config(azure())).backends["az"]
    assert backend.kind is BackendKind.AZURE_OPENAI
    assert backend.azure is not None
    assert backend.azure.deployment("gpt-4o") == "gpt4o-prod"
    # A model not mapped is its own deployment.
    assert backend.azure.deployment("gpt-4o-mini") == "gpt-4o-mini"


def test_the_default_kind_is_openai_and_takes_no_azure_section() -> None:
    assert structure(config({"base_url": "http://a/v1"})).backends["az"].kind == "openai"
    plain = {"base_url": "http://a/v1", "azure": {"api_version": "2024-10-21"}}
    assert problems(config(plain)) == {"backends.az.azure": "only for kind: azure_openai"}


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"azure": None}, "backends.az.azure", "required for kind: azure_openai"),
        ({"kind": "vertex_ai"}, "backends.az.kind", "must be one of openai, azure_openai"),
        ({"azure_api_version": "latest-ish"}, "backends.az.azure.api_version", "an API version"),
        ({"azure_api_version": 20241021}, "backends.az.azure.api_version", "must be a string"),
        ({"azure_deployments": {"gpt-4o": "a/b"}}, "backends.az.azure.deployments", "deployment"),
        ({"azure_entra_token_env": "1BAD"}, "backends.az.azure.entra_token_env", "variable"),
        ({"azure_region": "westeurope"}, "backends.az.azure.region", "unknown field"),
        ({"api_key_env": None}, "backends.az", "exactly one credential"),
        ({"azure_entra_token_file": "/run/token"}, "backends.az", "exactly one credential"),
        (
            {"protocols": ["openai", "anthropic_messages"]},
            "backends.az.protocols",
            "openai_responses too when listed",
        ),
        ({"protocols": ["openai_responses"]}, "backends.az.protocols", "speaks openai,"),
    ],
)
def test_azure_mistakes(changes: dict[str, Any], path: str, message: str) -> None:
    found = problems(config(azure(**changes)))
    assert path in found, found
    assert message in found[path]


def test_an_unmapped_model_must_be_a_deployment_name() -> None:
    found = problems(config(azure(), {"model": "models/gpt?4o"}))
    assert "not an Azure deployment name" in found["models.gpt-4o"]
    assert "backends.az.azure.deployments" in found["models.gpt-4o"]


def test_an_anthropic_backend_speaks_messages_by_default() -> None:
    data = config({"base_url": "https://api.anthropic.com/v1", "kind": "anthropic"})
    backend = structure(data).backends["az"]
    assert backend.kind is BackendKind.ANTHROPIC
    assert backend.speaks == (Protocol.ANTHROPIC_MESSAGES,)
    assert backend.anthropic_version == "2023-06-01"
    # An openai backend still speaks openai unless told otherwise.
    assert structure(config({"base_url": "http://a/v1"})).backends["az"].speaks == (
        Protocol.OPENAI,
    )


def test_a_gemini_backend_speaks_gemini_and_nobody_else_does() -> None:
    gemini = {"base_url": "https://generativelanguage.googleapis.com/v1beta", "kind": "gemini"}
    assert structure(config(gemini)).backends["az"].speaks == (Protocol.GEMINI,)
    mixed = {**gemini, "protocols": ["gemini", "openai"]}
    assert "speak only it" in problems(config(mixed))["backends.az.protocols"]
    pretender = {"base_url": "http://a/v1", "protocols": ["gemini"]}
    assert "kind: gemini" in problems(config(pretender))["backends.az.protocols"]


def test_an_anthropic_backend_speaks_nothing_else() -> None:
    data = config(
        {"base_url": "https://api.anthropic.com/v1", "kind": "anthropic", "protocols": ["openai"]}
    )
    assert "anthropic_messages only" in problems(data)["backends.az.protocols"]


def test_a_bedrock_backend_needs_its_region_and_no_api_key() -> None:
    bedrock = {"base_url": "https://bedrock-runtime.us-east-1.amazonaws.com", "kind": "bedrock",
               "bedrock": {"region": "us-east-1"}}  # fmt: skip
    backend = structure(config(bedrock)).backends["az"]
    assert backend.speaks == (Protocol.BEDROCK,)
    assert backend.bedrock is not None
    assert backend.bedrock.region == "us-east-1"
    no_region = {k: v for k, v in bedrock.items() if k != "bedrock"}
    assert "required for kind: bedrock" in problems(config(no_region))["backends.az.bedrock"]
    keyed = {**bedrock, "api_key_env": "AWS_KEY"}
    assert "standard AWS credentials" in problems(config(keyed))["backends.az.api_key_env"]
    elsewhere = {"base_url": "http://a/v1", "bedrock": {"region": "us-east-1"}}
    assert problems(config(elsewhere))["backends.az.bedrock"] == "only for kind: bedrock"
    bad = {**bedrock, "bedrock": {"region": "Mars"}}
    assert "AWS region" in problems(config(bad))["backends.az.bedrock.region"]


def test_a_vertex_backend_speaks_its_publishers_protocol() -> None:
    place = {"project": "my-project", "location": "us-east5"}
    vertex: dict[str, Any] = {
        "base_url": "https://us-east5-aiplatform.googleapis.com/v1", "kind": "vertex",
        "vertex": place,
    }  # fmt: skip
    assert structure(config(vertex)).backends["az"].speaks == (Protocol.GEMINI,)
    claude = {**vertex, "vertex": {**place, "publisher": "anthropic"}}
    assert structure(config(claude)).backends["az"].speaks == (Protocol.ANTHROPIC_MESSAGES,)
    keyed = {**vertex, "api_key_env": "K"}
    assert "service account" in problems(config(keyed))["backends.az"]
    bare = {k: v for k, v in vertex.items() if k != "vertex"}
    assert "required for kind: vertex" in problems(config(bare))["backends.az.vertex"]
    bad = {**vertex, "vertex": {"project": "X", "location": "moon"}}
    found = problems(config(bad))
    assert {"backends.az.vertex.project", "backends.az.vertex.location"} <= set(found)
