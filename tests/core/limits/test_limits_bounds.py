"""Bounded inputs cannot overflow the limit arithmetic: a request that validation
accepts, at any price the config allows, is planned, admitted and settled without
an exception, whatever usage the backend reports; sums saturate at 2**53 - 1."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router_core.config_codec import structure
from router_core.limits.budget import BudgetState, Price, cost, settle
from router_core.limits.integers import MAX_SAFE_INTEGER
from router_core.limits.ledger import BudgetSpec, MemoryLedger, QuotaSpec, Spec
from router_core.limits.plan import actuals, plan_limits
from router_core.limits.scopes import Scope
from router_core.limits.windows import WindowKind
from router_core.problems import ClientError
from router_core.requests import Operation, validate_openai
from router_core.usage import from_backend

NOW = 20_000 * 86_400_000_000  # a midnight, UTC
# The config's own bounds: prices below 9,000,000 USD per million tokens (whole
# nano-USD per token), budgets below 9,000,000 USD.
PRICES = st.integers(0, 8_999_999_999).map(lambda nanos: f"{nanos // 1000}.{nanos % 1000:03d}")


def config(input_usd: str, output_usd: str) -> Any:
    return structure(
        {
            "backends": {"b": {"base_url": "http://127.0.0.1:9/v1"}},
            "models": {"m": {"backends": [{"backend": "b"}]}},
            "prices": {"m": {"input": input_usd, "output": output_usd}},
            "organizations": {
                "acme": {
                    "models": ["*"],
                    "keys": [{"id": "key1", "hash": "sha256:" + "0" * 64}],
                    "limits": {
                        "requests": {"rate": 100, "per": "second"},
                        "tokens": {"rate": 1_000_000, "per": "minute"},
                        # More than the arithmetic holds: kept at 2**53 - 1.
                        "quotas": {"tokens_per_day": 10**17, "requests_per_day": 2**63},
                        "budget": {"per_day": "8999999.999999999"},
                    },
                }
            },
        }
    )


@given(
    max_tokens=st.integers() | st.integers(2**20, 2**31 - 1) | st.none(),
    input_usd=PRICES,
    output_usd=PRICES,
    reported=st.dictionaries(
        st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens"]), st.integers()
    ),
)
def test_a_valid_request_at_any_price_is_planned_admitted_and_settled(
    max_tokens: int | None, input_usd: str, output_usd: str, reported: dict[str, int]
) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    try:
        request = validate_openai(Operation.CHAT, body)
    except ClientError:
        return  # out of range: the 422 is test_requests' to check
    cfg = config(input_usd, output_usd)
    plan = plan_limits(cfg, Scope.key("acme", "key1"), request)
    for spec in plan.specs:
        assert 0 <= spec.cost <= MAX_SAFE_INTEGER
    ledger = MemoryLedger()
    # Two in flight, so that two saturated settlements land on the same windows.
    admissions = [ledger.admit(f"r{i}", plan.specs, NOW) for i in range(2)]
    usage = from_backend({"usage": reported})
    for admission in admissions:
        amounts = actuals(plan, admission.holds, usage, served=True)
        assert all(0 <= amount <= MAX_SAFE_INTEGER for amount in amounts)
        ledger.settle(admission.holds, amounts, NOW + 1)


@given(
    price=st.builds(Price, st.integers(0, MAX_SAFE_INTEGER), st.integers(0, MAX_SAFE_INTEGER)),
    prompt=st.integers(0, MAX_SAFE_INTEGER),
    completion=st.integers(0, MAX_SAFE_INTEGER),
)
def test_cost_saturates(price: Price, prompt: int, completion: int) -> None:
    exact = price.input_nanos_per_token * prompt + price.output_nanos_per_token * completion
    assert cost(price, prompt, completion) == min(exact, MAX_SAFE_INTEGER)


@given(
    committed=st.integers(0, MAX_SAFE_INTEGER),
    reserved=st.integers(0, MAX_SAFE_INTEGER),
    amount=st.integers(0, MAX_SAFE_INTEGER),
    actual=st.integers(0, MAX_SAFE_INTEGER),
)
def test_settling_saturates_and_keeps_the_window_refusing(
    committed: int, reserved: int, amount: int, actual: int
) -> None:
    if committed + reserved > MAX_SAFE_INTEGER:
        reserved = MAX_SAFE_INTEGER - committed
    state = settle(BudgetState(committed, reserved), amount, actual)
    left = max(0, reserved - amount)
    assert state.reserved == left
    assert state.committed == min(committed + actual, MAX_SAFE_INTEGER - left)


def test_a_huge_actual_saturates_a_quota_and_a_budget() -> None:
    ledger = MemoryLedger()
    specs: list[Spec] = [
        QuotaSpec("q", 1_000, WindowKind.DAY, 10),
        BudgetSpec("b", 1_000, WindowKind.DAY, 10),
    ]
    first = ledger.admit("r1", specs, NOW)
    second = ledger.admit("r2", specs, NOW)
    assert first.allowed
    assert second.allowed
    ledger.settle(first.holds, [MAX_SAFE_INTEGER] * 2, NOW + 1)
    ledger.settle(second.holds, [MAX_SAFE_INTEGER] * 2, NOW + 2)
    quota_key, budget_key = (hold.key for hold in first.holds)
    assert ledger.get(quota_key, NOW + 3) == MAX_SAFE_INTEGER
    assert ledger.get(budget_key, NOW + 3) == BudgetState(MAX_SAFE_INTEGER, 0)
    assert not ledger.admit("r3", specs, NOW + 4).allowed
