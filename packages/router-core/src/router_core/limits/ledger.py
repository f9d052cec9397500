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
  Holds have a lifetime and are reaped when a request outlives it (see
  `holds`): settling a reaped hold charges only the actual.
- An admission may carry a deadline (µs, the store's clock): one that runs
  after it (now > deadline) raises `AdmissionExpired` and writes nothing,
  no reaping included, so a decision the caller gave up on is never charged.
  Bad input is refused with ValueError before anything is decided: a spec's
  fields (a negative cost or limit) when the spec is made, duplicate keys or
  an instant out of range when it is admitted, whatever the deadline.
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
    rate_kind,
)
from router_core.limits.budget import BudgetState, settle
from router_core.limits.gcra import GcraLimit, Tat
from router_core.limits.holds import (
    ADMIT_REAP_LIMIT,
    DEFAULT_HOLD_TTL_US,
    MAX_HOLD_TTL_US,
    HoldBook,
    reaped_until,
)

# Hold's home was this module: importers keep importing it from here.
from router_core.limits.holds import Hold as Hold
from router_core.limits.integers import MAX_NOW_US, MAX_SAFE_INTEGER, NEVER, bounded, require_int
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


# A spec checks its own fields as the check `bind` makes of it would, when it
# is made: a store then refuses bad input without binding every spec twice.
@attrs.frozen
class RateSpec:
    key: Key
    kind: LimitKind = attrs.field(validator=rate_kind)
    limit: GcraLimit
    cost: int = attrs.field(validator=bounded(0))

    __attrs_post_init__ = _check_name


@attrs.frozen
class QuotaSpec:
    key: Key
    limit: int = attrs.field(validator=bounded(0))
    window: WindowKind
    cost: int = attrs.field(validator=bounded(0))

    __attrs_post_init__ = _check_name


@attrs.frozen
class BudgetSpec:
    key: Key
    # nano-USD
    limit: int = attrs.field(validator=bounded(0))
    window: WindowKind
    cost: int = attrs.field(validator=bounded(0))

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
    return charged(state, hold.kind, hold.amount, actual)


def charged(state: State | None, kind: LimitKind, held: int, actual: int) -> State:
    """The state of a quota or budget window once `held` of it is replaced by
    `actual`: a settlement (held 0 for a reaped hold) or a reap (actual 0)."""
    if kind is LimitKind.QUOTA:
        used = state if isinstance(state, int) else 0
        # Saturated, like a budget (see `budget.settle`): still above any limit.
        return min(max(0, used - held) + actual, MAX_SAFE_INTEGER)
    budget = state if isinstance(state, BudgetState) else BudgetState()
    return settle(budget, held, actual)


def kind_of(state: State) -> LimitKind | None:
    """Whether a state is a quota's or a budget's (None: a rate's), as a reap finds it."""
    if isinstance(state, BudgetState):
        return LimitKind.BUDGET
    return LimitKind.QUOTA if isinstance(state, int) else None


class AdmissionExpired(Exception):
    """The admission ran after its deadline, so nothing was decided or written."""

    def __init__(self, now_us: int, deadline_us: int) -> None:
        super().__init__(f"admission at {now_us} µs ran after its deadline {deadline_us} µs")
        self.now_us = now_us
        self.deadline_us = deadline_us


def check_admission(
    specs: Sequence[Spec], keys: Sequence[str], now_us: int, deadline_us: int | None
) -> None:
    """Refuse bad input with ValueError (as `decide` would), before any deadline or
    write (each spec checked its own fields when it was made)."""
    require_int("now", now_us, 0, MAX_NOW_US)
    if deadline_us is not None:
        require_int("deadline", deadline_us, 0, MAX_NOW_US)
    if len(specs) != len(keys):
        raise ValueError(f"{len(specs)} specs but {len(keys)} keys")
    if len(set(keys)) != len(keys):
        raise ValueError(f"each check needs its own key, got {list(keys)}")


@attrs.define
class _Entry:
    state: State
    expire_at_us: int


@attrs.define
class MemoryLedger:
    """Limit state of one process. `now_us` is passed in by the caller."""

    # How long a hold stays open before it is reaped (µs).
    hold_ttl_us: int = attrs.field(
        default=DEFAULT_HOLD_TTL_US, kw_only=True, validator=bounded(1, MAX_HOLD_TTL_US)
    )
    _entries: dict[str, _Entry] = attrs.field(factory=dict)
    _holds: HoldBook = attrs.field(factory=HoldBook)
    _admissions: int = 0

    def get(self, key: str, now_us: int) -> State | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expire_at_us != NEVER and entry.expire_at_us <= now_us:
            del self._entries[key]
            return None
        return entry.state

    def admit(
        self,
        request_id: str,
        specs: Sequence[Spec],
        now_us: int,
        *,
        deadline_us: int | None = None,
    ) -> Admission:
        keys = [state_key(spec, now_us) for spec in specs]
        check_admission(specs, keys, now_us, deadline_us)
        if deadline_us is not None and now_us > deadline_us:
            raise AdmissionExpired(now_us, deadline_us)
        for spec, key in zip(specs, keys, strict=True):
            if not isinstance(spec, RateSpec):
                self._reap(key, now_us, ADMIT_REAP_LIMIT)
        checks = [bind(s, k, self.get(k, now_us)) for s, k in zip(specs, keys, strict=True)]
        decision = decide(checks, now_us)
        if not decision.allowed:
            return Admission(decision, now_us)
        for write in decision.new_states:
            self._entries[write.key] = _Entry(write.state, write.expire_at_us)
        holds = holds_for(request_id, specs, now_us)
        for hold in holds:
            self._holds.add(hold, now_us + self.hold_ttl_us)
        self._prune(now_us)
        return Admission(decision, now_us, holds)

    def settle(self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int) -> None:
        for hold, actual in zip(holds, actuals, strict=True):
            held = self._holds.take(hold, now_us)
            if held is None:
                continue
            new_state = charged(self.get(hold.key, now_us), hold.kind, held, actual)
            self._entries[hold.key] = _Entry(new_state, hold.expire_at_us)

    def reap(self, now_us: int) -> int:
        """Reap every hold open past its lifetime at `now_us`; returns how many."""
        require_int("now", now_us, 0, MAX_NOW_US)
        return sum(self._reap(key, now_us, None) for key in self._holds.windows())

    @property
    def open_holds(self) -> int:
        return self._holds.open

    def _reap(self, key: str, now_us: int, limit: int | None) -> int:
        due = self._holds.due(key, now_us, limit)
        if not due:
            return 0
        state = self.get(key, now_us)
        kind = None if state is None else kind_of(state)
        if state is None or kind is None:
            return len(due)  # the window is over: nothing to return, nothing to remember
        for _, amount in due:
            state = charged(state, kind, amount, 0)
        entry = self._entries[key]
        entry.state = state
        self._holds.remember(key, due, reaped_until(now_us, entry.expire_at_us), now_us)
        return len(due)

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
        self._holds.prune(now_us)
