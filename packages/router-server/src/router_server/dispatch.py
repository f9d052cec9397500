"""Sending a request to its candidates: failover, bounded retries, hedging, health.

Rules:
- Which candidate to try next, and the problem when none answers, is the
  attempt plan's (router_core.attempts, which `router simulate` drives too):
  this module performs the attempts and reports what happened on each.
- Every attempt feeds the backend's circuit breaker and latency average, and
  holds one of its in-flight slots, and the request's outstanding tokens
  (prompt bound plus most output), until the answer is read or the stream
  ends, is cancelled or loses a hedge: `_begin` and `_end` pair on every path.
  A status that moves elsewhere (429, a 4xx about our credential or mapping)
  says nothing about the backend's health; one about the request itself
  counts as a success, and goes back to the caller. A 429 or 503 with a
  Retry-After (or retry-after-ms) also keeps the backend out of routing for
  that long (at most `health.max_retry_after_s`): skipped as `throttled`.
- Each candidate gets the request in the protocol it speaks: as the client
  sent it when native, else translated to chat (`router_core.protocols.wire`,
  once per request); `Opened.wire` says which, for reading the answer.
  Embeddings to a provider with its own embedding call go as that call (or
  calls: `provider_embeddings`), cut for each candidate's model.
- Hedging (non-streamed requests, `hedge_after_ms` on the model): when the
  first attempt has not answered within the delay, the next candidate gets
  the request too, as a second plan that the retry budget must allow; the
  first complete answer wins and the other is cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs
import httpx
import orjson

from router_core.attempts import (
    RETRY_AFTER_STATUSES,
    AttemptPlan,
    Failure,
    FailureKind,
    RetryTally,
    StatusVerdict,
    judge,
    retry_after_s,
    status_failure,
)
from router_core.limits.plan import outstanding_tokens
from router_core.problems import Catalog, ClientError, DependencyError, RouterError
from router_core.protocols import embeddings_over_providers as embeddings
from router_core.protocols.wire import to_backend, wire_for
from router_core.requests import InferenceRequest, Operation
from router_core.retry_budget import RetryBudget
from router_core.routing import Candidate
from router_server.backends import BackendClient, BackendFailure
from router_server.health import Health
from router_server.provider_embeddings import send_calls


@attrs.define
class Opened:
    """A backend answered 2xx; its body is not read yet. Pass it to `Dispatcher.done`,
    once (the request's exchange does, for a stream)."""

    client: BackendClient
    candidate: Candidate
    response: httpx.Response
    # The protocol the backend was sent the request in, and answers in.
    wire: Operation = Operation.CHAT
    # The outstanding tokens the attempt holds of the backend until `done`.
    tokens: int = 0


@attrs.define
class Dispatcher:
    health: Health
    clients: Callable[[], Mapping[str, BackendClient]]
    budget: RetryBudget
    clock: Callable[[], float] = time.monotonic
    tally: RetryTally = attrs.field(factory=RetryTally)

    @property
    def retries(self) -> int:
        return self.tally.retries

    @property
    def retries_refused(self) -> int:
        return self.tally.refused

    @property
    def hedges(self) -> int:
        return self.tally.hedges

    # `max_attempts` is the request's own (`routing.max_attempts` of the config
    # it was accepted under), not a copy kept here that a reload would patch.
    async def open(
        self, request: InferenceRequest, candidates: Sequence[Candidate], max_attempts: int
    ) -> Opened:
        """The first candidate to answer 2xx; 502/503/504 when none does."""
        self.budget.request(self.clock())
        return await self._open(request, self._plan(request, candidates, max_attempts))

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
            return await self._open_read(request, self._plan(request, candidates, max_attempts))
        return await self._hedged(request, candidates, hedge_after_s, max_attempts)

    def done(self, opened: Opened, broken: str | None = None) -> None:
        """The answer has been read or the stream has ended; `broken` says how it failed."""
        backend = opened.candidate.backend
        if broken is not None:
            self.health.failed(backend, broken, answered=True)
        self._end(opened.client, opened.tokens)

    def _plan(
        self, request: InferenceRequest, candidates: Sequence[Candidate], max_attempts: int
    ) -> AttemptPlan:
        return AttemptPlan(request.model, candidates, max_attempts, self.budget, self.tally)

    def _begin(self, client: BackendClient, tokens: int) -> None:
        client.active += 1
        self.health.begin(client.name, tokens)

    def _end(self, client: BackendClient, tokens: int) -> None:
        client.active -= 1
        self.health.end(client.name, tokens)

    async def _open(self, request: InferenceRequest, plan: AttemptPlan) -> Opened:
        clients = self.clients()
        bodies: dict[Operation, Mapping[str, Any]] = {}
        tokens = outstanding_tokens(request, self.health.config().limits.default_max_tokens)
        while (candidate := plan.next(self.clock(), self.health.available)) is not None:
            backend = candidate.backend
            client = clients[backend]
            wire = wire_for(request.operation, client.settings.speaks) or request.operation
            embed = None
            if wire is Operation.PROVIDER_EMBEDDING:  # cut per model: its family's calls
                family = embeddings.family_of(client.settings, candidate.model)
                embed = family, embeddings.calls(request.body, family, candidate.model)
            body = bodies.get(wire)
            if body is None:  # translated at most once, and only if a backend needs it
                body = bodies[wire] = to_backend(request, wire)
            headers = request.headers if wire is request.operation else None
            self._begin(client, tokens)
            started = self.clock()
            try:
                if embed is not None:
                    response = await send_calls(client, *embed, candidate.model)
                else:
                    response = await client.open(
                        client.path_for(wire.backend_path, candidate.model, stream=request.stream),
                        client.prepare(body, candidate.model),
                        headers,
                    )
            except BackendFailure as failure:
                self.health.failed(backend, failure.detail, kind=failure.kind)
                self._end(client, tokens)
                if plan.failed(Failure(backend, failure.kind, failure.detail, failure.status)):
                    continue
                raise plan.problem() from None
            except BaseException:
                self._end(client, tokens)
                raise
            status = response.status_code
            verdict = judge(status)
            if verdict is StatusVerdict.SERVED:
                self.health.succeeded(backend, (self.clock() - started) * 1000)
                return Opened(client, candidate, response, wire, tokens)
            if status in RETRY_AFTER_STATUSES:
                cap = self.health.settings.max_retry_after_s
                wait = retry_after_s(response.headers, time.time(), cap)
                if wait is not None:
                    self.health.throttle(backend, wait)
            try:
                detail = await _safe_read(client, response)
            finally:
                self._end(client, tokens)
            # ELSEWHERE (429, a 4xx about our credential or mapping) says
            # nothing about the backend's health: no verdict.
            if verdict is StatusVerdict.FAILED:
                self.health.failed(backend, f"HTTP {status}")
            elif verdict is StatusVerdict.CALLER:
                self.health.succeeded(backend, (self.clock() - started) * 1000)
                raise _rejected(backend, status, detail)
            plan.failed(status_failure(backend, status))
        raise plan.problem()

    async def _open_read(
        self, request: InferenceRequest, plan: AttemptPlan
    ) -> tuple[Opened, dict[str, Any]]:
        opened = await self._open(request, plan)
        try:
            body = await read_json(opened)
        except DependencyError as exc:
            self.done(opened, exc.detail)
            raise
        except BaseException:
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

        async def run(plan: AttemptPlan) -> None:
            try:
                outcome: tuple[Opened, dict[str, Any]] | RouterError = await self._open_read(
                    request, plan
                )
            except RouterError as exc:
                outcome = exc
            await send.send(outcome)

        async with send, receive, anyio.create_task_group() as tg:
            tg.start_soon(run, self._plan(request, (first, *rest), max_attempts))
            running = 1
            with anyio.move_on_after(delay_s):
                outcome = await receive.receive()
                running -= 1
                if not isinstance(outcome, RouterError):
                    tg.cancel_scope.cancel()
                    return outcome
                errors.append(outcome)
            hedge = self._plan(request, (second, *rest), max_attempts)
            if hedge.start_as_hedge(self.clock()):
                tg.start_soon(run, hedge)
                running += 1
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
