"""Fair shares of a saturated router, by organization, weighted by priority.

Rules:
- An organization's weight is its priority's: high 4, normal 2, low 1.
- Below capacity nobody waits: a free slot goes to whoever asks (the caller
  asks `arrival` only at capacity, and hands slots over with `next_served`
  as soon as they free, so the queue is empty whenever a slot is free).
- The active organizations are those holding a slot or waiting, and the one
  arriving. An organization's share of a quantity (the slots, the queue) is
  that quantity x its weight / the sum of the active weights.
- At capacity, an arrival:
  1. is shed (`fair_share`) if its organization holds its share of the slots
     or more while another organization waits: those would be served first;
  2. waits, if the queue has room and its organization has fewer waiting
     than its share of the queue (at least one place); shed (`fair_share`)
     if the queue has room but its organization's share of it is used;
  3. with the queue full, takes the place of the newest waiter of the
     organization most over its own share of the queue, when that one has
     more waiting per weight than the arrival's would with it (the waiter
     is shed, `fair_share`);
  4. else is shed (`queue_full`).
- A freed slot goes to the waiting organization with the least
  (slots held + 1) / weight, ties to the one waiting longest: over a
  saturated spell the slots held tend to the weighted shares, and an
  organization that floods gains nothing over one that sends a request now
  and then. Within an organization, the key's priority orders the waiters,
  then arrival (the caller keeps that order).
- Every verdict depends only on the counts passed in: no clock, no queue.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import attrs

from router_core.config_enums import Priority

WEIGHT = {Priority.HIGH: 4, Priority.NORMAL: 2, Priority.LOW: 1}
# The order of waiters within an organization: lower first.
RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class ShedReason(enum.StrEnum):
    """Why a request was answered 503 `overloaded` (the status and metrics name these)."""

    # The event loop was behind by more than server.admission.max_loop_lag_ms.
    LOOP_LAG = "loop_lag"
    # At capacity with the queue full (or no queue configured).
    QUEUE_FULL = "queue_full"
    # Waited server.queue_timeout_ms without a slot freeing.
    QUEUE_TIMEOUT = "queue_timeout"
    # Its organization held or queued more than its share while others waited.
    FAIR_SHARE = "fair_share"
    # Every backend of the model was at its own max_in_flight.
    BACKEND_CAPACITY = "backend_capacity"


@attrs.frozen
class Load:
    """What one organization holds and has waiting."""

    holding: int
    waiting: int
    weight: int
    # The arrival number of its longest waiter (lower: waiting longer).
    since: int = 0


class Action(enum.StrEnum):
    WAIT = "wait"
    SHED = "shed"


@attrs.frozen
class Verdict:
    action: Action
    reason: ShedReason | None = None
    # The organization whose newest waiter gives its place to the arrival.
    evict: str | None = None


def share(quantity: float, weight: int, total_weight: int) -> float:
    return quantity * weight / total_weight if total_weight > 0 else quantity


def arrival(
    organization: str,
    weight: int,
    loads: Mapping[str, Load],
    *,
    capacity: int,
    max_queued: int,
) -> Verdict:
    """What happens to a request arriving at capacity. `loads`: the organizations
    holding a slot or waiting (the arriving one may be absent)."""
    own = loads.get(organization, Load(0, 0, weight))
    total_weight = sum(load.weight for name, load in loads.items() if name != organization)
    total_weight += weight
    others_waiting = any(load.waiting > 0 for name, load in loads.items() if name != organization)
    if own.holding >= share(capacity, weight, total_weight) and others_waiting:
        return Verdict(Action.SHED, ShedReason.FAIR_SHARE)
    queued = sum(load.waiting for load in loads.values())
    if queued < max_queued:
        if own.waiting >= queue_share(max_queued, weight, total_weight):
            return Verdict(Action.SHED, ShedReason.FAIR_SHARE)
        return Verdict(Action.WAIT)
    victim = _most_over(organization, loads, max_queued, total_weight)
    if victim is not None:
        load = loads[victim]
        if load.waiting * weight > (own.waiting + 1) * load.weight:
            return Verdict(Action.WAIT, evict=victim)
    return Verdict(Action.SHED, ShedReason.QUEUE_FULL)


def queue_share(max_queued: int, weight: int, total_weight: int) -> int:
    """Places of the queue an organization may fill (at least one, if there is a queue)."""
    if max_queued <= 0:
        return 0
    return max(1, math.floor(share(max_queued, weight, total_weight)))


def _most_over(
    organization: str, loads: Mapping[str, Load], max_queued: int, total_weight: int
) -> str | None:
    """The other organization most over its share of the queue (by waiters per weight)."""
    best: str | None = None
    for name, load in loads.items():
        if name == organization:
            continue
        if load.waiting <= queue_share(max_queued, load.weight, total_weight):
            continue
        if best is None or load.waiting * loads[best].weight > loads[best].waiting * load.weight:
            best = name
    return best


def next_served(loads: Mapping[str, Load]) -> str | None:
    """The organization whose waiter gets the slot just freed (None: nobody waits)."""
    best: str | None = None
    best_key: tuple[float, int] | None = None
    for name, load in loads.items():
        if load.waiting <= 0:
            continue
        key = ((load.holding + 1) / load.weight, load.since)
        if best_key is None or key < best_key:
            best, best_key = name, key
    return best
