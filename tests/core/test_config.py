"""Config: strict structuring, and every problem reported with its path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.config_codec import ConfigInvalid, structure, unstructure

HASH = "sha256:" + "a" * 64


def minimal() -> dict[str, Any]:
    return {
        "backends": {
            "a": {"base_url": "http://127.0.0.1:9/v1"},
            "b": {"base_url": "https://b/v1"},
        },
        "models": {"gpt-4o": {"backends": [{"backend": "a"}, {"backend": "b", "weight": 2}]}},
        "organizations": {"acme": {"keys": [{"id": "demo", "hash": HASH}]}},
    }


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        structure(data)
    return [str(p) for p in info.value.problems]


def test_minimal_config_loads_with_defaults() -> None:
    config = structure(minimal())
    assert config.server.max_body_bytes == 1_048_576
    assert config.models["gpt-4o"].backends[1].weight == 2.0
    assert config.organizations["acme"].allows("gpt-4o")


def test_the_issue_example_path() -> None:
    data = minimal()
    data["models"]["gpt-4o"]["backends"][1]["weight"] = 0
    assert problems_of(data) == ["models.gpt-4o.backends[1].weight: must be > 0"]


def test_every_problem_is_listed_at_once() -> None:
    data = minimal()
    data["backends"]["a"]["connect_timeout_s"] = "fast"
    data["backends"]["a"]["colour"] = "blue"
    data["backends"]["b"]["base_url"] = "ftp://b"
    data["organizations"]["acme"]["keys"][0]["hash"] = "md5:abc"
    data["surprise"] = 1
    assert sorted(problems_of(data)) == sorted(
        [
            "backends.a.connect_timeout_s: must be a number, not str",
            "backends.a.colour: unknown field",
            "backends.b.base_url: must be an http:// or https:// URL",
            "organizations.acme.keys[0].hash: "
            "must be 'sha256:' followed by 64 lowercase hex digits",
            "surprise: unknown field",
        ]
    )


def test_types_are_strict() -> None:
    data = minimal()
    data["server"] = {"max_body_bytes": True, "request_timeout_s": "3"}
    data["backends"]["a"]["max_in_flight"] = 2.5
    assert sorted(problems_of(data)) == [
        "backends.a.max_in_flight: must be an integer, not float",
        "server.max_body_bytes: must be an integer, not bool",
        "server.request_timeout_s: must be a number, not str",
    ]


def test_missing_required_fields() -> None:
    assert problems_of({"backends": {"a": {}}}) == [
        "backends.a.base_url: required field is missing",
        "models: required field is missing",
    ]


def test_cross_references() -> None:
    data = minimal()
    data["models"]["gpt-4o"]["backends"].append({"backend": "zz"})
    data["organizations"]["acme"]["models"] = ["gpt-4o", "nope"]
    data["organizations"]["other"] = {"keys": [{"id": "demo", "hash": HASH}]}
    assert problems_of(data) == [
        "models.gpt-4o.backends[2].backend: unknown backend 'zz'; defined: a, b",
        "organizations.acme.models: unknown model 'nope'",
        "organizations.other.keys[0].id: key id 'demo' is already used by "
        "organizations.acme.keys[0].id",
    ]


def test_enumerations_and_empty_lists() -> None:
    data = minimal()
    data["server"] = {"transport": "carrier-pigeon"}
    data["models"]["empty"] = {"backends": []}
    assert sorted(problems_of(data)) == [
        "models.empty.backends: must not be empty",
        "server.transport: must be one of aiohttp, httpx, not 'carrier-pigeon'",
    ]


@pytest.mark.parametrize("top", [None, [], "text", 3])
def test_top_level_must_be_a_mapping(top: object) -> None:
    assert problems_of(top) == ["the config must be a mapping at the top level"]


@given(
    weights=st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=4),
    port=st.integers(min_value=0, max_value=65535),
)
def test_round_trip(weights: list[float], port: int) -> None:
    data = copy.deepcopy(minimal())
    data["models"]["gpt-4o"]["backends"] = [{"backend": "a", "weight": w} for w in weights]
    data["listeners"] = {"public": {"host": "0.0.0.0", "port": port}}
    config = structure(data)
    assert structure(unstructure(config)) == config
