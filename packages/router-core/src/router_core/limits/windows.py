"""Fixed calendar windows in UTC for quotas and budgets: day, month, total.

Rules:
- A window is [start_us, end_us) and `id` numbers it within its kind: days
  since 1970-01-01, months since 1970-01, and 0 for `total`, the one window
  that never ends (end_us is NEVER). Keys carry the kind and the id, so a new
  window starts from an absent (zero) counter and the old key expires at
  `end_us`.
- UTC only, no leap seconds (as Unix time has none); a day is 86,400 s.
- Months come from Howard Hinnant's civil-from-days algorithm, integers only
  and every division a floor division of non-negative integers, so the Redis
  script computes the same window from the server's clock.
"""

from __future__ import annotations

import enum
import functools

import attrs

from router_core.limits.integers import MAX_NOW_US, NEVER, US_PER_DAY, require_int

# 1970-01-01 is day 719,468 of the proleptic Gregorian calendar counted from 0000-03-01.
_EPOCH_SHIFT = 719_468
_DAYS_PER_ERA = 146_097  # 400 years


class WindowKind(enum.StrEnum):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


@attrs.frozen
class Window:
    id: int
    start_us: int
    # NEVER for the `total` window.
    end_us: int


def window_of(kind: WindowKind, now_us: int) -> Window:
    """The window of `kind` that contains the instant `now_us`."""
    require_int("now_us", now_us, 0, MAX_NOW_US)
    if kind is WindowKind.TOTAL:
        return _TOTAL
    day = now_us // US_PER_DAY
    if kind is WindowKind.DAY:
        return _day_window(day)
    return _month_window(day)


_TOTAL = Window(0, 0, NEVER)


# Windows are immutable and a handful are current at any time: every limit
# decision asks for them several times, so they are built once.
@functools.lru_cache(maxsize=64)
def _day_window(day: int) -> Window:
    return Window(day, day * US_PER_DAY, (day + 1) * US_PER_DAY)


@functools.lru_cache(maxsize=64)
def _month_window(day: int) -> Window:
    year, month, mday = civil_from_days(day)
    start = day - (mday - 1)
    end = start + days_in_month(year, month)
    return Window((year - 1970) * 12 + (month - 1), start * US_PER_DAY, end * US_PER_DAY)


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month 1-12, day 1-31) of `days` since 1970-01-01, for days >= 0."""
    require_int("days", days, 0)
    z = days + _EPOCH_SHIFT
    era = z // _DAYS_PER_ERA
    doe = z - era * _DAYS_PER_ERA  # day of era, [0, 146096]
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365  # year of era, [0, 399]
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the March-based year, [0, 365]
    mp = (5 * doy + 2) // 153  # month from March, [0, 11]
    mday = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, mday


def days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31
