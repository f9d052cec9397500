"""Sending a request to its candidates: failover, bounded retries, hedging, health.

Rules:
- Candidates come from routing, in order. Attempts stop at the first 2xx,
  at `routing.max_attempts`, or when the retry budget (router_core.retry_budget)
  refuses an attempt after the first.
- Only failures that are safe to repeat move on to the next candidate:
  nothing was sent (connect errors), the connection dropped before any
  response (the backend crashed; inference has no side effect but cost), or
  the backend refused before doing any work (5xx, 429, and
  401/403/404/408/409, which say the backend does not accept our credential,
  model mapping or load). A read timeout may mean a request still running,
  and a hung backend would hang again: the caller gets 504 and decides.
- Any other 4xx is the backend's verdict on the request itself and goes
  back to the caller, and says nothing bad about the backend's health.
- Every attempt feeds the backend's circuit breaker and latency average, and
  holds one of its in-flight slots until the answer is read or the stream ends.
- Hedging (non-streamed requests, `hedge_after_ms` on the model): when the
  first attempt has not answered within the delay, the next candidate gets
  the request too (if the retry budget allows); the first complete answer
  wins and the other is cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs
import httpx
import orjson

from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.requests import InferenceRequest
from router_core.retry_budget import RetryBudget
from router_core.routing import Candidate
from router_server.backends import BackendClient, BackendFailure, FailureKind
from router_server.health import Health

# Statuses after which another backend may well succeed: the backend is
# overloaded, or does not accept our credential or our model mapping (404).
_RETRY_ELSEWHERE = frozenset({401, 403, 404, 408, 409, 429})
# Failures before any response: nothing was sent (connect), or the backend
# dropped the connection without answering (it crashed or restarted, or a
# pooled connection had gone stale). A read timeout is not among them.
_SAFE_TO_REPEAT = frozenset({FailureKind.CONNECT, FailureKind.PROTOCOL})


@attrs.define
class Opened:
    """A backend answered 2xx; its body is not read yet. Pass it to `Dispatcher.done`,
    once (the request's exchange does, for a stream)."""

    client: BackendClient
    candidate: Candidate
    response: httpx.Response


@attrs.define
class Dispatcher:
    health: Health
    clients: Callable[[], Mapping[str, BackendClient]]
    budget: RetryBudget
    clock: Callable[[], float] = time.monotonic
    retries: int = 0
    retries_refused: int = 0
    hedges: int = 0

    # `max_attempts` is the request's own (`routing.max_attempts` of the config
    # it was accepted under), not a copy kept here that a reload would patch.
    async def open(
        self, request: InferenceRequest, candidates: Sequence[Candidate], max_attempts: int
    ) -> Opened:
        """The first candidate to answer 2xx; 502/503/504 when none does."""
        self.budget.request(self.clock())
        return await self._open(request, candidates, max_attempts)

    async def fetch(
        self,
        request: InferenceRequest,
        candidates: Sequence[Candidate],
        hedge_after_s: float | None,
        max_attempts: int,
    ) -> tuple[Opened, dict[str, Any]]:
        """A non-streamed answer, read whole (hedged when the model asks for it)."""
        self.budget.request(self.clock())
        if hedge_after_s is None or len(candidates) < 2:
            return await self._open_read(request, candidates, max_attempts)
        return await self._hedged(request, candidates, hedge_after_s, max_attempts)

    def done(self, opened: Opened, broken: str | None = None) -> None:
        """The answer has been read or the stream has ended; `broken` says how it failed."""
        backend = opened.candidate.backend
        if broken is not None:
            self.health.failed(backend, broken)
        self._end(opened.client)

    def _begin(self, client: BackendClient) -> None:
        client.active += 1
        self.health.begin(client.name)

    def _end(self, client: BackendClient) -> None:
        client.active -= 1
        self.health.end(client.name)

    async def _open(
        self, request: InferenceRequest, candidates: Sequence[Candidate], max_attempts: int
    ) -> Opened:
        failures: list[BackendFailure] = []
        path = request.operation.backend_path
        attempts = 0
        clients = self.clients()
        for candidate in candidates:
            if attempts >= max_attempts:
                break
            if not self.health.available(candidate.backend):
                continue  # its circuit opened since routing decided (e.g. by this request)
            if attempts > 0:
                if not self.budget.try_retry(self.clock()):
                    self.retries_refused += 1
                    break
                self.retries += 1
            attempts += 1
            backend = candidate.backend
            client = clients[backend]
            self._begin(client)
            started = self.clock()
            try:
                response = await client.open(path, {**request.body, "model": candidate.model})
            except BackendFailure as failure:
                self.health.failed(backend, failure.detail)
                self._end(client)
                failures.append(failure)
                if failure.kind in _SAFE_TO_REPEAT:
                    continue
                raise _all_failed(request.model, failures) from None
            except BaseException:
                self.health.abandoned(backend)
                self._end(client)
                raise
            status = response.status_code
            if status < 300:
                self.health.succeeded(backend, (self.clock() - started) * 1000)
                return Opened(client, candidate, response)
            detail = await _safe_read(client, response)
            self._end(client)
            if status >= 500:
                self.health.failed(backend, f"HTTP {status}")
            elif status in _RETRY_ELSEWHERE:
                self.health.abandoned(backend)
            else:
                self.health.succeeded(backend, (self.clock() - started) * 1000)
                raise _rejected(backend, status, detail)
            failures.append(BackendFailure(backend, FailureKind.STATUS, _describe(status), status))
        raise _all_failed(request.model, failures)

    async def _open_read(
        self, request: InferenceRequest, candidates: Sequence[Candidate], max_attempts: int
    ) -> tuple[Opened, dict[str, Any]]:
        opened = await self._open(request, candidates, max_attempts)
        try:
            body = await read_json(opened)
        except DependencyError as exc:
            self.done(opened, exc.detail)
            raise
        except BaseException:
            self.health.abandoned(opened.candidate.backend)
            self.done(opened)
            raise
        self.done(opened)
        return opened, body

    async def _hedged(
        self,
        request: InferenceRequest,
        candidates: Sequence[Candidate],
        delay_s: float,
        max_attempts: int,
    ) -> tuple[Opened, dict[str, Any]]:
        first, second, rest = candidates[0], candidates[1], tuple(candidates[2:])
        send, receive = anyio.create_memory_object_stream[
            tuple[Opened, dict[str, Any]] | RouterError
        ](2)
        errors: list[RouterError] = []

        async def run(order: tuple[Candidate, ...]) -> None:
            try:
                outcome: tuple[Opened, dict[str, Any]] | RouterError = await self._open_read(
                    request, order, max_attempts
                )
            except RouterError as exc:
                outcome = exc
            await send.send(outcome)

        async with send, receive, anyio.create_task_group() as tg:
            tg.start_soon(run, (first, *rest))
            running = 1
            with anyio.move_on_after(delay_s):
                outcome = await receive.receive()
                running -= 1
                if not isinstance(outcome, RouterError):
                    tg.cancel_scope.cancel()
                    return outcome
                errors.append(outcome)
            if self.budget.try_retry(self.clock()):
                self.hedges += 1
                tg.start_soon(run, (second, *rest))
                running += 1
            else:
                self.retries_refused += 1
            while running:
                outcome = await receive.receive()
                running -= 1
                if not isinstance(outcome, RouterError):
                    tg.cancel_scope.cancel()
                    return outcome
                errors.append(outcome)
        raise errors[0]


async def _safe_read(client: BackendClient, response: httpx.Response) -> bytes:
    try:
        return await client.read(response)
    except BackendFailure:
        return b""


def _describe(status: int) -> str:
    if status in (401, 403):
        return f"rejected the router's credential (HTTP {status})"
    if status == 404:
        return "does not serve this model or route (HTTP 404)"
    return f"answered HTTP {status}"


def _rejected(backend: str, status: int, detail: bytes) -> ClientError:
    message = f"Backend {backend!r} rejected the request (HTTP {status})"
    try:
        parsed = orjson.loads(detail)
        inner = parsed.get("error", {}).get("message") if isinstance(parsed, dict) else None
    except orjson.JSONDecodeError:
        inner = None
    if isinstance(inner, str) and inner:
        message += f": {inner[:500]}"
    return ClientError(Catalog.BACKEND_REJECTED, message + ".", status=status)


def _all_failed(model: str, failures: list[BackendFailure]) -> DependencyError:
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


async def read_json(opened: Opened) -> dict[str, Any]:
    """The whole body of a non-streamed answer, which must be a JSON object."""
    try:
        raw = await opened.client.read(opened.response)
    except BackendFailure as failure:
        problem = (
            Catalog.BACKEND_TIMEOUT
            if failure.kind is FailureKind.TIMEOUT
            else (Catalog.BACKEND_ERROR)
        )
        raise DependencyError(
            problem,
            f"Backend {opened.candidate.backend!r} failed while answering: {failure.detail}.",
        ) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise DependencyError(
            Catalog.BACKEND_ERROR,
            f"Backend {opened.candidate.backend!r} returned a body that is not a JSON object.",
        )
    return body
