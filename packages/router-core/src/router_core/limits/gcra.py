"""GCRA (generic cell rate algorithm) for request rates and token rates.

Rules:
- A limit admits `rate` units per `period_us` and at most `burst` units at
  once. Its whole state is one TAT (theoretical arrival time) per key; an
  absent key is `Tat()`, which means the same as any TAT at or before `now`.
- The emission interval T = period_us / rate is exact, never rounded: a TAT
  is the rational `us + frac / rate` microseconds, stored as two integers with
  0 <= frac < rate. (Scaling whole timestamps by `rate` instead would pass
  2**53 for any rate above 4, and a rounded T drifts until a client sending
  at exactly the rate is refused.)
- A request of `cost` units is admitted iff
  max(TAT, now) + cost * T <= now + burst * T, and then TAT becomes
  max(TAT, now) + cost * T. A denial, or a cost of 0 (a peek), leaves the TAT
  as it was. TAT therefore never decreases.
- Hence the units admitted at instants within [t0, t1] never exceed
  burst + rate * (t1 - t0) / period_us, even when `now` goes backwards (a
  step back only makes the TAT look further ahead, so it admits less), and a
  client sending at exactly the rate, at the first whole microsecond of each
  of its slots, is never refused.
- A cost above `burst` can never be admitted: its retry_after_us is NEVER.
- A `frac` not below `rate` (the limit was reconfigured) rounds the TAT up a
  microsecond: it may refuse a little, never admit extra.
- Integer operations only, in the order of `gcra_check`, every intermediate
  below 2**53 given the bounds checked on entry, floor division only of
  non-negative integers: the Lua script repeats it bit for bit.
"""

from __future__ import annotations

import attrs

from router_core.limits.integers import (
    MAX_NOW_US,
    NEVER,
    bounded,
    require_int,
)

# burst * period_us + rate may be at most this, so every scaled amount, and
# `now + burst * T`, stay well below 2**53.
MAX_SCALED_SPAN = 2**51
# Every TAT gcra_check returns is below now + burst * T <= this.
MAX_TAT_US = MAX_NOW_US + MAX_SCALED_SPAN


@attrs.frozen
class Tat:
    """A theoretical arrival time: `us + frac / rate` microseconds since the epoch."""

    us: int = attrs.field(default=0, validator=bounded(0, MAX_TAT_US))
    frac: int = attrs.field(default=0, validator=bounded(0, MAX_SCALED_SPAN))


@attrs.frozen
class GcraLimit:
    """`rate` units per `period_us`, with at most `burst` units at once."""

    rate: int = attrs.field(validator=bounded(1))
    period_us: int = attrs.field(validator=bounded(1))
    burst: int = attrs.field(validator=bounded(1))

    def __attrs_post_init__(self) -> None:
        check_span(self.rate, self.period_us, self.burst)


@attrs.frozen
class GcraResult:
    allowed: bool
    # The TAT to store: the input unchanged unless a cost > 0 was admitted.
    new_tat: Tat
    # Units of cost 1 that would be admitted right after this decision.
    remaining: int
    # 0 if allowed; else the wait after which the same cost is admitted, or NEVER.
    retry_after_us: int
    # Wait until the limit is back at its full burst (and the key may expire).
    reset_after_us: int


def check_span(rate: int, period_us: int, burst: int) -> None:
    if burst * period_us + rate > MAX_SCALED_SPAN:
        raise ValueError(
            f"burst * period_us + rate must be at most 2**51 to stay exact in Redis; "
            f"burst={burst}, period_us={period_us}, rate={rate} is too large"
        )


def gcra_check(tat: Tat, now: int, cost: int, rate: int, period_us: int, burst: int) -> GcraResult:
    """Decide whether `cost` units may pass at `now`, given the key's stored TAT."""
    require_int("now", now, 0, MAX_NOW_US)
    require_int("cost", cost, 0)
    require_int("rate", rate, 1)
    require_int("period_us", period_us, 1)
    require_int("burst", burst, 1)
    check_span(rate, period_us, burst)

    # base = max(TAT, now). Comparing whole microseconds is exact: with
    # frac < rate, TAT < now exactly when us < now.
    us, frac = (tat.us + 1, 0) if tat.frac >= rate else (tat.us, tat.frac)
    if us < now:
        us, frac = now, 0
    ahead_us = us - now
    cap = burst * period_us

    if cost > burst:
        return GcraResult(
            False,
            tat,
            _remaining(ahead_us, frac, cap, rate, period_us),
            NEVER,
            _reset(ahead_us, frac),
        )

    # Admit iff (base - now) <= (burst - cost) * T, compared as mixed-radix
    # pairs (microseconds, 1/rate-th microseconds).
    slack = (burst - cost) * period_us
    slack_us = slack // rate
    slack_frac = slack % rate
    if ahead_us > slack_us or (ahead_us == slack_us and frac > slack_frac):
        retry_us = ahead_us - slack_us + (1 if frac > slack_frac else 0)
        return GcraResult(
            False,
            tat,
            _remaining(ahead_us, frac, cap, rate, period_us),
            retry_us,
            _reset(ahead_us, frac),
        )

    if cost == 0:
        new_tat = tat
    else:
        step = cost * period_us
        us = us + step // rate
        frac = frac + step % rate
        if frac >= rate:
            us, frac = us + 1, frac - rate
        new_tat = Tat(us, frac)
        ahead_us = us - now
    return GcraResult(
        True, new_tat, _remaining(ahead_us, frac, cap, rate, period_us), 0, _reset(ahead_us, frac)
    )


def _remaining(ahead_us: int, frac: int, cap: int, rate: int, period_us: int) -> int:
    """floor((burst * T - ahead) / T), or 0 if the TAT is beyond the burst."""
    if ahead_us > cap // rate:
        # Also keeps ahead_us * rate below 2**53 when `now` went far back.
        return 0
    held = ahead_us * rate + frac
    return 0 if held > cap else (cap - held) // period_us


def _reset(ahead_us: int, frac: int) -> int:
    """ceil(ahead) in whole microseconds."""
    return ahead_us + (1 if frac > 0 else 0)
