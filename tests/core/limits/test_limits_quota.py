"""Quotas: admit while used + cost fits the limit, never past it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.limits import MAX_SAFE_INTEGER, QuotaResult, quota_check


def test_hand_computed_quota() -> None:
    assert quota_check(used=0, cost=3, limit=5) == QuotaResult(True, 3, 2)
    assert quota_check(used=3, cost=2, limit=5) == QuotaResult(True, 5, 0)
    assert quota_check(used=5, cost=1, limit=5) == QuotaResult(False, 5, 0)
    assert quota_check(used=3, cost=3, limit=5) == QuotaResult(False, 3, 2)


def test_cost_zero_is_a_peek_and_a_lowered_limit_admits_nothing() -> None:
    assert quota_check(used=4, cost=0, limit=5) == QuotaResult(True, 4, 1)
    assert quota_check(used=9, cost=0, limit=5) == QuotaResult(False, 9, 0)
    assert quota_check(used=9, cost=1, limit=5) == QuotaResult(False, 9, 0)


def test_the_largest_values_stay_exact() -> None:
    top = MAX_SAFE_INTEGER
    assert quota_check(top - 1, 1, top) == QuotaResult(True, top, 0)
    assert quota_check(top, top, top) == QuotaResult(False, top, 0)
    with pytest.raises(ValueError, match="cost"):
        quota_check(0, top + 1, top)
    with pytest.raises(ValueError, match="used"):
        quota_check(-1, 0, 1)


@given(st.integers(0, 1000), st.lists(st.integers(0, 100), max_size=60))
def test_used_is_the_sum_admitted_and_never_exceeds_the_limit(limit: int, costs: list[int]) -> None:
    used, admitted = 0, 0
    for cost in costs:
        r = quota_check(used, cost, limit)
        assert r.allowed == (used + cost <= limit)
        admitted += cost if r.allowed else 0
        used = r.new_used
        assert used == admitted <= limit
        assert r.remaining == limit - used
