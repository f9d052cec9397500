"""The admission decision: every limit a request touches, all or nothing.

Rules:
- `decide` walks the checks in the order given; the first that fails denies
  the request, and a denial writes nothing, so one refused limit never
  consumes another's capacity. Only when every check passes are the new
  states returned, for the store to write in the same atomic step.
- A check with cost 0 is a peek: it can deny, and it reports, but it is
  never written.
- Retry-After is whole seconds rounded up, at least 1 for a denial: the GCRA
  wait for a rate limit, the time to the window's end for a quota or a budget,
  or NEVER when waiting cannot help (a cost above the burst or the limit, or
  a `total` window).
- The x-ratelimit-* figures come from the most constraining request-rate and
  token-rate checks (fewest remaining, then longest reset), after the charge
  when admitted and as they stand (a peek) when denied.
- Every written state carries the instant it stops mattering, for the key's
  TTL: a TAT once it is in the past, a window's counter at the window's end.
- The Redis script implements this same loop; keep it a plain loop.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import ClassVar

import attrs

from router_core.limits.budget import BudgetState, reserve
from router_core.limits.gcra import GcraLimit, Tat, gcra_check
from router_core.limits.integers import MAX_NOW_US, NEVER, bounded, require_int, seconds_up
from router_core.limits.quota import quota_check
from router_core.limits.scopes import Key
from router_core.limits.windows import WindowKind, window_of


class LimitKind(enum.StrEnum):
    """What a check counts: a request rate, a token rate, a quota or a budget
    (a denial's `LimitType` tells the caller less: the two rates are one type)."""

    RATE = "rate"
    TOKENS_RATE = "tokens_rate"
    QUOTA = "quota"
    BUDGET = "budget"


class LimitType(enum.StrEnum):
    """The `limit_type` of a denial's body."""

    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"
    BUDGET = "budget"


def rate_kind(_: object, attribute: attrs.Attribute[LimitKind], value: LimitKind) -> None:
    """An attrs validator: a rate limit's kind is a request or a token rate."""
    if value not in (LimitKind.RATE, LimitKind.TOKENS_RATE):
        raise ValueError(f"{attribute.name} must be rate or tokens_rate, not {value}")


@attrs.frozen
class RateCheck:
    """A request-rate (cost 1) or token-rate (cost in tokens) limit on one key."""

    key: str
    kind: LimitKind = attrs.field(validator=rate_kind)
    limit: GcraLimit
    tat: Tat
    cost: int = attrs.field(validator=bounded(0))
    # The limit's name (the spec's key), handed on to a denial.
    spec_key: Key | None = None


@attrs.frozen
class QuotaCheck:
    """A request or token quota per window; `used` is the counter of the current window."""

    key: str
    limit: int = attrs.field(validator=bounded(0))
    window: WindowKind
    used: int = attrs.field(validator=bounded(0))
    cost: int = attrs.field(validator=bounded(0))
    spec_key: Key | None = None
    kind: ClassVar[LimitKind] = LimitKind.QUOTA


@attrs.frozen
class BudgetCheck:
    """A spend budget per window in nano-USD; `cost` is the amount to reserve."""

    key: str
    limit: int = attrs.field(validator=bounded(0))
    window: WindowKind
    state: BudgetState
    cost: int = attrs.field(validator=bounded(0))
    spec_key: Key | None = None
    kind: ClassVar[LimitKind] = LimitKind.BUDGET


LimitCheck = RateCheck | QuotaCheck | BudgetCheck
State = Tat | int | BudgetState


@attrs.frozen
class Denial:
    # The state key (a quota's or a budget's window included).
    key: str
    kind: LimitKind
    limit_type: LimitType
    # Rate limits: units held (burst - remaining) of `limit` = burst. Quotas: used.
    # Budgets: committed + reserved, in nano-USD.
    current_usage: int
    limit: int
    # Whole seconds, >= 1, or NEVER.
    retry_after_s: int
    # What refused: the refusing spec's key (typed when the limit was planned).
    spec_key: Key | None = None


@attrs.frozen
class StateWrite:
    key: str
    state: State
    # When the key may expire (µs since the epoch), or NEVER.
    expire_at_us: int


@attrs.frozen
class RateInfo:
    """One limit's figures for the x-ratelimit-* headers; `limit` is the burst."""

    key: str
    kind: LimitKind
    limit: int
    remaining: int
    reset_after_us: int


@attrs.frozen
class HeadersInfo:
    requests: RateInfo | None
    tokens: RateInfo | None


@attrs.frozen
class Decision:
    allowed: bool
    denied_by: Denial | None
    # Empty unless allowed.
    new_states: tuple[StateWrite, ...]
    headers_info: HeadersInfo


# What one check came to: the state to write (None for a peek or a denial),
# the rate figures (rate checks only), and the denial (None: allowed). The
# denial is built only for a check that denies: admitted requests are the
# common case, and a request checks several limits.
_Outcome = tuple[StateWrite | None, RateInfo | None, Denial | None]


def decide(checks: Sequence[LimitCheck], now: int) -> Decision:
    """Admit a request against every check at `now`, or deny it by the first that fails."""
    require_int("now", now, 0, MAX_NOW_US)
    keys = [check.key for check in checks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"each check needs its own key, got {keys}")
    writes: list[StateWrite] = []
    infos: list[RateInfo] = []
    for check in checks:
        write, info, denial = _evaluate(check, now, check.cost)
        if denial is not None:
            peeks = [_evaluate(c, now, 0)[1] for c in checks if isinstance(c, RateCheck)]
            return Decision(False, denial, (), _headers(peeks))
        if write is not None:
            writes.append(write)
        if info is not None:
            infos.append(info)
    return Decision(True, None, tuple(writes), _headers(infos))


def _evaluate(check: LimitCheck, now: int, cost: int) -> _Outcome:
    if isinstance(check, RateCheck):
        limit = check.limit
        r = gcra_check(check.tat, now, cost, limit.rate, limit.period_us, limit.burst)
        info = RateInfo(check.key, check.kind, limit.burst, r.remaining, r.reset_after_us)
        if not r.allowed:
            denial = Denial(
                check.key,
                check.kind,
                LimitType.RATE_LIMIT,
                limit.burst - r.remaining,
                limit.burst,
                seconds_up(r.retry_after_us),
                check.spec_key,
            )
            return None, info, denial
        if cost == 0:
            return None, info, None
        return StateWrite(check.key, r.new_tat, now + r.reset_after_us), info, None
    window = window_of(check.window, now)
    if isinstance(check, QuotaCheck):
        q = quota_check(check.used, cost, check.limit)
        new_state: State = q.new_used
        allowed, usage, limit_type = q.allowed, check.used, LimitType.QUOTA
    else:
        b = reserve(check.state, cost, check.limit)
        new_state = b.new_state
        allowed, usage, limit_type = b.allowed, check.state.spent, LimitType.BUDGET
    if not allowed:
        if cost > check.limit or window.end_us == NEVER:
            retry_s = NEVER
        else:
            retry_s = seconds_up(window.end_us - now)
        denial = Denial(
            check.key, check.kind, limit_type, usage, check.limit, retry_s, check.spec_key
        )
        return None, None, denial
    if cost == 0:
        return None, None, None
    return StateWrite(check.key, new_state, window.end_us), None, None


def _headers(infos: Sequence[RateInfo | None]) -> HeadersInfo:
    """The most constraining request-rate and token-rate figures: fewest remaining, then
    longest reset; the first listed wins a tie."""
    best: dict[LimitKind, RateInfo] = {}
    for info in infos:
        if info is None:
            continue
        current = best.get(info.kind)
        if current is None or (
            (info.remaining, -info.reset_after_us) < (current.remaining, -current.reset_after_us)
        ):
            best[info.kind] = info
    return HeadersInfo(best.get(LimitKind.RATE), best.get(LimitKind.TOKENS_RATE))
