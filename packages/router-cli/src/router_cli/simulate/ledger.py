"""The limit ledgers the simulation admits and settles against.

Rules:
- `SimLedger` takes exactly the decisions of `router_core.limits.ledger.MemoryLedger`
  (the router's embedded store) with far fewer objects per request: the
  same specs, state keys and holds (as `state_key` and `holds_for` make
  them), the same settlement (`charged`), the same rule functions (`gcra_check`, `quota_check`,
  `reserve`, `window_of`), in the loop of `admission.decide`: checks in
  order, the first that fails refuses the request and nothing is written;
  otherwise every check with a cost > 0 is written. Holds live and are
  reaped as `router_core.limits.holds` says (the same `HoldBook`), with
  the lifetime `limits.hold_ttl_s`. What it leaves out is only what a
  simulation does not read: Retry-After, the x-ratelimit figures, deadlines.
  A Hypothesis test holds it to MemoryLedger, decision by decision.
- `CoreLedger` is MemoryLedger itself behind the same two methods, for tests
  and for anyone who wants the slower, literal path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from router_core.limits.admission import LimitKind, LimitType, State
from router_core.limits.budget import BudgetState, reserve
from router_core.limits.gcra import Tat, gcra_check
from router_core.limits.holds import (
    ADMIT_REAP_LIMIT,
    DEFAULT_HOLD_TTL_US,
    MAX_HOLD_TTL_US,
    HoldBook,
    reaped_until,
)
from router_core.limits.integers import MAX_NOW_US, NEVER, require_int
from router_core.limits.ledger import (
    Hold,
    MemoryLedger,
    QuotaSpec,
    RateSpec,
    Spec,
    charged,
    kind_of,
    storage_key,
)
from router_core.limits.quota import quota_check
from router_core.limits.scopes import Key
from router_core.limits.windows import window_of

_NO_TAT = Tat()
_NO_SPEND = BudgetState()
_PRUNE_EVERY = 1024


class Refusal(NamedTuple):
    """The check that refused a request (as `admission.Denial` reports it)."""

    key: str
    limit_type: LimitType
    # Rate limits: burst - remaining; quotas: used; budgets: committed + reserved.
    current_usage: int
    limit: int
    spec_key: Key | None


# A request's admission as the simulation reads it: why it was refused, or its holds.
SimAdmission = tuple[Refusal | None, tuple[Hold, ...]]


class LimitLedger(Protocol):
    """Limit counters and holds on the simulation's clock (`now_us` passed in)."""

    def admit(self, request_id: str, specs: Sequence[Spec], now_us: int) -> SimAdmission: ...

    def settle(self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int) -> None: ...


