"""Exponential backoff with full jitter, for loops that retry a dependency forever.

Rules:
- After the n-th failure in a row (n = 0 for the first), the wait is drawn
  uniformly from [0, min(cap_s, base_s * 2**n)] ("full jitter"). Replicas that
  lost the same dependency at the same moment (a Redis restart) then spread
  their reconnections over the whole window instead of all arriving at once,
  and the mean wait is half the plain exponential one.
- A success resets the count: the next failure waits at most `base_s` again.
- The ceiling grows to `cap_s` and stays there, however long the outage
  (no float overflow).
- Randomness is a passed-in `random.Random`, one per loop; the caller waits.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

# 2.0 ** 1023 is the largest power of two a float holds.
_MAX_EXPONENT = 1023


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen
class Backoff:
    base_s: float = attrs.field(validator=_positive)
    cap_s: float = attrs.field(validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s ({self.cap_s}) must be at least base_s ({self.base_s})")

    def ceiling(self, failures: int) -> float:
        """The longest wait after `failures` earlier failures in a row."""
        if failures < 0:
            raise ValueError(f"failures must be zero or more, not {failures}")
        # A product past the float range is inf, which the cap then bounds.
        return min(self.cap_s, self.base_s * 2.0 ** min(failures, _MAX_EXPONENT))

    def delay(self, failures: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(failures))


@attrs.define
class Retrying:
    """One loop's failures in a row, and the wait each one earns."""

    policy: Backoff
    rng: random.Random
    failures: int = 0

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        wait = self.policy.delay(self.failures, self.rng)
        self.failures += 1
        return wait

    def succeeded(self) -> None:
        self.failures = 0
