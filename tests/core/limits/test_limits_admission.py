"""Admission: every limit at once, all or nothing, with headers and Retry-After."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.limits import (
    NEVER,
    BudgetCheck,
    BudgetState,
    Decision,
    Denial,
    GcraLimit,
    LimitCheck,
    LimitKind,
    LimitType,
    QuotaCheck,
    RateCheck,
    RateInfo,
    StateWrite,
    Tat,
    WindowKind,
    decide,
    gcra_check,
    reserve,
    window_of,
)

SECOND = 1_000_000
NOON = int(datetime(2024, 2, 29, 12, tzinfo=UTC).timestamp()) * SECOND
END_OF_DAY = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * SECOND
FRESH = Tat()
PER_SECOND = GcraLimit(rate=10, period_us=SECOND, burst=20)
TOKENS_PER_MINUTE = GcraLimit(rate=10_000, period_us=60 * SECOND, burst=10_000)


def rate(key: str, tat: Tat = FRESH, cost: int = 1, limit: GcraLimit = PER_SECOND) -> RateCheck:
    return RateCheck(key, LimitKind.RATE, limit, tat, cost)


def tokens(key: str, tat: Tat = FRESH, cost: int = 500) -> RateCheck:
    return RateCheck(key, LimitKind.TOKENS_RATE, TOKENS_PER_MINUTE, tat, cost)


def budget(state: BudgetState, cost: int, limit: int = 1000) -> BudgetCheck:
    return BudgetCheck("org:budget:day", limit, WindowKind.DAY, state, cost)


def test_admitted_returns_every_new_state_with_its_expiry() -> None:
    decision = decide(
        [
            rate("org:rate"),
            tokens("org:tpm"),
            QuotaCheck("key:quota:day", 100, WindowKind.DAY, 7, 1),
            budget(BudgetState(100, 200), 300),
        ],
        NOON,
    )
    assert decision.allowed
    assert decision.denied_by is None
    assert decision.new_states == (
        StateWrite("org:rate", Tat(NOON + 100_000, 0), NOON + 100_000),
        StateWrite("org:tpm", Tat(NOON + 3 * SECOND, 0), NOON + 3 * SECOND),
        StateWrite("key:quota:day", 8, END_OF_DAY),
        StateWrite("org:budget:day", BudgetState(100, 500), END_OF_DAY),
    )
    assert decision.headers_info.requests == RateInfo("org:rate", LimitKind.RATE, 20, 19, 100_000)
    assert decision.headers_info.tokens == RateInfo(
        "org:tpm", LimitKind.TOKENS_RATE, 10_000, 9_500, 3 * SECOND
    )


def test_a_denial_writes_nothing_and_names_the_first_failing_check() -> None:
    busy = Tat(NOON + 2 * SECOND, 0)  # the burst is used up
    checks: list[LimitCheck] = [
        rate("org:rate"),
        budget(BudgetState(600, 300), 200),
        rate("key:rate", busy),
    ]
    decision = decide(checks, NOON)
    assert decision == Decision(
        False,
        Denial("org:budget:day", LimitKind.BUDGET, LimitType.BUDGET, 900, 1000, 43_200),
        (),
        decision.headers_info,
    )
    # Headers on a denial are a peek: nothing was charged to org:rate.
    assert decision.headers_info.requests == RateInfo("key:rate", LimitKind.RATE, 20, 0, 2 * SECOND)
    alone = decide([rate("org:rate"), budget(BudgetState(1000, 0), 1)], NOON)
    assert alone.headers_info.requests == RateInfo("org:rate", LimitKind.RATE, 20, 20, 0)
    rate_first = decide(checks[2:] + checks[:2], NOON)
    assert rate_first.denied_by == Denial(
        "key:rate", LimitKind.RATE, LimitType.RATE_LIMIT, 20, 20, 1
    )


def test_quota_denial_reports_usage_and_waits_for_the_window() -> None:
    month = QuotaCheck("key:quota:month", 1000, WindowKind.MONTH, 1000, 1)
    denial = decide([month], NOON).denied_by
    end_of_month = window_of(WindowKind.MONTH, NOON).end_us
    assert denial == Denial(
        "key:quota:month",
        LimitKind.QUOTA,
        LimitType.QUOTA,
        1000,
        1000,
        (end_of_month - NOON) // SECOND,
    )
    # A new month reads an absent (zero) counter and admits.
    assert decide(
        [QuotaCheck("key:quota:month:next", 1000, WindowKind.MONTH, 0, 1)], end_of_month
    ).allowed


@pytest.mark.parametrize(
    ("check", "retry_after_s"),
    [
        (rate("r", cost=21), NEVER),
        (QuotaCheck("q", 5, WindowKind.DAY, 0, 6), NEVER),
        (budget(BudgetState(), 1001), NEVER),
        (BudgetCheck("b", 1000, WindowKind.TOTAL, BudgetState(1000, 0), 1), NEVER),
        (rate("r", Tat(NOON + 2 * SECOND + 1, 0)), 1),  # 100,001 µs rounds up to 1 s
        (rate("r", Tat(NOON + 2 * SECOND + 1, 0), limit=GcraLimit(1, SECOND, 2)), 2),  # 1 s + 1 µs
        (QuotaCheck("q", 5, WindowKind.DAY, 5, 1), 43_200),
    ],
)
def test_retry_after_rounds_up_or_says_never(check: LimitCheck, retry_after_s: int) -> None:
    denial = decide([check], NOON).denied_by
    assert denial is not None
    assert denial.retry_after_s == retry_after_s


def test_retry_after_is_at_least_one_second_just_before_midnight() -> None:
    check = QuotaCheck("q", 5, WindowKind.DAY, 5, 1)
    denial = decide([check], END_OF_DAY - 1).denied_by
    assert denial is not None
    assert denial.retry_after_s == 1


def test_peeks_are_reported_but_never_written() -> None:
    decision = decide([rate("org:rate", cost=0), tokens("org:tpm", cost=0)], NOON)
    assert decision.allowed
    assert decision.new_states == ()
    assert decision.headers_info.requests == RateInfo("org:rate", LimitKind.RATE, 20, 20, 0)


def test_the_most_constraining_rate_limit_feeds_the_headers() -> None:
    checks = [
        rate("org:rate", Tat(NOON + SECOND, 0)),  # 10 remaining before the charge
        rate("model:rate", Tat(NOON + 1_450_000, 0)),  # 5 remaining, sooner reset
        rate("key:rate", Tat(NOON + 1_500_000, 0)),  # 5 remaining
    ]
    info = decide(checks, NOON).headers_info
    assert info.requests == RateInfo("key:rate", LimitKind.RATE, 20, 4, 1_600_000)
    assert info.tokens is None


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="own key"):
        decide([rate("k"), tokens("k")], NOON)
    with pytest.raises(ValueError, match="kind"):
        RateCheck("k", LimitKind.QUOTA, PER_SECOND, Tat(), 1)


# --- invariants --------------------------------------------------------------------

request = st.tuples(
    st.integers(0, 400_000),  # microseconds since the previous request
    st.integers(0, 3),  # request-rate cost
    st.integers(0, 9_000),  # token-rate cost
    st.integers(0, 400),  # budget reservation
)


def apply(states: dict[str, object], writes: Sequence[StateWrite]) -> None:
    for write in writes:
        states[write.key] = write.state


@given(st.lists(request, max_size=60))
def test_all_or_nothing_keeps_every_limit_exact(arrivals: list[tuple[int, int, int, int]]) -> None:
    states: dict[str, object] = {}
    now = NOON
    org_rate = GcraLimit(5, SECOND, 5)
    key_rate = GcraLimit(3, SECOND, 4)
    admitted: list[tuple[int, int, int, int]] = []
    for gap, requests, token_count, amount in arrivals:
        now += gap
        org_tat = states.get("org:rate", Tat())
        key_tat = states.get("key:rate", Tat())
        tpm_tat = states.get("org:tpm", Tat())
        spend = states.get("org:budget:day", BudgetState())
        assert isinstance(org_tat, Tat)
        assert isinstance(key_tat, Tat)
        assert isinstance(tpm_tat, Tat)
        assert isinstance(spend, BudgetState)
        checks: list[LimitCheck] = [
            rate("org:rate", org_tat, requests, org_rate),
            rate("key:rate", key_tat, requests, key_rate),
            tokens("org:tpm", tpm_tat, token_count),
            budget(spend, amount, limit=5000),
        ]
        decision = decide(checks, now)
        each = [
            gcra_check(org_tat, now, requests, 5, SECOND, 5).allowed,
            gcra_check(key_tat, now, requests, 3, SECOND, 4).allowed,
            gcra_check(tpm_tat, now, token_count, 10_000, 60 * SECOND, 10_000).allowed,
            reserve(spend, amount, 5000).allowed,
        ]
        assert decision.allowed == all(each)
        if decision.allowed:
            admitted.append((now, requests, token_count, amount))
            apply(states, decision.new_states)
        else:
            assert decision.new_states == ()
            assert decision.denied_by is not None
            assert decision.denied_by.key == checks[each.index(False)].key
            assert (
                decision.denied_by.retry_after_s >= 1 or decision.denied_by.retry_after_s == NEVER
            )

    spent = states.get("org:budget:day", BudgetState())
    assert isinstance(spent, BudgetState)
    assert spent.reserved == sum(a for *_, a in admitted) <= 5000
    for limit, column in ((org_rate, 1), (key_rate, 1), (TOKENS_PER_MINUTE, 2)):
        events = [(event[0], event[column]) for event in admitted]
        for i, (t0, _) in enumerate(events):
            units = 0
            for t1, u in events[i:]:
                units += u
                assert units * limit.period_us <= limit.burst * limit.period_us + limit.rate * (
                    t1 - t0
                )
