"""Rate limits, quotas and budgets, and how limits behave."""

from __future__ import annotations

from decimal import Decimal

import attrs

from router_core.config.fields import (
    _check_fields,
    _checked,
    _nanos,
    _one_of,
    _optional_positive,
    _positive,
    _positive_at_most,
)
from router_core.config_enums import (
    FailureMode,
    MaxTokensPolicy,
    Period,
)

# The longest `limits.hold_ttl_s`: 366 days.
MAX_HOLD_TTL_S = 366 * 86_400

# The `per` of a rate limit, in microseconds.
PERIOD_US = {"second": 1_000_000, "minute": 60_000_000, "hour": 3_600_000_000}


@attrs.frozen
class RateLimit:
    """`rate` units per `per`, of which up to `burst` at once (default: `rate`)."""

    # Units allowed per `per`.
    rate: int = _checked(validator=_positive)
    # The period of `rate`.
    per: Period = _checked(default=Period.SECOND, validator=_one_of(Period))
    # Units allowed at once (default: `rate`).
    burst: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Quotas:
    """Counts per calendar day or month (UTC)."""

    # Counts per UTC calendar day and month; a request over any is refused with 402.
    requests_per_day: int | None = _checked(default=None, validator=_optional_positive)
    requests_per_month: int | None = _checked(default=None, validator=_optional_positive)
    tokens_per_day: int | None = _checked(default=None, validator=_optional_positive)
    tokens_per_month: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Budget:
    """Spend limits in USD, from the `prices` table."""

    # USD per UTC day, per UTC month, and in total (never resets).
    per_day: Decimal | None = _checked(default=None, validator=_nanos)
    per_month: Decimal | None = _checked(default=None, validator=_nanos)
    total: Decimal | None = _checked(default=None, validator=_nanos)

    __attrs_post_init__ = _check_fields

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.per_day, self.per_month, self.total))


# Its hash is kept: the limit planner looks a scope's limits up on every request.
@attrs.frozen(cache_hash=True)
class Limits:
    """Limits of one scope: an organization, an API key, or an organization's model."""

    # Requests per period (GCRA, with a burst).
    requests: RateLimit | None = None
    # Tokens (prompt bound plus max_tokens, then actual) per period.
    tokens: RateLimit | None = None
    # Requests and tokens per calendar day or month (UTC).
    quotas: Quotas = Quotas()
    # Spend per day, per month, or in total.
    budget: Budget = Budget()


@attrs.frozen
class FailurePolicy:
    """What a limit does when its shared store (Redis) cannot answer in time."""

    # fail_open: decide against a local share (limit / expected_replicas);
    # fail_closed: refuse with 503.
    rate_limits: FailureMode = _checked(
        default=FailureMode.FAIL_OPEN, validator=_one_of(FailureMode)
    )
    # Quotas and budgets refuse (fail_closed) by default: they guard money.
    quotas: FailureMode = _checked(default=FailureMode.FAIL_CLOSED, validator=_one_of(FailureMode))
    budgets: FailureMode = _checked(default=FailureMode.FAIL_CLOSED, validator=_one_of(FailureMode))

    __attrs_post_init__ = _check_fields


@attrs.frozen
class LimitSettings:
    """How limits behave, and without their store (where they are kept: `state`)."""

    # A decision's time budget, measured on the store's side: one that starts
    # later than this after it was sent charges nothing and follows
    # on_store_failure. A router whose own loop is behind still reads its
    # answers (up to state.redis.timeout_ms): late is not down.
    timeout_ms: int = _checked(default=100, validator=_positive)
    # Replicas sharing the limits: a fail-open rate limit allows limit / this.
    expected_replicas: int = _checked(default=1, validator=_positive)
    # When max_tokens is absent or more than the budget left allows:
    # clamp it to what the budget affords, or refuse with 402.
    max_tokens_policy: MaxTokensPolicy = _checked(
        default=MaxTokensPolicy.CLAMP, validator=_one_of(MaxTokensPolicy)
    )
    # The worst case reserved for a request without max_tokens (and then sent
    # to the backend as its max_tokens), when a budget or token limit applies.
    default_max_tokens: int = _checked(default=4096, validator=_positive)
    # What each kind of limit does when the store does not answer.
    on_store_failure: FailurePolicy = FailurePolicy()
    # How long (seconds, > 0, at most 366 days) a request's holds (its
    # reserved quota and budget) may stay open: a hold not settled by then
    # belongs to a request the router gave up on or lost (a crash, a kill),
    # and is reaped, its amount returned to the limit. Set it above the
    # longest a request can run: a settlement that arrives after the reap
    # still charges the actual, but meanwhile others could use what it held.
    # Read at start-up, like `state.store`.
    hold_ttl_s: int = _checked(
        default=3_600, validator=_positive_at_most(MAX_HOLD_TTL_S, "366 days")
    )

    __attrs_post_init__ = _check_fields
