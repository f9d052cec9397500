"""`decide`: targets, skips, tiers, weights, ramp, least latency and the explanation."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.config import Model, ModelTarget, RouteRule
from router_core.config_enums import Strategy
from router_core.overrides import Action, Applied, Override
from router_core.routing import BackendView, Candidate, SkipReason, decide

DOWN = BackendView(available=False, circuit="open")
N = 20_000


def target(
    backend: str, weight: float = 1.0, tier: int = 0, model: str | None = None
) -> ModelTarget:
    return ModelTarget(backend=backend, model=model, weight=weight, tier=tier)


def override(
    action: Action, backend: str, id: str = "ov1", weight: float | None = None
) -> Override:
    return Override(
        id=id,
        action=action,
        backend=backend,
        reason="maintenance",
        created_at=0.0,
        expires_at=1e12,
        created_by="ops",
        model="pub",
        weight=weight,
    )


def order(decision_candidates: tuple[Candidate, ...]) -> list[str]:
    return [c.backend for c in decision_candidates]


def first_shares(
    model: Model,
    views: dict[str, BackendView] | None = None,
    applied: Applied | None = None,
    seed: int = 11,
) -> Counter[str]:
    rng = random.Random(seed)
    firsts: Counter[str] = Counter()
    for _ in range(N):
        d = decide("pub", model, "org", None, rng, views, applied or Applied())
        firsts[d.candidates[0].backend] += 1
    return firsts


# Targets: model, route rules


def test_candidates_use_the_backends_model_name_or_the_public_one() -> None:
    m = Model((target("a", model="gpt-4o-2024"), target("b")))
    d = decide("pub", m, "org", None, random.Random(1))
    assert {c.backend: c.model for c in d.candidates} == {"a": "gpt-4o-2024", "b": "pub"}
    assert d.rule == "model"
    assert d.skipped == ()


def routed_model() -> Model:
    return Model(
        (target("default"),),
        routes=(
            RouteRule((target("for-acme"),), organizations=("acme",)),
            RouteRule((target("for-key"),), keys=("key1",)),
            RouteRule((target("late"),), organizations=("acme", "initech"), keys=("key1",)),
        ),
    )


@pytest.mark.parametrize(
    ("organization", "key_id", "backend", "rule"),
    [
        ("acme", None, "for-acme", "routes[0]"),
        ("acme", "key1", "for-acme", "routes[0]"),  # the first matching rule wins
        ("globex", "key1", "for-key", "routes[1]"),
        ("initech", "key2", "late", "routes[2]"),
        ("globex", "key2", "default", "model"),
        ("globex", None, "default", "model"),
    ],
)
def test_the_first_matching_route_rule_replaces_the_backends(
    organization: str, key_id: str | None, backend: str, rule: str
) -> None:
    d = decide("pub", routed_model(), organization, key_id, random.Random(1))
    assert order(d.candidates) == [backend]
    assert d.rule == rule


def test_a_route_skips_the_models_own_backends_silently() -> None:
    d = decide("pub", routed_model(), "acme", None, random.Random(1))
    assert d.skipped == ()


# Skips


def test_each_unusable_backend_is_skipped_with_its_reason() -> None:
    m = Model(tuple(target(b) for b in ("ok", "drained", "open", "half", "full")))
    views = {
        "open": DOWN,
        "half": BackendView(available=False, circuit="half_open"),
        "full": BackendView(in_flight=4, max_in_flight=4),
        "ok": BackendView(in_flight=3, max_in_flight=4),
    }
    applied = Applied(drained=frozenset({"drained"}))
    d = decide("pub", m, "org", None, random.Random(1), views, applied)
    assert order(d.candidates) == ["ok"]
    assert [(s.backend, s.reason) for s in d.skipped] == [
        ("drained", SkipReason.DRAINING),
        ("open", SkipReason.CIRCUIT_OPEN),
        ("half", SkipReason.CIRCUIT_OPEN),
        ("full", SkipReason.AT_CAPACITY),
    ]
    details = {s.backend: s.detail for s in d.skipped}
    assert details["open"] == "circuit open"
    assert details["half"] == "circuit half_open"
    assert "4 in flight" in details["full"]


def test_draining_is_reported_over_an_open_circuit_or_a_full_backend() -> None:
    m = Model((target("a"),))
    views = {"a": BackendView(available=False, circuit="open", in_flight=9, max_in_flight=1)}
    d = decide("pub", m, "org", None, random.Random(1), views, Applied(frozenset({"a"})))
    assert [s.reason for s in d.skipped] == [SkipReason.DRAINING]


def test_an_open_circuit_is_reported_over_a_full_backend() -> None:
    views = {"a": BackendView(available=False, circuit="open", in_flight=9, max_in_flight=1)}
    d = decide("pub", Model((target("a"),)), "org", None, random.Random(1), views)
    assert [s.reason for s in d.skipped] == [SkipReason.CIRCUIT_OPEN]


def test_a_backend_without_a_view_counts_as_healthy() -> None:
    d = decide("pub", Model((target("a"), target("b"))), "o", None, random.Random(1), {"b": DOWN})
    assert order(d.candidates) == ["a"]


@pytest.mark.parametrize(
    ("views", "drained", "expected"),
    [
        ({"a": BackendView(in_flight=1, max_in_flight=1)}, frozenset({"b"}), True),
        ({"a": BackendView(in_flight=1, max_in_flight=1), "b": DOWN}, frozenset(), True),
        ({"a": DOWN, "b": DOWN}, frozenset(), False),
        ({"a": DOWN}, frozenset({"b"}), False),
        ({"a": BackendView(in_flight=1, max_in_flight=1)}, frozenset(), False),  # b is free
        ({}, frozenset(), False),
    ],
)
def test_only_capacity_skips_means_waiting_could_help(
    views: dict[str, BackendView], drained: frozenset[str], expected: bool
) -> None:
    m = Model((target("a"), target("b")))
    d = decide("pub", m, "org", None, random.Random(1), views, Applied(drained))
    assert d.only_capacity_skips() is expected


# Tiers


targets_with_tiers = st.lists(
    st.tuples(st.floats(min_value=0.01, max_value=100), st.integers(min_value=0, max_value=3)),
    min_size=1,
    max_size=8,
)


@given(
    specs=targets_with_tiers,
    seed=st.integers(),
    down=st.sets(st.integers(min_value=0, max_value=7)),
    strategy=st.sampled_from(list(Strategy)),
    latencies=st.lists(st.none() | st.floats(min_value=0, max_value=1e4), min_size=8, max_size=8),
)
def test_tiers_are_tried_in_order_and_every_eligible_backend_appears_once(
    specs: list[tuple[float, int]],
    seed: int,
    down: set[int],
    strategy: Strategy,
    latencies: list[float | None],
) -> None:
    m = Model(tuple(target(f"b{i}", w, tier) for i, (w, tier) in enumerate(specs)), strategy)
    views = {f"b{i}": BackendView(latency_ms=latencies[i]) for i in range(len(specs))}
    views.update({f"b{i}": DOWN for i in down})
    d = decide("pub", m, "org", None, random.Random(seed), views)
    tiers = [c.tier for c in d.candidates]
    assert tiers == sorted(tiers)
    assert sorted(order(d.candidates)) == sorted(
        f"b{i}" for i in range(len(specs)) if i not in down
    )
    assert {c.backend: c.tier for c in d.candidates} == {
        f"b{i}": tier for i, (_, tier) in enumerate(specs) if i not in down
    }
    assert sorted(s.backend for s in d.skipped) == sorted(
        f"b{i}" for i in range(len(specs)) if i in down
    )


def test_the_fallback_tier_is_first_when_every_primary_is_out() -> None:
    m = Model((target("p1"), target("p2"), target("f", tier=1)))
    d = decide("pub", m, "org", None, random.Random(1), {"p1": DOWN, "p2": DOWN})
    assert d.candidates == (Candidate("f", "pub", 1),)


# Weights


def test_first_choice_shares_follow_the_weights() -> None:
    m = Model((target("a", 6), target("b", 3), target("c", 1), target("z", 100, tier=1)))
    firsts = first_shares(m)
    assert firsts["z"] == 0
    assert firsts["a"] / N == pytest.approx(0.6, abs=0.02)
    assert firsts["b"] / N == pytest.approx(0.3, abs=0.02)
    assert firsts["c"] / N == pytest.approx(0.1, abs=0.02)


def test_second_choice_also_follows_the_weights() -> None:
    """Efraimidis-Spirakis: given `a` was first, `b` is second with share 3/4."""
    m = Model((target("a", 6), target("b", 3), target("c", 1)))
    rng = random.Random(5)
    seconds: Counter[str] = Counter()
    for _ in range(N):
        picks = order(decide("pub", m, "org", None, rng).candidates)
        if picks[0] == "a":
            seconds[picks[1]] += 1
    assert seconds["b"] / seconds.total() == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 1e4])
def test_only_the_ratio_of_the_weights_matters(scale: float) -> None:
    """Weights are relative: 1:3 is 1:3 however small (a tiny weight must not
    lose its share to floating-point underflow)."""
    m = Model((target("a", 1 * scale), target("b", 3 * scale), target("c", 3 * scale)))
    firsts = first_shares(m)
    assert firsts["a"] / N == pytest.approx(1 / 7, abs=0.015)
    assert firsts["b"] / N == pytest.approx(3 / 7, abs=0.02)
    assert firsts["c"] / N == pytest.approx(3 / 7, abs=0.02)


def test_a_weight_override_replaces_the_configured_weight() -> None:
    m = Model((target("a", 1), target("b", 1)))
    applied = Applied(weights={"a": override(Action.WEIGHT, "a", weight=9.0)})
    firsts = first_shares(m, applied=applied)
    assert firsts["a"] / N == pytest.approx(0.9, abs=0.02)


def test_a_ramping_backend_gets_its_share_scaled_by_the_ramp() -> None:
    m = Model((target("a", 1), target("b", 1)))
    firsts = first_shares(m, views={"a": BackendView(ramp=0.1)})
    assert firsts["a"] / N == pytest.approx(0.1 / 1.1, abs=0.015)


def test_the_ramp_scales_an_overridden_weight_too() -> None:
    m = Model((target("a", 1), target("b", 1)))
    applied = Applied(weights={"a": override(Action.WEIGHT, "a", weight=9.0)})
    firsts = first_shares(m, views={"a": BackendView(ramp=0.5)}, applied=applied)
    assert firsts["a"] / N == pytest.approx(4.5 / 5.5, abs=0.02)


def test_the_same_seed_gives_the_same_plan() -> None:
    m = Model(tuple(target(f"b{i}", i + 1) for i in range(6)))
    plans = {
        tuple(order(decide("pub", m, "org", None, random.Random(42)).candidates)) for _ in range(5)
    }
    assert len(plans) == 1


# Least latency


def fastest_first_model() -> Model:
    return Model(tuple(target(f"b{i}", i + 1) for i in range(5)), strategy=Strategy.LEAST_LATENCY)


@given(
    seed=st.integers(),
    latencies=st.lists(st.none() | st.floats(min_value=0, max_value=1e4), min_size=5, max_size=5),
)
def test_least_latency_puts_the_faster_of_the_first_two_weighted_picks_first(
    seed: int, latencies: list[float | None]
) -> None:
    least = fastest_first_model()
    weighted = Model(least.backends)
    views = {f"b{i}": BackendView(latency_ms=ms) for i, ms in enumerate(latencies)}
    plain = order(decide("pub", weighted, "org", None, random.Random(seed), views).candidates)
    picked = order(decide("pub", least, "org", None, random.Random(seed), views).candidates)

    def latency(backend: str) -> float:
        ms = views[backend].latency_ms
        return 0.0 if ms is None else ms

    # Only the first two weighted picks may trade places; the rest stay put.
    assert picked[2:] == plain[2:]
    assert sorted(picked[:2]) == sorted(plain[:2])
    assert latency(picked[0]) <= latency(picked[1])
    if latency(plain[0]) <= latency(plain[1]):
        assert picked == plain


def test_least_latency_prefers_the_faster_backend_overall() -> None:
    m = Model((target("slow"), target("fast")), strategy=Strategy.LEAST_LATENCY)
    views = {"slow": BackendView(latency_ms=900.0), "fast": BackendView(latency_ms=20.0)}
    firsts = first_shares(m, views=views)
    assert firsts == Counter({"fast": N})


def test_least_latency_still_spreads_over_more_than_two() -> None:
    """Power of two choices: the slowest of three is never first, the others share."""
    m = Model((target("a"), target("b"), target("c")), strategy=Strategy.LEAST_LATENCY)
    views = {
        "a": BackendView(latency_ms=10.0),
        "b": BackendView(latency_ms=20.0),
        "c": BackendView(latency_ms=30.0),
    }
    firsts = first_shares(m, views=views)
    assert firsts["c"] == 0
    # a is first unless the first two picks are {b, c}: 1 - 1/3 = 2/3.
    assert firsts["a"] / N == pytest.approx(2 / 3, abs=0.02)


def test_an_unmeasured_backend_gets_a_try() -> None:
    m = Model((target("known"), target("new")), strategy=Strategy.LEAST_LATENCY)
    views = {"known": BackendView(latency_ms=5.0), "new": BackendView(latency_ms=None)}
    for seed in range(50):
        d = decide("pub", m, "org", None, random.Random(seed), views)
        assert order(d.candidates) == ["new", "known"]


def test_least_latency_never_lifts_a_fallback_over_a_primary() -> None:
    m = Model((target("slow"), target("fast", tier=1)), strategy=Strategy.LEAST_LATENCY)
    views = {"slow": BackendView(latency_ms=5000.0), "fast": BackendView(latency_ms=1.0)}
    d = decide("pub", m, "org", None, random.Random(1), views)
    assert order(d.candidates) == ["slow", "fast"]


# Pin override


def pinned_model() -> Model:
    return Model(
        (target("a", model="a-name"), target("b", model="b-name", tier=1, weight=5)),
        routes=(RouteRule((target("c", model="c-name"),), organizations=("acme",)),),
    )


def test_a_pin_replaces_the_targets_and_keeps_the_backends_model_name() -> None:
    pin = override(Action.PIN, "b", id="pin-b")
    d = decide("pub", pinned_model(), "org", None, random.Random(1), applied=Applied(pinned=pin))
    assert d.candidates == (Candidate("b", "b-name", 0),)
    assert d.rule == "override:pin-b"
    assert [(s.backend, s.reason) for s in d.skipped] == [("a", SkipReason.OVERRIDDEN)]
    assert "'pin-b'" in d.skipped[0].detail
    assert "maintenance" in d.skipped[0].detail


def test_a_pin_to_a_backend_outside_the_route_keeps_its_model_name() -> None:
    pin = override(Action.PIN, "a", id="pin-a")
    d = decide("pub", pinned_model(), "acme", None, random.Random(1), applied=Applied(pinned=pin))
    assert d.candidates == (Candidate("a", "a-name", 0),)
    assert [(s.backend, s.reason) for s in d.skipped] == [("c", SkipReason.OVERRIDDEN)]


def test_a_pin_takes_the_model_name_from_the_targets_in_force_first() -> None:
    m = Model(
        (target("a", model="a-default"),),
        routes=(RouteRule((target("a", model="a-for-acme", tier=2),), organizations=("acme",)),),
    )
    pin = override(Action.PIN, "a")
    d = decide("pub", m, "acme", None, random.Random(1), applied=Applied(pinned=pin))
    assert d.candidates == (Candidate("a", "a-for-acme", 0),)
    d = decide("pub", m, "globex", None, random.Random(1), applied=Applied(pinned=pin))
    assert d.candidates == (Candidate("a", "a-default", 0),)


def test_a_pin_to_a_backend_from_another_route_keeps_its_model_name() -> None:
    pin = override(Action.PIN, "c")
    d = decide("pub", pinned_model(), "org", None, random.Random(1), applied=Applied(pinned=pin))
    assert d.candidates == (Candidate("c", "c-name", 0),)


def test_a_pin_to_an_unlisted_backend_uses_the_public_name() -> None:
    pin = override(Action.PIN, "elsewhere")
    d = decide("pub", pinned_model(), "org", None, random.Random(1), applied=Applied(pinned=pin))
    assert d.candidates == (Candidate("elsewhere", "pub", 0),)
    assert {s.backend for s in d.skipped} == {"a", "b"}


def test_a_pinned_backend_that_is_down_leaves_no_candidate() -> None:
    """A pin means "only there": the other backends are not a fallback."""
    pin = override(Action.PIN, "a")
    d = decide(
        "pub", pinned_model(), "org", None, random.Random(1), {"a": DOWN}, Applied(pinned=pin)
    )
    assert d.candidates == ()
    assert {(s.backend, s.reason) for s in d.skipped} == {
        ("b", SkipReason.OVERRIDDEN),
        ("a", SkipReason.CIRCUIT_OPEN),
    }


def test_a_pinned_backend_can_still_be_drained() -> None:
    pin = override(Action.PIN, "a")
    applied = Applied(drained=frozenset({"a"}), pinned=pin)
    d = decide("pub", pinned_model(), "org", None, random.Random(1), applied=applied)
    assert d.candidates == ()
    assert ("a", SkipReason.DRAINING) in {(s.backend, s.reason) for s in d.skipped}


# Explanation


def test_explain_lists_the_rule_every_candidate_and_every_skip() -> None:
    m = Model(
        (
            target("a", model="a-name"),
            target("b", tier=1),
            target("c"),
            target("d"),
            target("e", tier=2),
        )
    )
    views = {"c": DOWN, "d": BackendView(in_flight=2, max_in_flight=2)}
    applied = Applied(drained=frozenset({"e"}))
    explained = decide("pub", m, "org", None, random.Random(1), views, applied).explain()
    assert explained == {
        "rule": "model",
        "candidates": [
            {"backend": "a", "model": "a-name", "tier": 0},
            {"backend": "b", "model": "pub", "tier": 1},
        ],
        "skipped": [
            {"backend": "c", "reason": "circuit_open", "detail": "circuit open"},
            {"backend": "d", "reason": "at_capacity", "detail": "2 in flight (the cap)"},
            {"backend": "e", "reason": "draining", "detail": "drained by an override"},
        ],
    }
    assert json.loads(json.dumps(explained)) == explained


def test_a_throttled_backend_is_skipped_and_says_why() -> None:
    m = Model((target("a"), target("b", tier=1)))
    views = {"a": BackendView(throttled=True)}
    d = decide("pub", m, "org", None, random.Random(1), views)
    assert order(d.candidates) == ["b"]
    (skip,) = d.skipped
    assert (skip.backend, skip.reason) == ("a", SkipReason.THROTTLED)
