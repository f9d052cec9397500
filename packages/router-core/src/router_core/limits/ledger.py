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
- Specs are named by a typed `LimitKey` (router_core.limits.scopes); the
  string a store keeps a limit under is built here, by `storage_key`, and
  nowhere else. Its format is what every deployed store already holds, byte
  for byte: `org:<org>`, then `:key:<id>`, `:user:<subject>` or
  `:model:<model>` for a narrower scope, then `:rps` or `:tpm` for a rate
  of requests or tokens, or `:<req|tok|usd>:<day|month|total>` for a window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import attrs

from router_core.limits.admission import (
    BudgetCheck,
    Decision,
    LimitCheck,
    LimitKind,
    QuotaCheck,
    RateCheck,
    State,
    decide,
)
from router_core.limits.budget import BudgetState, settle
from router_core.limits.gcra import GcraLimit, Tat
from router_core.limits.integers import MAX_SAFE_INTEGER, NEVER
from router_core.limits.scopes import Key, LimitKey, Measure, ScopeKind
from router_core.limits.windows import WindowKind, window_of

_RATE_MEASURES = {LimitKind.RATE: Measure.REQUESTS, LimitKind.TOKENS_RATE: Measure.TOKENS}


def _check_name(spec: Spec) -> None:
    """A planned name says what its spec is: a rate of requests or tokens, or a
    quota (requests, tokens) or a budget (nano-USD) in the spec's window."""
    key = spec.key
    if not isinstance(key, LimitKey):
        return
    if isinstance(spec, RateSpec):
        fits = key.is_rate and _RATE_MEASURES.get(spec.kind) is key.measure
    else:
        budget = isinstance(spec, BudgetSpec)
        fits = key.window is spec.window and (key.measure is Measure.USD) == budget
    if not fits:
        raise ValueError(f"a {type(spec).__name__} cannot be named {key}")


@attrs.frozen
class RateSpec:
    key: Key
    kind: LimitKind
    limit: GcraLimit
    cost: int

    __attrs_post_init__ = _check_name


@attrs.frozen
class QuotaSpec:
    key: Key
    limit: int
    window: WindowKind
    cost: int

    __attrs_post_init__ = _check_name


@attrs.frozen
class BudgetSpec:
    key: Key
    # nano-USD
    limit: int
    window: WindowKind
    cost: int

    __attrs_post_init__ = _check_name


Spec = RateSpec | QuotaSpec | BudgetSpec


def rate_spec(key: LimitKey, limit: GcraLimit, cost: int) -> RateSpec:
    """The spec of a request or token rate, its kind from what it counts."""
    kind = LimitKind.TOKENS_RATE if key.measure is Measure.TOKENS else LimitKind.RATE
    return RateSpec(key, kind, limit, cost)


def window_spec(key: LimitKey, limit: int, cost: int) -> QuotaSpec | BudgetSpec:
    """The spec of a quota (requests, tokens) or a budget (nano-USD) per window."""
    window = key.window
    if window is None:
        raise ValueError(f"{key} is a rate, not a windowed limit")
    cls = BudgetSpec if key.measure is Measure.USD else QuotaSpec
    return cls(key, limit, window, cost)


@attrs.frozen
class Hold:
    """A charge taken at admission, to be replaced by the actual amount."""

    id: str
    # The state key, window included.
    key: str
    kind: LimitKind
    amount: int
    expire_at_us: int
    # The limit it was taken on (the spec's key).
    spec_key: Key


# How scopes and measures are spelled in stored keys: never change these, or
# every counter already stored is lost.
_SCOPE_WORDS = {ScopeKind.KEY: "key", ScopeKind.USER: "user", ScopeKind.MODEL: "model"}
_RATE_WORDS = {Measure.REQUESTS: "rps", Measure.TOKENS: "tpm"}
_MEASURE_WORDS = {Measure.REQUESTS: "req", Measure.TOKENS: "tok", Measure.USD: "usd"}


def storage_key(key: Key) -> str:
    """The string a store keeps a spec's state under (a window's id not included)."""
    return key if isinstance(key, str) else _storage_name(key)


# A config has a bounded set of limit keys (scopes x measures x windows), and
# every admission asks for each of its keys' names.
@functools.lru_cache(maxsize=65_536)
def _storage_name(key: LimitKey) -> str:
    scope = key.scope
    name = f"org:{scope.organization}"
    if scope.kind is not ScopeKind.ORGANIZATION:
        name += f":{_SCOPE_WORDS[scope.kind]}:{scope.id}"
    if key.window is None:
        return f"{name}:{_RATE_WORDS[key.measure]}"
    return f"{name}:{_MEASURE_WORDS[key.measure]}:{key.window.value}"


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
    """The key of `spec`'s state at `now_us`: a quota's or budget's names its window."""
    name = storage_key(spec.key)
    if isinstance(spec, RateSpec):
        return name
    return f"{name}:{window_of(spec.window, now_us).id}"


def bind(spec: Spec, key: str, state: State | None) -> LimitCheck:
    """The check of `spec` against its current `state` (None: never written)."""
    if isinstance(spec, RateSpec):
        tat = state if isinstance(state, Tat) else Tat()
        return RateCheck(key, spec.kind, spec.limit, tat, spec.cost, spec.key)
    if isinstance(spec, QuotaSpec):
        used = state if isinstance(state, int) else 0
        return QuotaCheck(key, spec.limit, spec.window, used, spec.cost, spec.key)
    budget = state if isinstance(state, BudgetState) else BudgetState()
    return BudgetCheck(key, spec.limit, spec.window, budget, spec.cost, spec.key)


def holds_for(request_id: str, specs: Sequence[Spec], now_us: int) -> tuple[Hold, ...]:
    holds = []
    for spec in specs:
        if isinstance(spec, RateSpec) or spec.cost == 0:
            continue
        kind = LimitKind.QUOTA if isinstance(spec, QuotaSpec) else LimitKind.BUDGET
        window = window_of(spec.window, now_us)
        key = state_key(spec, now_us)
        holds.append(Hold(request_id, key, kind, spec.cost, window.end_us, spec.key))
    return tuple(holds)


def settled(state: State | None, hold: Hold, actual: int) -> State:
    """The state of `hold.key` once `hold` is replaced by `actual`."""
    if hold.kind is LimitKind.QUOTA:
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
