"""`retry_after_s`: how long a backend's 429 or 503 asked to be left alone."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.attempts import retry_after_s

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        # Azure and OpenAI send milliseconds too: the finer figure wins.
        ({"retry-after": "2", "retry-after-ms": "1250"}, 1.25),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": "3600"}, 60.0),  # capped
        ({}, None),
        ({"retry-after": "0"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after-ms": "x", "retry-after": "4"}, 4.0),
        # A date already past: nothing to wait for.
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers, NOW, 60.0) == expected


def test_a_zero_cap_ignores_it() -> None:
    assert retry_after_s({"retry-after": "5"}, NOW, 0.0) is None


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_header_text_gives_none_or_a_wait_within_the_cap(seconds: str, millis: str) -> None:
    wait = retry_after_s({"retry-after": seconds, "retry-after-ms": millis}, NOW, 60.0)
    assert wait is None or 0 < wait <= 60.0
