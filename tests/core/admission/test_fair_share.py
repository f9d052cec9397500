"""Fair shares of a saturated router by organization: who waits, who is shed, who is
served next."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from router_core.config_enums import Priority
from router_core.fair_share import (
    WEIGHT,
    Action,
    Load,
    ShedReason,
    Verdict,
    arrival,
    next_served,
    queue_share,
    share,
)

N = WEIGHT[Priority.NORMAL]
weights = st.sampled_from(sorted(WEIGHT.values()))
loads = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.builds(
        Load,
        holding=st.integers(0, 40),
        waiting=st.integers(0, 40),
        weight=weights,
        since=st.integers(0, 1_000),
    ),
)


def test_a_lone_organization_may_use_the_whole_queue() -> None:
    assert arrival("a", N, {"a": Load(4, 7, N)}, capacity=4, max_queued=8) == Verdict(Action.WAIT)
    full = arrival("a", N, {"a": Load(4, 8, N)}, capacity=4, max_queued=8)
    assert full == Verdict(Action.SHED, ShedReason.QUEUE_FULL)


def test_a_flood_gives_way_to_an_organization_that_just_arrived() -> None:
    flooded = {"a": Load(4, 8, N, since=1)}
    # B arrives at a full queue: it takes the place of A's newest waiter.
    assert arrival("b", N, flooded, capacity=4, max_queued=8) == Verdict(Action.WAIT, evict="a")
    # A asks again while B waits: A holds more than its share, it is shed at once.
    both = {"a": Load(4, 7, N, since=1), "b": Load(0, 1, N, since=20)}
    assert arrival("a", N, both, capacity=4, max_queued=8) == Verdict(
        Action.SHED, ShedReason.FAIR_SHARE
    )
    # The freed slot goes to B.
    assert next_served(both) == "b"


def test_an_organization_over_its_share_of_a_queue_with_room_is_shed() -> None:
    queue = {"a": Load(1, 4, N), "b": Load(3, 1, N)}
    # A holds less than its share of the slots but has its share (4 of 8) waiting.
    assert arrival("a", N, queue, capacity=4, max_queued=8) == Verdict(
        Action.SHED, ShedReason.FAIR_SHARE
    )
    assert arrival("b", N, queue, capacity=4, max_queued=8).action is Action.SHED  # holds 3 > 2
    assert arrival("c", N, queue, capacity=4, max_queued=8) == Verdict(Action.WAIT)


def test_no_queue_sheds_at_capacity() -> None:
    assert arrival("a", N, {}, capacity=4, max_queued=0) == Verdict(
        Action.SHED, ShedReason.QUEUE_FULL
    )
    assert queue_share(0, N, N) == 0


def test_next_served_prefers_the_least_served_by_weight_then_the_longest_waiting() -> None:
    assert next_served({}) is None
    assert next_served({"a": Load(3, 0, N)}) is None
    high = WEIGHT[Priority.HIGH]
    assert next_served({"a": Load(3, 1, high), "b": Load(0, 1, N)}) == "b"  # 1.0 vs 0.5
    assert next_served({"a": Load(1, 1, high), "b": Load(0, 1, N)}) == "a"  # 0.5 vs 0.5...
    assert next_served({"a": Load(1, 1, high, 9), "b": Load(0, 1, N, 3)}) == "b"  # ...older


@given(loads=loads, organization=st.sampled_from(["a", "b", "e"]), weight=weights,
       capacity=st.integers(1, 50), max_queued=st.integers(0, 60))  # fmt: skip
def test_every_verdict_keeps_the_rules(
    loads: dict[str, Load], organization: str, weight: int, capacity: int, max_queued: int
) -> None:
    loads = {name: load for name, load in loads.items() if load.holding or load.waiting}
    if organization in loads:
        weight = loads[organization].weight
    verdict = arrival(organization, weight, loads, capacity=capacity, max_queued=max_queued)
    queued = sum(load.waiting for load in loads.values())
    own = loads.get(organization, Load(0, 0, weight))
    if verdict.action is Action.WAIT:
        assert verdict.reason is None
        if verdict.evict is None:
            assert queued < max_queued  # never beyond the queue's bound
        else:
            assert queued >= max_queued
            victim = loads[verdict.evict]
            assert verdict.evict != organization
            assert victim.waiting * weight > (own.waiting + 1) * victim.weight
    else:
        assert verdict.evict is None
        if verdict.reason is ShedReason.QUEUE_FULL:
            assert queued >= max_queued
        else:
            assert verdict.reason is ShedReason.FAIR_SHARE
            others = sum(load.weight for name, load in loads.items() if name != organization)
            holds_share = own.holding >= share(capacity, weight, others + weight)
            others_wait = any(load.waiting for name, load in loads.items() if name != organization)
            assert (holds_share and others_wait) or (
                queued < max_queued
                and own.waiting >= queue_share(max_queued, weight, others + weight)
            )


@given(
    weights=st.lists(weights, min_size=2, max_size=5),
    capacity=st.integers(1, 64),
    first=st.integers(0, 4),
)
def test_slots_turned_over_settle_at_the_weighted_shares(
    weights: list[int], capacity: int, first: int
) -> None:
    """Every organization always has a request waiting; requests take equally long
    (slots free in the order they were taken). Starting with every slot held by one
    organization, after each slot has turned over twice every organization holds
    its weighted share of the slots, within 2."""
    first %= len(weights)
    names = [str(i) for i in range(len(weights))]
    holding = [0] * len(weights)
    holding[first] = capacity
    slots = deque([first] * capacity)
    for _ in range(2 * capacity):
        holding[slots.popleft()] -= 1
        table = {n: Load(holding[i], 1, weights[i], since=i) for i, n in enumerate(names)}
        served = next_served(table)
        assert served is not None
        holding[int(served)] += 1
        slots.append(int(served))
    for i, weight in enumerate(weights):
        assert abs(holding[i] - share(capacity, weight, sum(weights))) <= 2
