"""Rate limits, quotas and spend budgets: pure integer math, `now` passed in.

One module per algorithm, each opening with its rules: `gcra` (request and
token rates), `windows` (calendar windows), `quota`, `budget` (reservations
in nano-USD) and `admission` (the all-or-nothing decision over all of them).
"""

from router_core.limits.admission import (
    BudgetCheck,
    Decision,
    Denial,
    HeadersInfo,
    LimitCheck,
    LimitKind,
    LimitType,
    QuotaCheck,
    RateCheck,
    RateInfo,
    State,
    StateWrite,
    decide,
)
from router_core.limits.budget import (
    BudgetState,
    Price,
    ReserveResult,
    cost,
    max_affordable_tokens,
    price_from_usd_per_million,
    release,
    reserve,
    settle,
    worst_case,
)
from router_core.limits.gcra import GcraLimit, GcraResult, Tat, gcra_check
from router_core.limits.integers import MAX_NOW_US, MAX_SAFE_INTEGER, NEVER
from router_core.limits.quota import QuotaResult, quota_check
from router_core.limits.windows import Window, WindowKind, window_of

__all__ = [
    "MAX_NOW_US",
    "MAX_SAFE_INTEGER",
    "NEVER",
    "BudgetCheck",
    "BudgetState",
    "Decision",
    "Denial",
    "GcraLimit",
    "GcraResult",
    "HeadersInfo",
    "LimitCheck",
    "LimitKind",
    "LimitType",
    "Price",
    "QuotaCheck",
    "QuotaResult",
    "RateCheck",
    "RateInfo",
    "ReserveResult",
    "State",
    "StateWrite",
    "Tat",
    "Window",
    "WindowKind",
    "cost",
    "decide",
    "gcra_check",
    "max_affordable_tokens",
    "price_from_usd_per_million",
    "quota_check",
    "release",
    "reserve",
    "settle",
    "window_of",
    "worst_case",
]
