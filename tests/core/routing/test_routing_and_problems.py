"""Routing decisions follow the weights; the problem catalog renders every envelope."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core import routing
from router_core.config import Model, ModelTarget
from router_core.config_codec import structure
from router_core.problems import Catalog, ClientError, Envelope, RouterError, render


def model(*weights: float) -> Model:
    return Model(tuple(ModelTarget(f"b{i}", None, w) for i, w in enumerate(weights)))


def test_first_choice_follows_the_weights() -> None:
    rng = random.Random(7)
    firsts = Counter(
        routing.decide("m", model(3, 1), "o", None, rng).candidates[0].backend
        for _ in range(20_000)
    )
    assert 0.72 < firsts["b0"] / 20_000 < 0.78


@given(st.lists(st.floats(min_value=0.01, max_value=100), min_size=1, max_size=6), st.integers())
def test_plan_is_a_permutation(weights: list[float], seed: int) -> None:
    candidates = routing.decide("pub", model(*weights), "o", None, random.Random(seed)).candidates
    assert sorted(c.backend for c in candidates) == sorted(f"b{i}" for i in range(len(weights)))
    assert all(c.model == "pub" for c in candidates)


def test_resolve_model_names_what_the_caller_may_use() -> None:
    config = structure(
        {
            "backends": {"a": {"base_url": "http://a/v1"}},
            "models": {
                "m1": {"backends": [{"backend": "a"}]},
                "m2": {"backends": [{"backend": "a"}]},
            },
            "organizations": {"o": {"models": ["m1"]}},
        }
    )
    org = config.organizations["o"]
    assert routing.resolve_model(config, org, "m1")
    for name in ("m2", "nope"):
        with pytest.raises(ClientError) as info:
            routing.resolve_model(config, org, name)
        assert info.value.status == 404
        assert "Models available to you: m1." in info.value.detail
        assert "m2," not in info.value.detail


@pytest.mark.parametrize("problem", Catalog.all(), ids=lambda p: p.code)
def test_every_problem_renders_in_every_envelope(problem: object) -> None:
    assert isinstance(problem, type(Catalog.NOT_FOUND))
    error = RouterError(problem, "detail text", param="x")
    openai = render(error, Envelope.OPENAI)
    assert openai["error"]["code"] == problem.code
    assert openai["error"]["message"] == "detail text"
    seed = render(error, Envelope.SEED)
    assert seed["code"] == problem.code.upper()
    doc = render(error, Envelope.PROBLEM, instance="/p")
    assert doc["status"] == problem.status
    assert doc["type"].endswith(problem.code)
    assert 400 <= problem.status < 600


def test_codes_are_unique() -> None:
    codes = [p.code for p in Catalog.all()]
    assert len(codes) == len(set(codes))
