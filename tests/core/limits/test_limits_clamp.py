"""The clamp policy's next max_tokens, which the router's limit gate and the simulator share."""

from __future__ import annotations

from typing import NamedTuple

from router_core.limits.admission import LimitType
from router_core.limits.budget import Price
from router_core.limits.clamp import MAX_TRIES, Clamp
from router_core.limits.plan import LimitPlan

# 1,000 nano-USD an input token, 2,000 an output token.
PRICE = Price(1_000, 2_000)


class Refused(NamedTuple):
    limit_type: LimitType
    limit: int
    current_usage: int


def plan(max_tokens: int | None = 100, price: Price | None = PRICE) -> LimitPlan:
    return LimitPlan((), max_tokens, prompt_bound=10, price=price)


def test_a_budget_refusal_is_tried_with_what_the_budget_affords() -> None:
    # 100,000 left: the prompt's 10 tokens cost 10,000, leaving 45 output tokens.
    refused = Refused(LimitType.BUDGET, 1_000_000, 900_000)
    assert Clamp("clamp").next(plan(), refused) == 45


def test_nothing_to_clamp() -> None:
    budget = Refused(LimitType.BUDGET, 1_000_000, 900_000)
    assert Clamp("reject").next(plan(), budget) is None
    assert Clamp("clamp").next(plan(), None) is None
    assert Clamp("clamp").next(plan(), Refused(LimitType.QUOTA, 10, 10)) is None
    assert Clamp("clamp").next(plan(), Refused(LimitType.RATE_LIMIT, 10, 10)) is None
    assert Clamp("clamp").next(plan(price=None), budget) is None
    assert Clamp("clamp").next(plan(max_tokens=None), budget) is None
    # Already within what is left; or not even one token left.
    assert Clamp("clamp").next(plan(max_tokens=45), budget) is None
    assert Clamp("clamp").next(plan(), Refused(LimitType.BUDGET, 1_000_000, 989_000)) is None


def test_at_most_one_try_per_budget_in_the_way() -> None:
    clamp = Clamp("clamp")
    tried = []
    max_tokens = 1_000
    left = 1_000_000
    while (
        n := clamp.next(plan(max_tokens), Refused(LimitType.BUDGET, 10**9, 10**9 - left))
    ) is not None:
        tried.append(n)
        max_tokens, left = n, left // 2
    assert len(tried) == MAX_TRIES == 3
    assert tried == sorted(tried, reverse=True)
