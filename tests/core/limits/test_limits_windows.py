"""Calendar windows agree with `datetime` at every day and at random instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.limits import MAX_NOW_US, NEVER, Window, WindowKind, window_of
from router_core.limits.windows import civil_from_days, days_in_month

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000


def us_of(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def us(year: int, month: int, day: int, hour: int = 0) -> int:
    return us_of(datetime(year, month, day, hour, tzinfo=UTC))


def test_hand_computed_windows() -> None:
    leap_day_noon = us(2024, 2, 29, 12)
    assert window_of(WindowKind.DAY, leap_day_noon) == Window(
        19_782, us(2024, 2, 29), us(2024, 3, 1)
    )
    assert window_of(WindowKind.MONTH, leap_day_noon) == Window(
        (2024 - 1970) * 12 + 1, us(2024, 2, 1), us(2024, 3, 1)
    )
    assert window_of(WindowKind.TOTAL, leap_day_noon) == Window(0, 0, NEVER)
    assert window_of(WindowKind.DAY, 0) == Window(0, 0, DAY_US)
    assert window_of(WindowKind.MONTH, 0) == Window(0, 0, 31 * DAY_US)


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [(2023, 2, 28), (2024, 2, 29), (2000, 2, 29), (2100, 2, 28), (2024, 4, 30), (2024, 12, 31)],
)
def test_month_ends(year: int, month: int, days: int) -> None:
    assert days_in_month(year, month) == days
    first = us(year, month, 1)
    last_instant = first + days * DAY_US - 1
    window = window_of(WindowKind.MONTH, last_instant)
    assert (window.start_us, window.end_us) == (first, first + days * DAY_US)
    following = window_of(WindowKind.MONTH, last_instant + 1)
    assert following.id == window.id + 1
    assert following.start_us == window.end_us


def test_civil_from_days_matches_the_calendar_on_every_day() -> None:
    last_day = MAX_NOW_US // DAY_US
    day = date(1970, 1, 1)
    for n in range(last_day + 1):
        assert civil_from_days(n) == (day.year, day.month, day.day), n
        day += timedelta(days=1)


@given(st.integers(0, MAX_NOW_US))
def test_windows_match_datetime(now: int) -> None:
    instant = EPOCH + timedelta(microseconds=now)
    day = window_of(WindowKind.DAY, now)
    month = window_of(WindowKind.MONTH, now)
    midnight = datetime(instant.year, instant.month, instant.day, tzinfo=UTC)
    first = datetime(instant.year, instant.month, 1, tzinfo=UTC)
    after = datetime(instant.year + instant.month // 12, instant.month % 12 + 1, 1, tzinfo=UTC)
    assert day == Window((midnight - EPOCH).days, us_of(midnight), us_of(midnight) + DAY_US)
    assert month == Window(
        (instant.year - 1970) * 12 + instant.month - 1, us_of(first), us_of(after)
    )
    assert month.start_us <= day.start_us <= now < day.end_us <= month.end_us


def test_instants_outside_the_domain_are_refused() -> None:
    with pytest.raises(ValueError, match="now_us"):
        window_of(WindowKind.DAY, -1)
    with pytest.raises(ValueError, match="now_us"):
        window_of(WindowKind.MONTH, MAX_NOW_US + 1)