class SimLedger:
    def __init__(self, *, hold_ttl_us: int = DEFAULT_HOLD_TTL_US) -> None:
        require_int("hold_ttl_us", hold_ttl_us, 1, MAX_HOLD_TTL_US)
        self.hold_ttl_us = hold_ttl_us
        # state key -> (state, expires at in µs or NEVER)
        self._entries: dict[str, tuple[State, int]] = {}
        self._holds = HoldBook()
        self._admissions = 0

    def _get(self, key: str, now_us: int) -> State | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expire = entry[1]
        if expire != NEVER and expire <= now_us:
            del self._entries[key]
            return None
        return entry[0]

    def admit(self, request_id: str, specs: Sequence[Spec], now_us: int) -> SimAdmission:
        require_int("now", now_us, 0, MAX_NOW_US)
        if self._holds.open:
            # As MemoryLedger: every window touched first reaps its due holds.
            for spec in specs:
                if not isinstance(spec, RateSpec):
                    key = f"{storage_key(spec.key)}:{window_of(spec.window, now_us).id}"
                    self._reap(key, now_us, ADMIT_REAP_LIMIT)
        writes: list[tuple[str, State, int]] = []
        holds: list[Hold] = []
        for spec in specs:
            if type(spec) is RateSpec:
                key = storage_key(spec.key)
                state = self._get(key, now_us)
                tat = state if isinstance(state, Tat) else _NO_TAT
                limit = spec.limit
                r = gcra_check(tat, now_us, spec.cost, limit.rate, limit.period_us, limit.burst)
                if not r.allowed:
                    usage = limit.burst - r.remaining
                    return Refusal(key, LimitType.RATE_LIMIT, usage, limit.burst, spec.key), ()
                if spec.cost > 0:
                    writes.append((key, r.new_tat, now_us + r.reset_after_us))
                continue
            assert not isinstance(spec, RateSpec)
            window = window_of(spec.window, now_us)
            key = f"{storage_key(spec.key)}:{window.id}"
            state = self._get(key, now_us)
            new_state: State
            if type(spec) is QuotaSpec:
                used = state if isinstance(state, int) else 0
                q = quota_check(used, spec.cost, spec.limit)
                if not q.allowed:
                    return Refusal(key, LimitType.QUOTA, used, spec.limit, spec.key), ()
                new_state = q.new_used
            else:
                budget = state if isinstance(state, BudgetState) else _NO_SPEND
                b = reserve(budget, spec.cost, spec.limit)
                if not b.allowed:
                    return Refusal(key, LimitType.BUDGET, budget.spent, spec.limit, spec.key), ()
                new_state = b.new_state
            if spec.cost > 0:
                writes.append((key, new_state, window.end_us))
                # As `holds_for`: a hold for every quota and budget charged.
                kind = LimitKind.QUOTA if type(spec) is QuotaSpec else LimitKind.BUDGET
                holds.append(Hold(request_id, key, kind, spec.cost, window.end_us, spec.key))
        entries = self._entries
        for key, state, expire in writes:
            entries[key] = (state, expire)
        reap_at = now_us + self.hold_ttl_us
        for hold in holds:
            self._holds.add(hold, reap_at)
        self._prune(now_us)
        return None, tuple(holds)

    def settle(self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int) -> None:
        for hold, actual in zip(holds, actuals, strict=True):
            held = self._holds.take(hold, now_us)
            if held is None:
                continue
            state = self._get(hold.key, now_us)
            self._entries[hold.key] = (
                charged(state, hold.kind, held, actual),
                hold.expire_at_us,
            )

    def reap(self, now_us: int) -> int:
        return sum(self._reap(key, now_us, None) for key in self._holds.windows())

    def _reap(self, key: str, now_us: int, limit: int | None) -> int:
        # As MemoryLedger._reap.
        due = self._holds.due(key, now_us, limit)
        if not due:
            return 0
        state = self._get(key, now_us)
        kind = None if state is None else kind_of(state)
        if state is None or kind is None:
            return len(due)
        for _, amount in due:
            state = charged(state, kind, amount, 0)
        expire = self._entries[key][1]
        self._entries[key] = (state, expire)
        self._holds.remember(key, due, reaped_until(now_us, expire), now_us)
        return len(due)

    def state(self, key: str, now_us: int) -> State | None:
        return self._get(key, now_us)

    def _prune(self, now_us: int) -> None:
        # As MemoryLedger: sweep expired keys once every 1,024 admissions (memory only).
        self._admissions += 1
        if self._admissions % _PRUNE_EVERY:
            return
        for key in [k for k, (_, exp) in self._entries.items() if exp != NEVER and exp <= now_us]:
            del self._entries[key]
        self._holds.prune(now_us)


class CoreLedger:
    """MemoryLedger behind the `LimitLedger` methods."""

    def __init__(self, *, hold_ttl_us: int = DEFAULT_HOLD_TTL_US) -> None:
        self.memory = MemoryLedger(hold_ttl_us=hold_ttl_us)

    def admit(self, request_id: str, specs: Sequence[Spec], now_us: int) -> SimAdmission:
        admission = self.memory.admit(request_id, specs, now_us)
        denial = admission.decision.denied_by
        if denial is None:
            return None, admission.holds
        refusal = Refusal(
            denial.key, denial.limit_type, denial.current_usage, denial.limit, denial.spec_key
        )
        return refusal, ()

    def settle(self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int) -> None:
        self.memory.settle(holds, actuals, now_us)

    def reap(self, now_us: int) -> int:
        return self.memory.reap(now_us)

    def state(self, key: str, now_us: int) -> State | None:
        return self.memory.get(key, now_us)
