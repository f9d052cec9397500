"""Full-jitter backoff: every wait within [0, min(cap, base * 2^n)], spread across
replicas, and back to the base after a success."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.backoff import Backoff, Retrying

bases = st.floats(min_value=1e-3, max_value=10.0)
factors = st.floats(min_value=1.0, max_value=1e4)
seeds = st.integers(min_value=0, max_value=2**64)


@st.composite
def policies(draw: st.DrawFn) -> Backoff:
    base = draw(bases)
    return Backoff(base_s=base, cap_s=base * draw(factors))


@given(policies(), st.integers(min_value=0, max_value=5000), seeds)
def test_every_wait_is_within_zero_and_the_capped_exponential(
    policy: Backoff, failures: int, seed: int
) -> None:
    bound = min(policy.cap_s, policy.base_s * 2.0 ** min(failures, 1023))
    assert policy.ceiling(failures) == bound
    assert 0.0 <= policy.delay(failures, random.Random(seed)) <= bound


@given(policies(), st.lists(seeds, min_size=2, max_size=20, unique=True))
def test_replicas_with_their_own_generators_do_not_wait_alike(
    policy: Backoff, replica_seeds: list[int]
) -> None:
    """The point of the jitter: replicas that failed together retry apart."""
    waits = []
    for seed in replica_seeds:
        retry = Retrying(policy, random.Random(seed))
        waits.append(tuple(retry.failed() for _ in range(4)))
    assert len(set(waits)) > 1


def test_waits_cover_the_whole_window() -> None:
    """Full jitter, not a small jitter on top of the exponential: a thousand replicas'
    third waits fill [0, 0.8 s] evenly (fixed seeds, so no flakiness)."""
    policy = Backoff(base_s=0.2, cap_s=5.0)
    waits = [policy.delay(2, random.Random(seed)) for seed in range(1000)]
    ceiling = policy.ceiling(2)
    for low in (0.0, 0.25, 0.5, 0.75):
        share = sum(low * ceiling <= w < (low + 0.25) * ceiling for w in waits) / len(waits)
        assert 0.2 < share < 0.3, (low, share)


@given(policies(), st.integers(min_value=1, max_value=50), seeds)
def test_a_success_starts_again_from_the_base(policy: Backoff, failures: int, seed: int) -> None:
    retry = Retrying(policy, random.Random(seed))
    for _ in range(failures):
        retry.failed()
    assert retry.failures == failures
    retry.succeeded()
    assert retry.failures == 0
    assert retry.failed() <= policy.base_s


@given(policies())
def test_the_ceiling_doubles_up_to_the_cap_and_stays(policy: Backoff) -> None:
    ceilings = [policy.ceiling(n) for n in range(2000)]
    assert ceilings[0] == policy.base_s
    assert all(b == min(policy.cap_s, 2 * a) for a, b in itertools.pairwise(ceilings))
    assert ceilings[-1] == policy.cap_s


@pytest.mark.parametrize(
    ("base", "cap", "message"),
    [(0.0, 1.0, "base_s must be positive"), (1.0, 0.5, "cap_s (0.5) must be at least base_s")],
)
def test_a_policy_that_cannot_wait_is_refused(base: float, cap: float, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Backoff(base_s=base, cap_s=cap)
