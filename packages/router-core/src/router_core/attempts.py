"""The attempt plan: which candidate a request tries next, or the problem it ends with.

Rules:
- Candidates come from routing, in order. Attempts stop at the first 2xx,
  at `routing.max_attempts`, or when the retry budget (router_core.retry_budget)
  refuses an attempt after the first.
- A candidate whose circuit has opened since routing decided (by this very
  request's failures, say) is skipped; a skip is not an attempt.
- Only failures that are safe to repeat move on to the next candidate:
  nothing was sent (CONNECT), the connection dropped before any response
  (PROTOCOL: the backend crashed; inference has no side effect but cost), or
  the backend refused before doing any work (STATUS: 5xx, 429, and
  401/403/404/408/409, which say the backend does not accept our credential,
  model mapping or load). A read timeout may mean a request still running,
  and a hung backend would hang again: the plan ends there.
- Any other 4xx is the backend's verdict on the request itself and goes
  back to the caller, and says nothing bad about the backend's health.
- The final problem: 503 `no_backend_available` when no candidate could be
  tried (their circuits opened), 504 `backend_timeout` when the last attempt
  timed out, else 502 `backend_error`; the message names every failure.
- A hedge (a second plan started while the first's attempt is still out)
  is an attempt after the first: it needs the retry budget's leave too.
- The router (router_server.dispatch) and `router simulate` drive this one
  plan. `now` is the caller's monotonic seconds (the simulation's clock).
"""

from __future__ import annotations

import email.utils
import enum
import math
from collections.abc import Callable, Mapping, Sequence

import attrs

from router_core.problems import Catalog, DependencyError
from router_core.retry_budget import RetryBudget
from router_core.routing import Candidate


class FailureKind(enum.StrEnum):
    CONNECT = "connect"  # nothing was sent: always safe to try elsewhere
    TIMEOUT = "timeout"
    STATUS = "status"  # the backend answered an error status another backend may not
    PROTOCOL = "protocol"  # the connection broke or the answer was not HTTP


# A read timeout is not among them: the request may still be running.
SAFE_TO_REPEAT = frozenset({FailureKind.CONNECT, FailureKind.PROTOCOL, FailureKind.STATUS})
# Failures that say the request could not reach the backend, or lost it midway:
# what an active probe can confirm (the breaker asks for one at once).
UNREACHABLE = frozenset({FailureKind.CONNECT, FailureKind.PROTOCOL})


class StatusVerdict(enum.StrEnum):
    """What a backend's HTTP status means for the request and for the backend."""

    SERVED = "served"
    # 5xx: the backend is failing (its breaker counts it); try the next.
    FAILED = "failed"
    # The backend is overloaded, or does not accept our credential or our model
    # mapping (404): another may well succeed, and its health is not in doubt.
    ELSEWHERE = "elsewhere"
    # Any other 4xx: the backend's verdict on the request, for the caller.
    CALLER = "caller"


_ELSEWHERE = frozenset({401, 403, 404, 408, 409, 429})


def judge(status: int) -> StatusVerdict:
    if status < 300:
        return StatusVerdict.SERVED
    if status >= 500:
        return StatusVerdict.FAILED
    if status in _ELSEWHERE:
        return StatusVerdict.ELSEWHERE
    return StatusVerdict.CALLER


# The statuses whose Retry-After says when the backend takes requests again.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def retry_after_s(headers: Mapping[str, str], now_epoch_s: float, cap_s: float) -> float | None:
    """How long a backend asked not to be sent requests, at most `cap_s`: from
    `retry-after-ms` (Azure, OpenAI), else `retry-after` in seconds or as an
    HTTP date. None when it did not say, or said nothing usable."""
    if cap_s <= 0:
        return None
    seconds: float | None = None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            seconds = float(millis) / 1000
        except ValueError:
            seconds = None
    text = headers.get("retry-after")
    if seconds is None and text is not None:
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            seconds = when.timestamp() - now_epoch_s
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, cap_s)


@attrs.frozen
class Failure:
    """One failed attempt, as the final problem's message names it."""

    backend: str
    kind: FailureKind
    detail: str
    status: int | None = None

    def __str__(self) -> str:
        return f"backend {self.backend!r}: {self.detail}"


def status_failure(backend: str, status: int) -> Failure:
    """The failure of an attempt answered with an error status that moves elsewhere."""
    if status in (401, 403):
        detail = f"rejected the router's credential (HTTP {status})"
    elif status == 404:
        detail = "does not serve this model or route (HTTP 404)"
    else:
        detail = f"answered HTTP {status}"
    return Failure(backend, FailureKind.STATUS, detail, status)


@attrs.define
class RetryTally:
    """Counts over many plans, for /v1/status."""

    retries: int = 0
    refused: int = 0
    hedges: int = 0


@attrs.define
class AttemptPlan:
    """One request's (or one hedge's) way through its candidates."""

    model: str
    candidates: Sequence[Candidate]
    max_attempts: int
    budget: RetryBudget
    tally: RetryTally | None = None
    attempts: int = 0
    failures: list[Failure] = attrs.field(factory=list)
    _position: int = 0

    def next(self, now: float, available: Callable[[str], bool]) -> Candidate | None:
        """The candidate to try now, or None: the plan is over (raise `problem()`)."""
        candidates = self.candidates
        while self._position < len(candidates) and self.attempts < self.max_attempts:
            candidate = candidates[self._position]
            self._position += 1
            if not available(candidate.backend):
                continue
            if self.attempts > 0 and not self._retry_allowed(now):
                self._position = len(candidates)
                break
            self.attempts += 1
            return candidate
        return None

    def failed(self, failure: Failure) -> bool:
        """Note a failed attempt; True when the request may go on to `next`."""
        self.failures.append(failure)
        return failure.kind in SAFE_TO_REPEAT

    def problem(self) -> DependencyError:
        """What the caller gets once the plan is over without an answer."""
        model, failures = self.model, self.failures
        if not failures:
            return DependencyError(
                Catalog.NO_BACKEND_AVAILABLE,
                f"No backend could be tried for model {model!r}: their circuits opened.",
                headers={"retry-after": "1"},
            )
        reasons = "; ".join(str(f) for f in failures)
        if failures[-1].kind is FailureKind.TIMEOUT:
            return DependencyError(
                Catalog.BACKEND_TIMEOUT, f"The backend for model {model!r} timed out: {reasons}."
            )
        return DependencyError(
            Catalog.BACKEND_ERROR, f"Every backend tried for model {model!r} failed: {reasons}."
        )

    def start_as_hedge(self, now: float) -> bool:
        """Whether this plan may start now, beside another plan's attempt still out."""
        return self._retry_allowed(now, hedge=True)

    def _retry_allowed(self, now: float, *, hedge: bool = False) -> bool:
        allowed = self.budget.try_retry(now)
        tally = self.tally
        if tally is not None:
            if not allowed:
                tally.refused += 1
            elif hedge:
                tally.hedges += 1
            else:
                tally.retries += 1
        return allowed
