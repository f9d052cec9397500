"""The integer domain shared by every limit algorithm.

Rules:
- All limit math is integer math: time in microseconds since the Unix epoch,
  money in nano-USD, counts in units. A Redis Lua script repeats it with
  doubles, which are exact only below 2**53, so every input is bounded here
  and each module keeps its intermediates below MAX_SAFE_INTEGER.
- The only division is floor division of a non-negative integer by a
  positive one (`ceil_div` included), which Lua computes exactly as
  `math.floor(a / b)` for 0 <= a < 2**53.
- NEVER (-1) stands for "no amount of waiting helps" wherever a duration or
  an instant is expected.
"""

from __future__ import annotations

from typing import Any

import attrs

MAX_SAFE_INTEGER = 2**53 - 1
# Latest accepted `now`: 2**52 µs after the epoch is in the year 2112, and the
# headroom above it keeps `now + a limit's span` exact.
MAX_NOW_US = 2**52
NEVER = -1
US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S


def require_int(name: str, value: int, low: int, high: int = MAX_SAFE_INTEGER) -> None:
    """Raise ValueError unless `value` is an int (not a bool) in [low, high]."""
    # The common case first, in one type check and one chained comparison: every
    # limit decision makes dozens of these calls (the simulator, millions).
    if type(value) is int and low <= value <= high:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")


def bounded(low: int, high: int = MAX_SAFE_INTEGER) -> Any:
    """An attrs validator applying `require_int` to the field."""

    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        require_int(attribute.name, value, low, high)

    return check


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for a >= 0, b >= 1, through floor division only."""
    return (a + b - 1) // b


def seconds_up(us: int) -> int:
    """Whole seconds, rounded up, in a duration of `us` (or NEVER for NEVER)."""
    return NEVER if us == NEVER else ceil_div(us, US_PER_S)
