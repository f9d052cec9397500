"""Holds: what an admission charged, how long it may stay open, and reaping.

Rules:
- An admitted request leaves a `Hold` for every quota and budget it charged
  (its worst case) on the window it was charged in. Settling replaces the
  hold by the actual amount, once: a hold is open, or reaped, or gone.
- Every hold has a reap time: its admission's now + the store's hold
  lifetime (`limits.hold_ttl_s`). A hold still open at its reap time
  (reap time <= now) belongs to a request the router gave up on or lost
  (timed out, crashed, killed before settling): it is reaped, which returns
  its amount to its window (a quota's used, a budget's reserved, never below
  0), so reservations never outlive their request by more than the lifetime.
- Holds are reaped oldest reap time first, ties by request id (the order of
  a Redis sorted set). An admission first reaps up to ADMIT_REAP_LIMIT due
  holds of each window it touches, so what they held counts at once; a
  background reaper (`reap`) reaps every due hold of every window. Reaping
  is not a charge: it happens even when the admission is then denied, but
  not for an admission that ran after its deadline, which writes nothing.
- A reaped hold is remembered (request id -> amount) on its window until
  REAPED_TTL_US after the reap or the window's end, whichever comes first,
  rounded up to the ms as Redis keeps TTLs (a later reap on the window sets
  that instant again). Settling a remembered hold charges only the actual
  (its amount was returned already) and forgets it; settling a hold neither
  open nor remembered is a no-op (settled already), so a settlement that
  arrives late, or twice, is still applied exactly once. A hold whose
  window's state is gone when it is reaped (the window has ended) is dropped
  without being remembered: nothing is left to charge it to.
- Duration and instants are integer µs below 2**53: now <= MAX_NOW_US (2**52)
  and a hold lifetime <= MAX_HOLD_TTL_US (2**50), which leaves room for a
  Redis key to outlive the latest reap time by another such span.
- `HoldBook` keeps one store's holds, and knows nothing of states; the store
  (MemoryLedger, the simulator's ledger) applies the amounts. The Redis store
  keeps the same in a hash of open holds, a sorted set by reap time and a
  hash of reaped holds per window (router_server.redis_limits).
"""

from __future__ import annotations

import heapq

import attrs

from router_core.limits.admission import LimitKind
from router_core.limits.integers import NEVER, US_PER_S
from router_core.limits.scopes import Key

DEFAULT_HOLD_TTL_US = 3_600 * US_PER_S
MAX_HOLD_TTL_US = 2**50
REAPED_TTL_US = 7 * 86_400 * US_PER_S
# How many due holds of each window one admission reaps, at most.
ADMIT_REAP_LIMIT = 16
# A queue this much longer than its open holds is rebuilt (settled holds
# leave their entries behind until then).
_COMPACT_SLACK = 64


@attrs.frozen
class Hold:
    """A charge taken at admission, to be replaced by the actual amount."""

    id: str
    # The state key, window included.
    key: str
    kind: LimitKind
    amount: int
    # The end of its window (NEVER for `total`): a settlement goes to that window.
    expire_at_us: int
    # The limit it was taken on (the spec's key).
    spec_key: Key


def reaped_until(now_us: int, window_end_us: int) -> int:
    """Until when holds reaped at `now_us` on a window ending at `window_end_us`
    (NEVER: never) are remembered: REAPED_TTL_US or the window's end, in whole ms."""
    until = now_us + REAPED_TTL_US
    if window_end_us != NEVER and window_end_us < until:
        until = window_end_us
    return -(-until // 1000) * 1000


@attrs.define
class _Window:
    end_us: int
    # Open holds: request id -> (amount, reap time).
    live: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    # (reap time, request id) of open holds, and of settled ones until popped.
    queue: list[tuple[int, str]] = attrs.field(factory=list)
    # Reaped holds: request id -> amount, until `reaped_until_us`.
    reaped: dict[str, int] = attrs.field(factory=dict)
    reaped_until_us: int = 0


class HoldBook:
    """The open and the reaped holds of one store, per window (state key)."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._open = 0

    @property
    def open(self) -> int:
        """How many holds are open (neither settled nor reaped)."""
        return self._open

    def windows(self) -> list[str]:
        """The windows that have holds, open or reaped."""
        return list(self._windows)

    def add(self, hold: Hold, reap_at_us: int) -> None:
        """Open `hold`, to be reaped at `reap_at_us`; the same request id on the same
        window replaces the hold it had there (as a Redis HSET and ZADD do)."""
        window = self._windows.get(hold.key)
        if window is None:
            window = self._windows[hold.key] = _Window(hold.expire_at_us)
        if hold.id not in window.live:
            self._open += 1
        window.live[hold.id] = (hold.amount, reap_at_us)
        heapq.heappush(window.queue, (reap_at_us, hold.id))

    def due(self, key: str, now_us: int, limit: int | None = None) -> list[tuple[str, int]]:
        """Close and return (request id, amount) of up to `limit` (None: all) open
        holds of window `key` due at `now_us`, oldest first: the caller returns
        their amounts and `remember`s them."""
        window = self._windows.get(key)
        if window is None:
            return []
        due: list[tuple[str, int]] = []
        queue, live = window.queue, window.live
        while queue and queue[0][0] <= now_us and (limit is None or len(due) < limit):
            reap_at, hold_id = heapq.heappop(queue)
            held = live.get(hold_id)
            if held is None or held[1] != reap_at:
                continue  # settled, or opened again since with another reap time
            del live[hold_id]
            due.append((hold_id, held[0]))
        self._open -= len(due)
        return due

    def remember(self, key: str, reaped: list[tuple[str, int]], until_us: int, now_us: int) -> None:
        """Remember holds reaped from window `key` at `now_us` until `until_us`."""
        window = self._windows[key]
        if window.reaped_until_us <= now_us:
            window.reaped.clear()
        window.reaped.update(reaped)
        window.reaped_until_us = until_us

    def take(self, hold: Hold, now_us: int) -> int | None:
        """Close `hold` for its settlement: the amount its window still holds for it
        (`hold.amount` if open, 0 if reaped), or None if it was settled already."""
        window = self._windows.get(hold.key)
        if window is None:
            return None
        if window.live.pop(hold.id, None) is not None:
            self._open -= 1
            if len(window.queue) > 2 * len(window.live) + _COMPACT_SLACK:
                window.queue = [(at, i) for i, (_, at) in window.live.items()]
                heapq.heapify(window.queue)
            return hold.amount
        if window.reaped_until_us <= now_us:
            window.reaped.clear()
        return None if window.reaped.pop(hold.id, None) is None else 0

    def prune(self, now_us: int) -> None:
        """Forget windows that have ended (their holds with them, as their Redis keys
        expire) and windows left with nothing open or remembered."""
        for key, window in list(self._windows.items()):
            ended = window.end_us != NEVER and window.end_us <= now_us
            if ended or (not window.live and window.reaped_until_us <= now_us):
                self._open -= len(window.live)
                del self._windows[key]
