"""Overrides: validation that names every problem, expiry, matching and precedence."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.config import Model, ModelTarget
from router_core.overrides import (
    MAX_REASON,
    MAX_TTL_S,
    NO_OVERRIDES,
    Action,
    Override,
    OverrideInvalid,
    applicable,
    new_override,
)
from router_core.routing import Candidate, SkipReason, decide

NOW = 1_700_000_000.0


def valid(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "ov-1",
        "action": "drain",
        "backend": "a",
        "reason": "  provider incident INC-42  ",
        "ttl_s": 3600.0,
        "now": NOW,
        "created_by": "alice",
        "known_backends": ("a", "b"),
        "known_models": ("gpt", "embed"),
    }
    fields.update(changes)
    return fields


def problems(**changes: Any) -> list[str]:
    with pytest.raises(OverrideInvalid) as info:
        new_override(**valid(**changes))
    # Problems are joined with "; ", which one message also contains.
    return str(info.value).replace("; defined:", ", defined:").split("; ")


def ov(
    id: str,
    action: Action = Action.PIN,
    backend: str = "a",
    *,
    model: str | None = None,
    organization: str | None = None,
    created_at: float = 0.0,
    expires_at: float = 1e12,
    weight: float | None = None,
) -> Override:
    return Override(
        id=id,
        action=action,
        backend=backend,
        reason="r",
        created_at=created_at,
        expires_at=expires_at,
        created_by="ops",
        model=model,
        organization=organization,
        weight=weight,
    )


# new_override


def test_a_valid_override_is_built_with_its_expiry_and_a_trimmed_reason() -> None:
    o = new_override(**valid(action="weight", weight=2.5, model="gpt", organization="acme"))
    assert o == Override(
        id="ov-1",
        action=Action.WEIGHT,
        backend="a",
        reason="provider incident INC-42",
        created_at=NOW,
        expires_at=NOW + 3600.0,
        created_by="alice",
        model="gpt",
        organization="acme",
        weight=2.5,
    )


def test_a_pin_with_a_model_is_valid() -> None:
    assert new_override(**valid(action="pin", model="gpt")).action is Action.PIN


def test_nothing_known_means_any_backend_and_model_is_accepted() -> None:
    o = new_override(**valid(known_backends=(), known_models=(), backend="new", model="m"))
    assert (o.backend, o.model) == ("new", "m")


def test_every_problem_is_named_at_once() -> None:
    found = problems(
        id="has space",
        backend="zzz",
        model="nope",
        organization="-bad",
        reason=" ",
        ttl_s=0,
        weight=1.0,
    )
    assert found == [
        "id must be 1 to 64 letters, digits, '_' or '-'",
        "unknown backend 'zzz', defined: a, b",
        "unknown model 'nope'",
        "organization must be a name (letters, digits and . _ : / -)",
        f"reason is required (1 to {MAX_REASON} characters)",
        f"ttl_s must be > 0 and at most {MAX_TTL_S} (30 days)",
        "weight is only for action 'weight'",
    ]


def test_an_unknown_action_is_named_with_the_choices() -> None:
    assert problems(action="block") == ["action must be one of drain, pin, weight, not 'block'"]


def test_a_pin_needs_a_model() -> None:
    assert problems(action="pin") == ["a pin needs a model"]


@pytest.mark.parametrize("weight", [None, 0.0, -1.0])
def test_a_weight_override_needs_a_positive_weight(weight: float | None) -> None:
    assert problems(action="weight", weight=weight) == ["a weight override needs weight > 0"]


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("ttl_s", MAX_TTL_S, True),
        ("ttl_s", MAX_TTL_S + 1, False),
        ("ttl_s", 0.001, True),
        ("ttl_s", -5, False),
        ("reason", "x" * MAX_REASON, True),
        ("reason", "x" * (MAX_REASON + 1), False),
        ("id", "a" * 64, True),
        ("id", "a" * 65, False),
        ("id", "", False),
        ("id", "Ok_id-9", True),
    ],
)
def test_limits_are_inclusive(field: str, value: Any, ok: bool) -> None:
    if ok:
        new_override(**valid(**{field: value}))
    else:
        with pytest.raises(OverrideInvalid):
            new_override(**valid(**{field: value}))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_ttl_must_be_a_finite_number(value: float) -> None:
    with pytest.raises(OverrideInvalid):
        new_override(**valid(ttl_s=value))


def test_a_nan_weight_is_not_greater_than_zero() -> None:
    """A NaN weight would make the weighted order meaningless (its key is NaN)."""
    assert problems(action="weight", weight=float("nan")) == ["a weight override needs weight > 0"]


# active, matches, specificity


def test_active_until_but_not_at_expiry() -> None:
    o = ov("x", created_at=100.0, expires_at=200.0)
    assert o.active(199.999)
    assert not o.active(200.0)
    # A replica whose clock is a little behind still honours it.
    assert o.active(99.0)


@pytest.mark.parametrize(
    ("model", "organization", "matches"),
    [
        (None, None, {("gpt", "acme"), ("gpt", "globex"), ("embed", "acme"), ("embed", "globex")}),
        ("gpt", None, {("gpt", "acme"), ("gpt", "globex")}),
        (None, "acme", {("gpt", "acme"), ("embed", "acme")}),
        ("gpt", "acme", {("gpt", "acme")}),
    ],
)
def test_matches_by_model_and_organization(
    model: str | None, organization: str | None, matches: set[tuple[str, str]]
) -> None:
    o = ov("x", model=model, organization=organization)
    every = {(m, g) for m in ("gpt", "embed") for g in ("acme", "globex")}
    assert {pair for pair in every if o.matches(*pair)} == matches


def test_specificity_organization_beats_model_beats_age() -> None:
    ranked = sorted(
        [
            ov("everyone-any-new", created_at=9.0),
            ov("everyone-model", model="gpt", created_at=1.0),
            ov("org-any", organization="acme", created_at=1.0),
            ov("org-model", model="gpt", organization="acme", created_at=0.0),
            ov("everyone-any-old", created_at=0.0),
        ],
        key=Override.specificity,
        reverse=True,
    )
    assert [o.id for o in ranked] == [
        "org-model",
        "org-any",
        "everyone-model",
        "everyone-any-new",
        "everyone-any-old",
    ]


# applicable


def test_nothing_applicable_is_the_shared_empty_value() -> None:
    overrides = [
        ov("expired", expires_at=NOW),
        ov("other-model", model="embed"),
        ov("other-org", organization="globex"),
    ]
    applied = applicable(overrides, "gpt", "acme", NOW)
    assert applied is NO_OVERRIDES
    assert applied.empty


def test_the_organizations_pin_beats_a_model_pin_for_everyone() -> None:
    overrides = [
        ov("model-pin", backend="a", model="gpt", created_at=5.0),
        ov("org-pin", backend="b", organization="acme", created_at=1.0),
    ]
    assert applicable(overrides, "gpt", "acme", NOW).pinned == overrides[1]
    assert applicable(overrides, "gpt", "globex", NOW).pinned == overrides[0]


def test_among_equally_specific_pins_the_newest_wins() -> None:
    old = ov("old", backend="a", model="gpt", created_at=1.0)
    new = ov("new", backend="b", model="gpt", created_at=2.0)
    assert applicable([old, new], "gpt", "acme", NOW).pinned == new
    assert applicable([new, old], "gpt", "acme", NOW).pinned == new


def test_an_expired_override_gives_way_to_a_less_specific_one() -> None:
    broad = ov("broad", backend="a")
    narrow = ov("narrow", backend="b", model="gpt", organization="acme", expires_at=NOW)
    assert applicable([narrow, broad], "gpt", "acme", NOW).pinned == broad
    assert applicable([narrow, broad], "gpt", "acme", NOW - 1).pinned == narrow


def test_drains_add_up_and_weights_are_per_backend() -> None:
    overrides = [
        ov("d1", Action.DRAIN, "a"),
        ov("d2", Action.DRAIN, "b", model="gpt"),
        ov("d3", Action.DRAIN, "c", model="embed"),
        ov("w1", Action.WEIGHT, "a", weight=2.0),
        ov("w2", Action.WEIGHT, "a", organization="acme", weight=5.0),
        ov("w3", Action.WEIGHT, "b", model="gpt", weight=3.0),
    ]
    applied = applicable(overrides, "gpt", "acme", NOW)
    assert applied.drained == {"a", "b"}
    assert applied.pinned is None
    assert {b: o.id for b, o in applied.weights.items()} == {"a": "w2", "b": "w3"}


scopes = st.tuples(
    st.sampled_from([None, "gpt", "embed"]), st.sampled_from([None, "acme", "globex"])
)


@st.composite
def override_sets(draw: st.DrawFn) -> list[Override]:
    count = draw(st.integers(min_value=0, max_value=12))
    # Distinct creation times: among equals the newest wins, so no ties.
    times = draw(st.lists(st.integers(0, 1000), min_size=count, max_size=count, unique=True))
    result = []
    for i, created in enumerate(times):
        action = draw(st.sampled_from(Action))
        model, organization = draw(scopes)
        result.append(
            ov(
                f"o{i}",
                action,
                draw(st.sampled_from(["a", "b", "c"])),
                model=model,
                organization=organization,
                created_at=float(created),
                expires_at=float(created + draw(st.integers(1, 1000))),
                weight=2.0 if action is Action.WEIGHT else None,
            )
        )
    return result


@given(
    overrides=override_sets(),
    model=st.sampled_from(["gpt", "embed"]),
    organization=st.sampled_from(["acme", "globex"]),
    now=st.integers(0, 2000),
    seed=st.integers(),
)
def test_applicable_picks_the_most_specific_in_any_order(
    overrides: list[Override], model: str, organization: str, now: int, seed: int
) -> None:
    in_force = [o for o in overrides if o.expires_at > now and o.matches(model, organization)]
    shuffled = list(overrides)
    random.Random(seed).shuffle(shuffled)
    applied = applicable(shuffled, model, organization, float(now))

    def best(candidates: list[Override]) -> Override | None:
        def rank(o: Override) -> tuple[int, int, float]:
            return (o.organization == organization, o.model == model, o.created_at)

        return max(candidates, key=rank, default=None)

    assert applied.drained == {o.backend for o in in_force if o.action is Action.DRAIN}
    assert applied.pinned == best([o for o in in_force if o.action is Action.PIN])
    weights = [o for o in in_force if o.action is Action.WEIGHT]
    assert applied.weights == {
        backend: best([o for o in weights if o.backend == backend])
        for backend in {o.backend for o in weights}
    }
    assert applied.empty == (not in_force)


# From override to decision


def test_applicable_overrides_steer_the_decision() -> None:
    m = Model((ModelTarget("a"), ModelTarget("b", model="b-gpt"), ModelTarget("c")))
    overrides = [
        ov("drain-a", Action.DRAIN, "a", model="gpt"),
        ov("pin-b", Action.PIN, "b", model="gpt", organization="acme"),
    ]
    for_acme = decide(
        "gpt", m, "acme", None, random.Random(1), applied=applicable(overrides, "gpt", "acme", NOW)
    )
    assert for_acme.candidates == (Candidate("b", "b-gpt", 0),)
    assert for_acme.rule == "override:pin-b"
    assert {(s.backend, s.reason) for s in for_acme.skipped} == {
        ("a", SkipReason.OVERRIDDEN),
        ("c", SkipReason.OVERRIDDEN),
    }
    for_globex = decide(
        "gpt",
        m,
        "globex",
        None,
        random.Random(1),
        applied=applicable(overrides, "gpt", "globex", NOW),
    )
    assert sorted(c.backend for c in for_globex.candidates) == ["b", "c"]
    assert [(s.backend, s.reason) for s in for_globex.skipped] == [("a", SkipReason.DRAINING)]
    assert for_globex.rule == "model"
