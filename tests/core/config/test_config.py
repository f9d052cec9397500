"""Config: strict structuring, and every problem reported with its path."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from enum import StrEnum
from types import UnionType
from typing import Any, Union, cast, get_args, get_origin, get_type_hints

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core import config_enums
from router_core.config import ObservabilitySettings, RouterConfig
from router_core.config_codec import ConfigInvalid, structure, unstructure
from router_core.config_enums import BackendKind, Protocol, TracingExporter

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


def test_mistakes_of_every_kind_are_reported_in_one_pass() -> None:
    """The issue's case: a new user's file took three rounds of fixes because
    each problem hid the next. Structure problems, the own checks of objects
    whose parts failed, and cross-references now come in one report."""
    data = minimal()
    data["version"] = 99
    data["models"]["gpt-4o"]["strategy"] = "fastest"
    data["models"]["gpt-4o"]["backends"].append({"backend": "azure"})
    data["models"]["gpt-4o"]["hedge_after_ms"] = 0
    # A backend with a bad URL is still defined: naming it is no second problem.
    data["backends"]["b"]["base_url"] = "ftp://b"
    data["organizations"]["acme"]["models"] = ["gpt-4o", "gpt-5"]
    data["organizations"]["acme"]["limits"] = {"requests": {"rate": 5, "per": "mintue"}}
    data["observability"] = {"tracing": True, "tracing_exporter": "consle"}
    data["server"] = {"colour": "blue"}
    assert sorted(problems_of(data)) == [
        "backends.b.base_url: must be an http:// or https:// URL",
        "models.gpt-4o.backends[2].backend: unknown backend 'azure'; defined: a, b",
        "models.gpt-4o.hedge_after_ms: must be > 0",
        "models.gpt-4o.strategy: must be one of weighted, least_latency, least_load, not 'fastest'",
        "observability.tracing_exporter: must be one of otlp, console, memory, "
        "not 'consle' (did you mean 'console'?)",
        "organizations.acme.limits.requests.per: must be one of second, minute, hour, "
        "not 'mintue' (did you mean 'minute'?)",
        "organizations.acme.models: unknown model 'gpt-5'",
        "server.colour: unknown field",
        "version: 99 is not supported; this router reads version 1 "
        "(write version: 1, or run a router that reads version 99)",
    ]


def test_what_was_cut_to_check_the_rest_is_not_reported() -> None:
    """A bad value is left out to check the rest; its absence (a required
    field now missing, a list now empty) is not a second problem."""
    data = minimal()
    data["backends"] = {"a": {"base_url": 5}}
    data["models"]["gpt-4o"]["backends"] = [{"backend": "a", "weight": "heavy"}]
    data["organizations"]["acme"]["keys"][0]["id"] = "x"
    data["models"]["gpt-4o"]["routes"] = [{"keys": ["demo"], "backends": [{"backend": "a"}]}]
    assert sorted(problems_of(data)) == [
        "backends.a.base_url: must be a string, not int",
        "models.gpt-4o.backends[0].weight: must be a number, not str",
        "organizations.acme.keys[0].id: must be 4 to 32 letters or digits",
    ]


def test_two_bad_items_of_one_list_leave_the_rest_of_their_object_checked() -> None:
    data = minimal()
    model = data["models"]["gpt-4o"]
    model["routes"] = ["acme", "globex"]
    model["hedge_after_ms"] = 0
    model["backends"].append({"backend": "azure"})
    assert sorted(problems_of(data)) == [
        "models.gpt-4o.backends[2].backend: unknown backend 'azure'; defined: a, b",
        "models.gpt-4o.hedge_after_ms: must be > 0",
        "models.gpt-4o.routes[0]: must be a mapping, not str",
        "models.gpt-4o.routes[1]: must be a mapping, not str",
    ]


@pytest.mark.parametrize("version", [0, 2, 99])
def test_an_unsupported_version_is_a_problem(version: int) -> None:
    data = minimal()
    data["version"] = version
    assert problems_of(data) == [
        f"version: {version} is not supported; this router reads version 1 "
        f"(write version: 1, or run a router that reads version {version})"
    ]
    data["version"] = 1
    assert structure(data).version == 1


def test_a_tracing_exporter_typo_is_refused_not_read_as_otlp() -> None:
    data = minimal()
    data["observability"] = {"tracing": True, "tracing_exporter": "consle"}
    assert problems_of(data) == [
        "observability.tracing_exporter: must be one of otlp, console, memory, "
        "not 'consle' (did you mean 'console'?)"
    ]


def test_objects_built_in_python_check_their_choices_too() -> None:
    with pytest.raises(ExceptionGroup) as info:
        ObservabilitySettings(tracing_exporter=cast(TracingExporter, "consle"))
    assert [str(e) for e in info.value.exceptions] == [
        "tracing_exporter: must be one of otlp, console, memory, not 'consle' "
        "(did you mean 'console'?)"
    ]


def everything() -> dict[str, Any]:
    """`minimal()` with every section and optional object present."""
    data = minimal()
    acme = data["organizations"]["acme"]
    acme["limits"] = {"requests": {"rate": 1}, "tokens": {"rate": 1}}
    acme["keys"][0]["limits"] = {"requests": {"rate": 1}, "tokens": {"rate": 1}}
    acme["model_limits"] = {"gpt-4o": {"requests": {"rate": 1}}}
    acme["user_limits"] = {"tokens": {"rate": 1}}
    data["models"]["gpt-4o"]["routes"] = [
        {"organizations": ["acme"], "backends": [{"backend": "a"}]}
    ]
    data["listeners"] = {"public": {}, "admin": {"cert_file": "c", "key_file": "k", "ca_file": "a"}}
    data["auth"] = {
        "issuers": [{"issuer": "https://id/", "jwks_url": "https://id/jwks", "audience": "r"}]
    }
    data["usage"] = {"spool": {}, "kafka": {}}
    data["limits"] = {"on_store_failure": {}}
    data["state"] = {"redis": {}}
    for section in ("server", "health", "routing", "idempotency", "observability"):
        data[section] = {}
    vertex = {"project": "my-project", "location": "us-central1"}
    data["backends"]["v"] = {"base_url": "https://v/v1", "kind": "vertex", "vertex": vertex}
    data["backends"]["a"]["load_metrics"] = {"format": "vllm"}
    data["models"]["gpt-4o"]["affinity"] = {}
    return data


Steps = tuple[str | int, ...]


def enum_places(tp: Any, data: object, steps: Steps = ()) -> Iterator[tuple[Steps, type[StrEnum]]]:
    """Every place in `data` (typed `tp`) whose setting is a StrEnum, found from the types,
    so a new enumerated setting is covered without editing this test."""
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        yield steps, tp
    elif attrs.has(tp):
        if isinstance(data, dict):
            hints = get_type_hints(tp)
            for field in attrs.fields(tp):
                yield from enum_places(
                    hints[field.name], data.get(field.name), (*steps, field.name)
                )
    elif get_origin(tp) in (Union, UnionType):
        for arg in get_args(tp):
            yield from enum_places(arg, data, steps)
    elif get_origin(tp) is tuple:
        (item,) = get_args(tp)[:1]
        if isinstance(item, type) and issubclass(item, StrEnum):
            yield (*steps, 0), item
        elif isinstance(data, list) and data:
            yield from enum_places(item, data[0], (*steps, 0))
    elif get_origin(tp) is Mapping and isinstance(data, dict):
        for key, value in data.items():
            yield from enum_places(get_args(tp)[1], value, (*steps, key))


def put(data: dict[str, Any], steps: Steps, value: str) -> None:
    parent: Any = data
    for step in steps[:-2]:
        parent = parent[step]
    if isinstance(steps[-1], int):  # one item of a list of choices
        parent[steps[-2]] = [value]
    else:
        parent[steps[-2]][steps[-1]] = value


def dotted(steps: Steps) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")


PLACES = list(enum_places(RouterConfig, everything()))


def test_the_search_finds_every_enumerated_setting() -> None:
    structure(everything())
    assert {kind for _, kind in PLACES} == {
        kind
        for kind in vars(config_enums).values()
        if isinstance(kind, type) and issubclass(kind, StrEnum) and kind is not StrEnum
    }
    assert "models.gpt-4o.strategy" in {dotted(steps) for steps, _ in PLACES}


# What a backend of each kind, or speaking each provider's protocol, needs beside it.
KIND_NEEDS: dict[object, dict[str, Any]] = {
    BackendKind.AZURE_OPENAI: {"api_key_env": "AZURE_KEY", "azure": {"api_version": "2024-10-21"}},
    BackendKind.BEDROCK: {"bedrock": {"region": "us-east-1"}},
    BackendKind.VERTEX: {"vertex": {"project": "my-project", "location": "us-central1"}},
    Protocol.GEMINI: {"kind": "gemini"},
    Protocol.BEDROCK: {"kind": "bedrock", "bedrock": {"region": "us-east-1"}},
}


def fit_backend(data: dict[str, Any], steps: Steps, member: object) -> None:
    """A backend's kind or protocol under test: the backend holds only what the
    member needs beside it (None: nothing)."""
    if steps[0] != "backends" or steps[2] not in ("kind", "protocols"):
        return
    data["backends"][steps[1]] = {"base_url": "https://b/v1", **KIND_NEEDS.get(member, {})}


@pytest.mark.parametrize(
    ("steps", "kind", "member"),
    [(steps, kind, member) for steps, kind in PLACES for member in kind],
    ids=lambda v: dotted(v) if isinstance(v, tuple) else str(v),
)
def test_every_enumerated_setting_refuses_a_typo(
    steps: Steps, kind: type[StrEnum], member: StrEnum
) -> None:
    data = everything()
    fit_backend(data, steps, member)
    put(data, steps, member.value)
    value: Any = structure(data)
    for step in steps:  # the converter hands back the member, not a plain string
        value = (
            value[step]
            if isinstance(step, int) or isinstance(value, Mapping)
            else getattr(value, step)
        )
    assert value is member
    fit_backend(data, steps, None)  # the typo alone, in a backend that needs nothing else
    typo = member.value[:-1]
    put(data, steps, typo)
    choices = ", ".join(kind)
    assert problems_of(data) == [
        f"{dotted(steps)}: must be one of {choices}, not {typo!r} (did you mean {member.value!r}?)"
    ]


@given(place=st.sampled_from(PLACES), value=st.text(max_size=12) | st.integers())
def test_no_other_value_passes_for_a_choice(
    place: tuple[Steps, type[StrEnum]], value: str | int
) -> None:
    steps, kind = place
    if isinstance(value, str) and value in {m.value for m in kind}:
        return
    data = everything()
    fit_backend(data, steps, None)
    put(data, steps, value)  # type: ignore[arg-type]
    (problem,) = problems_of(data)
    assert problem.startswith(f"{dotted(steps)}: must be one of {', '.join(kind)}, not ")


@pytest.mark.parametrize("hold_ttl_s", [0, -5, 366 * 86_400 + 1])
def test_a_hold_lifetime_out_of_range_is_refused(hold_ttl_s: int) -> None:
    data = minimal()
    data["limits"] = {"hold_ttl_s": hold_ttl_s}
    assert problems_of(data) == ["limits.hold_ttl_s: must be > 0 and at most 31622400 (366 days)"]
    data["limits"] = {"hold_ttl_s": 366 * 86_400}
    assert structure(data).limits.hold_ttl_s == 366 * 86_400
