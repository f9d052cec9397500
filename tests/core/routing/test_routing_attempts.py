"""The attempt plan that the router's dispatcher and `router simulate` both drive."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.attempts import (
    AttemptPlan,
    Failure,
    FailureKind,
    RetryTally,
    StatusVerdict,
    judge,
    status_failure,
)
from router_core.config import RoutingSettings
from router_core.retry_budget import RetryBudget
from router_core.routing import Candidate

CANDIDATES = tuple(Candidate(name, "m") for name in ("a", "b", "c", "d"))


def retry_budget(
    ratio: float, min_per_s: float, balance: float = 0.0, last: float | None = None
) -> RetryBudget:
    settings = RoutingSettings(retry_budget_ratio=ratio, retry_min_per_s=min_per_s)
    return RetryBudget(lambda: settings, balance, last)


def everyone(_: str) -> bool:
    return True


def plenty() -> RetryBudget:
    return retry_budget(ratio=0.0, min_per_s=100.0)


def plan(
    max_attempts: int = 4, budget: RetryBudget | None = None, tally: RetryTally | None = None
) -> AttemptPlan:
    return AttemptPlan("chat", CANDIDATES, max_attempts, budget or plenty(), tally)


def walk(attempts: AttemptPlan, available: Callable[[str], bool] = everyone) -> list[str]:
    """Backends tried when every attempt is refused a connection."""
    tried = []
    while (candidate := attempts.next(0.0, available)) is not None:
        tried.append(candidate.backend)
        if not attempts.failed(Failure(candidate.backend, FailureKind.CONNECT, "refused")):
            break
    return tried


def test_statuses_are_judged_for_the_request_and_the_backend() -> None:
    assert [judge(s) for s in (200, 204, 500, 503)] == [
        StatusVerdict.SERVED, StatusVerdict.SERVED, StatusVerdict.FAILED, StatusVerdict.FAILED,
    ]  # fmt: skip
    assert {judge(s) for s in (401, 403, 404, 408, 409, 429)} == {StatusVerdict.ELSEWHERE}
    assert {judge(s) for s in (400, 413, 422)} == {StatusVerdict.CALLER}
    assert (
        str(status_failure("a", 401)) == "backend 'a': rejected the router's credential (HTTP 401)"
    )
    assert (
        str(status_failure("a", 404))
        == "backend 'a': does not serve this model or route (HTTP 404)"
    )
    assert str(status_failure("a", 503)) == "backend 'a': answered HTTP 503"


def test_failures_safe_to_repeat_move_on_until_max_attempts() -> None:
    attempts = plan(max_attempts=3)
    assert walk(attempts) == ["a", "b", "c"]
    problem = attempts.problem()
    assert (problem.status, problem.problem.code) == (502, "backend_error")
    assert problem.detail == (
        "Every backend tried for model 'chat' failed: backend 'a': refused; "
        "backend 'b': refused; backend 'c': refused."
    )


@pytest.mark.parametrize("kind", [FailureKind.CONNECT, FailureKind.PROTOCOL, FailureKind.STATUS])
def test_what_may_be_repeated_elsewhere(kind: FailureKind) -> None:
    attempts = plan()
    first = attempts.next(0.0, everyone)
    assert first is not None
    assert attempts.failed(Failure("a", kind, "broke"))
    assert attempts.next(0.0, everyone) == CANDIDATES[1]


def test_a_timeout_ends_the_plan_with_504() -> None:
    attempts = plan()
    assert attempts.next(0.0, everyone) == CANDIDATES[0]
    assert not attempts.failed(Failure("a", FailureKind.TIMEOUT, "timed out waiting"))
    problem = attempts.problem()
    assert (problem.status, problem.problem.code) == (504, "backend_timeout")
    assert "timed out" in problem.detail


def test_candidates_whose_circuit_opened_are_skipped_without_an_attempt() -> None:
    attempts = plan(max_attempts=2)
    assert walk(attempts, lambda backend: backend in ("b", "d")) == ["b", "d"]
    assert attempts.attempts == 2


def test_no_candidate_available_is_503() -> None:
    attempts = plan()
    assert attempts.next(0.0, lambda _: False) is None
    problem = attempts.problem()
    assert (problem.status, problem.problem.code) == (503, "no_backend_available")
    assert problem.headers == {"retry-after": "1"}


def test_the_retry_budget_refuses_later_attempts_and_is_counted() -> None:
    tally = RetryTally()
    budget = retry_budget(ratio=0.0, min_per_s=1.0)  # one retry banked at the start
    attempts = plan(budget=budget, tally=tally)
    assert walk(attempts) == ["a", "b"]
    assert (tally.retries, tally.refused) == (1, 1)
    assert attempts.next(0.0, everyone) is None  # refused once, the plan is over


def test_a_hedge_needs_the_budget_and_its_own_first_attempt_is_free() -> None:
    tally = RetryTally()
    budget = retry_budget(ratio=0.0, min_per_s=1.0)
    hedge = AttemptPlan("chat", CANDIDATES[1:], 4, budget, tally)
    assert hedge.start_as_hedge(0.0)
    assert hedge.next(0.0, everyone) == CANDIDATES[1]
    assert (tally.hedges, tally.retries, tally.refused) == (1, 0, 0)
    assert not AttemptPlan("chat", CANDIDATES[1:], 4, budget, tally).start_as_hedge(0.0)
    assert tally.refused == 1


@given(
    max_attempts=st.integers(1, 6),
    up=st.lists(st.booleans(), min_size=4, max_size=4),
    banked=st.integers(0, 5),
)
def test_never_more_attempts_than_allowed_or_retries_than_granted(
    max_attempts: int, up: list[bool], banked: int
) -> None:
    tally = RetryTally()
    budget = retry_budget(ratio=0.0, min_per_s=0.0, balance=float(banked), last=0.0)
    attempts = plan(max_attempts, budget, tally)
    available = dict(zip("abcd", up, strict=True))
    tried = walk(attempts, available.__getitem__)
    assert len(tried) <= max_attempts
    assert all(available[b] for b in tried)
    assert tried == sorted(tried)  # in routing's order, none twice
    assert tally.retries == max(0, len(tried) - 1) <= banked
