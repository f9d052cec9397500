"""Limit specs, holds, and the in-memory limit store (the embedded default).

Rules:
- A `Spec` names a limit and the cost of this request against it, with no
  state: the store binds each spec to its current state and calls `decide`.
  Rate specs keep one state per key; quota and budget specs keep one per
  window, under `<key>:<window id>`, so a new day or month starts at zero.
- An admitted request leaves a `Hold` for every quota and budget it charged
  (a worst case: prompt bound + max_tokens). `settle` replaces each hold by the
  actual amount in the window the hold was taken in, even if a new window has
  begun since; a hold is never counted twice (settling one twice is a no-op).
- `MemoryLedger` is real code, not a test double: one process's store,
  atomic because nothing else touches it between bind, decide and write.
  The Redis store must behave identically (its contract tests say so).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from router_core.limits.admission import (
    BudgetCheck,
    Decision,
    Kind,
    LimitCheck,
    QuotaCheck,
    RateCheck,
    State,
    decide,
)
from router_core.limits.budget import BudgetState, settle
from router_core.limits.gcra import GcraLimit, Tat
from router_core.limits.integers import MAX_SAFE_INTEGER, NEVER
from router_core.limits.windows import WindowKind, window_of


@attrs.frozen
class RateSpec:
    key: str
    kind: Kind
    limit: GcraLimit
    cost: int


@attrs.frozen
class QuotaSpec:
    key: str
    limit: int
    window: WindowKind
    cost: int


@attrs.frozen
class BudgetSpec:
    key: str
    # nano-USD
    limit: int
    window: WindowKind
    cost: int


Spec = RateSpec | QuotaSpec | BudgetSpec


@attrs.frozen
class Hold:
    """A charge taken at admission, to be replaced by the actual amount."""

    id: str
    # The state key, window included.
    key: str
    kind: Kind
    amount: int
    expire_at_us: int


@attrs.frozen
class Admission:
    decision: Decision
    now_us: int
    # Empty unless admitted.
    holds: tuple[Hold, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


def state_key(spec: Spec, now_us: int) -> str:
    if isinstance(spec, RateSpec):
        return spec.key
    return f"{spec.key}:{window_of(spec.window, now_us).id}"


def bind(spec: Spec, key: str, state: State | None) -> LimitCheck:
    """The check of `spec` against its current `state` (None: never written)."""
    if isinstance(spec, RateSpec):
        tat = state if isinstance(state, Tat) else Tat()
        return RateCheck(key, spec.kind, spec.limit, tat, spec.cost)
    if isinstance(spec, QuotaSpec):
        used = state if isinstance(state, int) else 0
        return QuotaCheck(key, spec.limit, spec.window, used, spec.cost)
    budget = state if isinstance(state, BudgetState) else BudgetState()
    return BudgetCheck(key, spec.limit, spec.window, budget, spec.cost)


def holds_for(request_id: str, specs: Sequence[Spec], now_us: int) -> tuple[Hold, ...]:
    holds = []
    for spec in specs:
        if isinstance(spec, RateSpec) or spec.cost == 0:
            continue
        kind = Kind.QUOTA if isinstance(spec, QuotaSpec) else Kind.BUDGET
        window = window_of(spec.window, now_us)
        holds.append(Hold(request_id, state_key(spec, now_us), kind, spec.cost, window.end_us))
    return tuple(holds)


def settled(state: State | None, hold: Hold, actual: int) -> State:
    """The state of `hold.key` once `hold` is replaced by `actual`."""
    if hold.kind is Kind.QUOTA:
        used = state if isinstance(state, int) else 0
        # Saturated, like a budget (see `budget.settle`): still above any limit.
        return min(max(0, used - hold.amount) + actual, MAX_SAFE_INTEGER)
    budget = state if isinstance(state, BudgetState) else BudgetState()
    return settle(budget, hold.amount, actual)


@attrs.define
class _Entry:
    state: State
    expire_at_us: int


@attrs.define
class MemoryLedger:
    """Limit state of one process. `now_us` is passed in by the caller."""

    _entries: dict[str, _Entry] = attrs.field(factory=dict)
    _open_holds: set[tuple[str, str]] = attrs.field(factory=set)
    _admissions: int = 0

    def get(self, key: str, now_us: int) -> State | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expire_at_us != NEVER and entry.expire_at_us <= now_us:
            del self._entries[key]
            return None
        return entry.state

    def admit(self, request_id: str, specs: Sequence[Spec], now_us: int) -> Admission:
        keys = [state_key(spec, now_us) for spec in specs]
        checks = [bind(s, k, self.get(k, now_us)) for s, k in zip(specs, keys, strict=True)]
        decision = decide(checks, now_us)
        if not decision.allowed:
            return Admission(decision, now_us)
        for write in decision.new_states:
            self._entries[write.key] = _Entry(write.state, write.expire_at_us)
        holds = holds_for(request_id, specs, now_us)
        self._open_holds.update((h.id, h.key) for h in holds)
        self._prune(now_us)
        return Admission(decision, now_us, holds)

    def settle(self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int) -> None:
        for hold, actual in zip(holds, actuals, strict=True):
            if (hold.id, hold.key) not in self._open_holds:
                continue
            self._open_holds.discard((hold.id, hold.key))
            new_state = settled(self.get(hold.key, now_us), hold, actual)
            self._entries[hold.key] = _Entry(new_state, hold.expire_at_us)

    @property
    def open_holds(self) -> int:
        return len(self._open_holds)

    def _prune(self, now_us: int) -> None:
        # Amortized: sweep expired keys once every 1,024 admissions.
        self._admissions += 1
        if self._admissions % 1024:
            return
        for key in [
            k
            for k, e in self._entries.items()
            if e.expire_at_us != NEVER and e.expire_at_us <= now_us
        ]:
            del self._entries[key]
