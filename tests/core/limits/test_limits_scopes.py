"""Limit names are typed values; the strings stores keep are spelled at the store's edge,
byte for byte as every deployed store already holds them."""

from __future__ import annotations

from typing import Any

import pytest

from router_core import keys
from router_core.auth import Principal, PrincipalKind
from router_core.config_codec import structure
from router_core.limits.admission import LimitKind
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import BudgetSpec, QuotaSpec, RateSpec, storage_key
from router_core.limits.plan import plan_limits
from router_core.limits.scopes import LimitKey, Measure, Scope, ScopeKind
from router_core.limits.windows import WindowKind
from router_core.requests import InferenceRequest, Operation

EVERY_LIMIT = {
    "requests": {"rate": 10, "per": "second"},
    "tokens": {"rate": 1000, "per": "minute"},
    "quotas": {"requests_per_day": 100, "tokens_per_month": 10_000},
    "budget": {"per_day": 1, "total": 5},
}


def config() -> Any:
    return structure({
        "backends": {"a": {"base_url": "http://127.0.0.1:1/v1"}},
        "models": {"llama3:8b": {"backends": [{"backend": "a"}]}},
        "prices": {"llama3:8b": {"input": 1, "output": 2}},
        "organizations": {
            "acme": {
                "limits": EVERY_LIMIT,
                "user_limits": {"requests": {"rate": 1, "per": "minute"}},
                "model_limits": {"llama3:8b": {"quotas": {"tokens_per_day": 500}}},
                "keys": [{"id": "acme1", "hash": keys.hash_key(keys.format_key("acme1", "K" * 32)),
                          "limits": {"budget": {"per_month": 2}}}],
            },
        },
    })  # fmt: skip


def request() -> InferenceRequest:
    body = {"model": "llama3:8b", "messages": [{"role": "user", "content": "hi"}]}
    return InferenceRequest(Operation.CHAT, "llama3:8b", body, max_tokens=10)


def test_every_shape_of_name_is_spelled_as_before() -> None:
    acme = Scope("acme")
    names = [
        storage_key(LimitKey(acme, Measure.REQUESTS)),
        storage_key(LimitKey(Scope.key("acme", "k1"), Measure.TOKENS)),
        storage_key(LimitKey(Scope.user("acme", "alice"), Measure.REQUESTS, WindowKind.DAY)),
        storage_key(LimitKey(Scope.model("acme", "llama3:8b"), Measure.TOKENS, WindowKind.MONTH)),
        storage_key(LimitKey(acme, Measure.USD, WindowKind.TOTAL)),
        storage_key("any:string:given:as:is"),
    ]
    assert names == [
        "org:acme:rps",
        "org:acme:key:k1:tpm",
        "org:acme:user:alice:req:day",
        "org:acme:model:llama3:8b:tok:month",
        "org:acme:usd:total",
        "any:string:given:as:is",
    ]


def test_a_plan_names_its_limits_as_the_stores_already_hold_them() -> None:
    key_plan = plan_limits(config(), Scope.key("acme", "acme1"), request())
    assert [storage_key(spec.key) for spec in key_plan.specs] == [
        "org:acme:rps",
        "org:acme:tpm",
        "org:acme:req:day",
        "org:acme:tok:month",
        "org:acme:usd:day",
        "org:acme:usd:total",
        "org:acme:key:acme1:usd:month",
        "org:acme:model:llama3:8b:tok:day",
    ]
    user_plan = plan_limits(config(), Scope.user("acme", "alice"), request())
    assert [storage_key(spec.key) for spec in user_plan.specs] == [
        *(storage_key(spec.key) for spec in key_plan.specs[:6]),
        "org:acme:user:alice:rps",
        "org:acme:model:llama3:8b:tok:day",
    ]


def test_an_oidc_user_is_a_principal_of_its_own_kind_with_its_own_scope() -> None:
    org = config().organizations["acme"]
    user = Principal("acme", "user:alice", org, user="alice")
    key = Principal("acme", "acme1", org)
    assert (user.kind, user.limit_scope) == (PrincipalKind.USER, Scope.user("acme", "alice"))
    assert (key.kind, key.limit_scope) == (PrincipalKind.API_KEY, Scope.key("acme", "acme1"))
    # A key id that looks like a user is still a key.
    odd = Principal("acme", "user:bob", org)
    assert odd.limit_scope.kind is ScopeKind.KEY


def test_names_that_cannot_be_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="unless it is the organization"):
        Scope("acme", ScopeKind.KEY)
    with pytest.raises(ValueError, match="unless it is the organization"):
        Scope("acme", ScopeKind.ORGANIZATION, "x")
    with pytest.raises(ValueError, match="never as a rate"):
        LimitKey(Scope("acme"), Measure.USD)
    requests_per_day = LimitKey(Scope("acme"), Measure.REQUESTS, WindowKind.DAY)
    with pytest.raises(ValueError, match="a QuotaSpec cannot be named"):
        QuotaSpec(requests_per_day, 10, WindowKind.MONTH, 1)
    with pytest.raises(ValueError, match="a BudgetSpec cannot be named"):
        BudgetSpec(requests_per_day, 10, WindowKind.DAY, 1)
    with pytest.raises(ValueError, match="a RateSpec cannot be named"):
        RateSpec(requests_per_day, LimitKind.RATE, GcraLimit(1, 1_000_000, 1), 1)
