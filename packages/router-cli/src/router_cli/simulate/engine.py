"""The simulation: a trace replayed through the router's own rules on a virtual clock.

Rules:
- Each request goes the router's way: authenticate (key id -> the key's
  rules at the trace's time, `router_core.auth.check_access`: revoked,
  expired, route, the organization's models, the key's model scope; or the
  organization itself, whose models alone apply), the global in-flight cap,
  admit against every limit (`limit_gate`), decide the candidates
  (`router_core.routing.decide`, with each backend's breaker, in-flight count
  and latency average as its `BackendView`), then try them as the router's
  attempt plan says (`router_core.attempts`).
- A trace line's operation is sent to its OpenAI route (chat to
  /v1/chat/completions, ...), which a key's `routes` scope is checked against.
- Time is the trace's: an attempt starts at the request's arrival (or when
  the previous attempt failed) and ends after its modelled cost (`World`);
  its end is an event on a heap, processed in time order with the arrivals,
  so breakers, in-flight counts, holds, active probes (on the interval, and
  early when a refused connection asks for one) and the trial probes of
  half-open circuits change when they would, and concurrent requests see
  each other.
- Every attempt's end feeds the backend's breaker and the plan: a refused
  connection or an error status moves to the next candidate (a failover)
  when the plan allows it; a timeout does not (504: the request may still be
  running). The request's limits are settled when it ends: actual tokens and
  spend if served, nothing if not.
- A backend modelled as a model server (`servers`) queues an attempt that
  finds its slots full; the attempt's time is its wait, its prefill (less
  what the server's prefix cache holds) and its decode, and a slot freed
  starts the next attempt waiting. Routing sees what the live router sees:
  its own in-flight and outstanding-token counts, and for affinity a
  `PrefixIndex` per model, recorded when a backend serves a request.
- A request's blocks for affinity are the core's `request_blocks`: its
  prompt's (`prompts.prompt_of`, hashed by the model's settings), then its
  session's when it has one and the model names a `session_header`.
- With `explain`, each request's routing decision (`RouteChoice.explain()`)
  and its outcome go to the callback when it ends.
- Randomness comes from one seeded `random.Random`: one seed, one result.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

from router_cli.simulate import limit_gate
from router_cli.simulate.backends import ERRORED, OK, TIMED_OUT, Backends
from router_cli.simulate.faults import NO_FAULTS, World
from router_cli.simulate.ledger import LimitLedger, SimLedger
from router_cli.simulate.prompts import answered_of, prompt_of
from router_cli.simulate.request import Request, refused_line
from router_cli.simulate.result import Result
from router_cli.simulate.servers import Job
from router_cli.simulate.trace import TraceRecord
from router_core import routing
from router_core.affinity import AffinityRequest, PrefixIndex, prefix_blocks, request_blocks
from router_core.attempts import UNREACHABLE, AttemptPlan, Failure, FailureKind, status_failure
from router_core.auth import KeyIndex, Principal, check_access, permit_model
from router_core.config import Model, RouterConfig
from router_core.limits.admission import LimitType
from router_core.limits.budget import cost
from router_core.limits.integers import US_PER_S
from router_core.limits.plan import price_of
from router_core.limits.scopes import Scope
from router_core.problems import ClientError
from router_core.retry_budget import RetryBudget
from router_core.usage import TokenUsage

_DENIAL_CODES = {
    LimitType.RATE_LIMIT: "rate_limit_exceeded",
    LimitType.QUOTA: "quota_exceeded",
    LimitType.BUDGET: "budget_exceeded",
}
# The router's refusals, in the simulation's words (see `result.DENIAL_REASONS`).
_REFUSAL_CODES = {"invalid_api_key": "unauthenticated"}
# The OpenAI route each operation of a trace is sent to.
ROUTES = {"chat": "/v1/chat/completions", "completion": "/v1/completions",
          "embedding": "/v1/embeddings"}  # fmt: skip
# Outcomes of an attempt besides OK, FAILED, TIMED_OUT and ERRORED: cut by the
# request's deadline; and the events of the next active probe, of a trial
# probe falling due and of its answer, and of an early probe that a refused
# connection asked for (their `request` is the backend's name, and for a
# trial's answer also the trial's number and its failure).
# An attempt still in a server's queue when the router stops waiting for it
# (its `request` is the server's `Job`).
_DEADLINE, _QUEUE_TIMEOUT, _PROBE, _TRIAL, _TRIAL_END, _EARLY_PROBE = 3, 5, -1, -2, -3, -4
_PROBES = (_PROBE, _TRIAL, _TRIAL_END, _EARLY_PROBE)


class Simulation:
    def __init__(
        self,
        config: RouterConfig,
        world: World = NO_FAULTS,
        seed: int = 0,
        ledger: LimitLedger | None = None,
        explain: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.explain = explain
        self._indexes = {
            name: PrefixIndex(model.affinity.index_blocks)
            for name, model in config.models.items()
            if model.affinity is not None
        }
        self._default_max_tokens = config.limits.default_max_tokens
        self.world = world
        self.rng = random.Random(seed)
        self.ledger = (
            ledger
            if ledger is not None
            else SimLedger(hold_ttl_us=config.limits.hold_ttl_s * US_PER_S)
        )
        self.limits = limit_gate.SimLimitGate(config, self.ledger)
        self.keys = KeyIndex.from_config(config).by_id
        self.backends = Backends(config, world)
        self.total_in_flight = 0
        self.retries = RetryBudget(lambda: config.routing)
        self.result = Result(tuple(config.backends))
        self.result.slots = {n: s.model.slots for n, s in self.backends.servers.items()}
        self._events: list[tuple[int, int, Any, int, int]] = []
        self._seq = 0
        self._t0: int | None = None
        self._prices = {name: price_of(p) for name, p in config.prices.items()}
        self._probe_us = round(config.health.probe_interval_s * 1_000_000)
        self._trial_timeout_us = round(config.health.probe_timeout_s * 1_000_000)
        # When each backend's next trial event is pushed for (one at a time).
        self._trial_at: dict[str, int] = {}
        self._request_timeout_us = round(config.server.request_timeout_s * 1_000_000)
        self.max_attempts = config.routing.max_attempts

    # -- driving -----------------------------------------------------------

    def run(
        self, records: Iterable[TraceRecord], progress: Callable[[int], None] | None = None
    ) -> Result:
        for n, record in enumerate(records, 1):
            self.arrive(record)
            if progress is not None and n % 10_000 == 0:
                progress(n)
        self.finish()
        return self.result

    def arrive(self, record: TraceRecord) -> None:
        now = record.ts_us
        if self._t0 is None:
            self._t0 = now
            self.result.first_ts_us = now
            self._push(now + self._probe_us, _PROBE, 0, 0)
        self._advance(now)
        self.result.last_ts_us = now
        self.result.requests += 1
        self._admit(record, now)

    def finish(self) -> None:
        """Let every request in flight end (active and trial probes stop with the trace)."""
        events = self._events
        while events:
            at, _, request, outcome, spent = heapq.heappop(events)
            if outcome not in _PROBES:
                self._attempt_ended(request, outcome, spent, at)

    def _push(self, at: int, outcome: int, request: Any, spent: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, request, outcome, spent))

    def _advance(self, now: int) -> None:
        events = self._events
        while events and events[0][0] <= now:
            at, _, request, outcome, spent = heapq.heappop(events)
            if outcome == _PROBE:
                self.backends.probe(at - (self._t0 or 0), self._seconds(at))
                for backend in self.backends.breakers:
                    self._plan_trial(backend, at)
                # Between sparse requests only the last two probes can matter.
                step = self._probe_us
                nxt = max(at + step, now - (now - at) % step - step)
                self._push(nxt, _PROBE, 0, 0)
            elif outcome == _EARLY_PROBE:
                self.backends.probe_one(request, at - (self._t0 or 0), self._seconds(at))
                self._plan_trial(request, at)
            elif outcome == _TRIAL:
                self._trial(request, at)
            elif outcome == _TRIAL_END:
                backend, trial, failure = request
                breaker = self.backends.breakers[backend]
                breaker.end_trial(self._seconds(at), trial, failure is None, failure or "")
                self._plan_trial(backend, at)
            else:
                self._attempt_ended(request, outcome, spent, at)

    def _seconds(self, at_us: int) -> float:
        return (at_us - (self._t0 or 0)) / 1e6

    def _plan_trial(self, backend: str, now: int) -> None:
        """Push the event of `backend`'s next trial probe, if one is to come."""
        due = self.backends.breakers[backend].next_trial_at(self._seconds(now))
        if due is None:
            return
        # Rounded up, and never before now, so the breaker sees it due then.
        at = max(now, (self._t0 or 0) + math.ceil(due * 1_000_000))
        if self._trial_at.get(backend) == at:
            return
        self._trial_at[backend] = at
        self._push(at, _TRIAL, backend, 0)

    def _trial(self, backend: str, at: int) -> None:
        if self._trial_at.get(backend) != at:
            return  # superseded by a later plan
        del self._trial_at[backend]
        breaker = self.backends.breakers[backend]
        trial = breaker.begin_trial(self._seconds(at))
        if trial is None:
            # Not due yet (a float's rounding, or opened again): look again later.
            due = breaker.next_trial_at(self._seconds(at))
            if due is not None:
                later = max(at + 1, (self._t0 or 0) + math.ceil(due * 1_000_000))
                self._trial_at[backend] = later
                self._push(later, _TRIAL, backend, 0)
            return
        offset = at - (self._t0 or 0)
        failure, spent = self.backends.trial(backend, offset, self._trial_timeout_us)
        self._push(at + spent, _TRIAL_END, (backend, trial, failure), 0)

    # -- one request -------------------------------------------------------

    def _authorize(self, record: TraceRecord) -> tuple[Principal, Model, Scope] | None:
        """Who calls, for which model, under which limits; None (counted) if refused."""
        config = self.config
        try:
            if record.key is not None:
                entry = self.keys.get(record.key)
                if entry is None:
                    self._refuse(record, "unauthenticated")
                    return None
                principal, model = check_access(
                    entry, config, now=record.ts_us / 1e6, route=ROUTES[record.operation],
                    model=record.model,
                )  # fmt: skip
                return principal, model, principal.limit_scope
            org_name = record.org or ""
            organization = config.organizations.get(org_name)
            if organization is None:
                self._refuse(record, "unauthenticated")
                return None
            # A trace that does not know keys: the organization's rules alone apply.
            principal = Principal(org_name, "", organization)
            return principal, permit_model(principal, config, record.model), Scope(org_name)
        except ClientError as refused:
            code = refused.problem.code
            self._refuse(record, _REFUSAL_CODES.get(code, code))
            return None

    def _refuse(self, record: TraceRecord, reason: str) -> None:
        """A request refused before routing (by its key, limits or the global cap)."""
        self.result.denials[reason] += 1
        if self.explain is not None:
            self.explain(refused_line(record, reason))

    def _admit(self, record: TraceRecord, now: int) -> None:
        config = self.config
        authorized = self._authorize(record)
        if authorized is None:
            return
        principal, resolved, caller = authorized
        if self.total_in_flight >= config.server.max_in_flight:
            self._refuse(record, "overloaded")
            return
        model_name = record.model
        org_name = principal.organization
        key_id = record.key
        request = Request(record, org_name)
        request.price = self._prices.get(model_name)
        if self.limits.applies(caller, model_name):
            plan, refusal, holds = self.limits.admit(
                caller, record, f"r{self.result.requests}", now
            )
            if refusal is not None:
                self._refuse(record, _DENIAL_CODES[refusal.limit_type])
                return
            request.plan, request.holds = plan, holds
        seconds = self._seconds(now)
        record_max = record.max_tokens
        request.tokens = record.prompt_tokens + (
            record_max if record_max is not None else self._default_max_tokens
        )
        affinity = None
        settings = resolved.affinity
        if settings is not None:
            text = self._text(request)
            prompt = prefix_blocks(text, settings.block_chars, settings.max_blocks)
            session = record.session if settings.session_header else None
            request.affinity = request_blocks(prompt, session)
            affinity = AffinityRequest(
                request.affinity, self._indexes.get(model_name), settings.load_factor
            )
        decision = routing.decide(
            model_name,
            resolved,
            org_name,
            key_id,
            self.rng,
            self.backends.views(seconds),
            affinity=affinity,
        )
        if self.explain is not None:
            request.decision = decision.explain()
        if not decision.candidates:
            # Every backend full: the router waits a moment for a slot, then sheds
            # (the wait is not modelled). Otherwise no backend can take it.
            full = decision.only_capacity_skips()
            self._fail(request, "overloaded" if full else "no_backend_available", now)
            return
        self.total_in_flight += 1
        self.retries.request(seconds)
        request.attempts = AttemptPlan(
            model_name, decision.candidates, self.max_attempts, self.retries
        )
        self._next_attempt(request, now)

    def _next_attempt(self, request: Request, start: int) -> None:
        """Start the attempt the plan says, or end the request with its problem."""
        attempts = request.attempts
        assert attempts is not None
        seconds = self._seconds(start)
        breakers = self.backends.breakers
        candidate = attempts.next(seconds, lambda backend: breakers[backend].available(seconds))
        if candidate is None:
            self.total_in_flight -= 1
            self._fail(request, attempts.problem().problem.code, start)
            return
        if attempts.attempts > 1:
            self.result.failovers += 1
            if attempts.attempts == 2:
                self.result.requests_failed_over += 1
        self._attempt(request, candidate.backend, start)

    def _text(self, request: Request) -> str:
        if request.text is None:
            request.text = prompt_of(request.record)
        return request.text

    def _attempt(self, request: Request, backend: str, start: int) -> None:
        request.backend = backend
        request.job = None
        backends = self.backends
        backends.begin(backend, request.tokens)
        self.result.attempts[backend] += 1
        offset = start - (self._t0 or 0)
        deadline = request.arrival_us + self._request_timeout_us
        server = backends.servers.get(backend)
        if server is not None:
            forced, spent = backends.fault(backend, offset)
            if forced == OK:
                self._enqueue(request, backend, start, spent, deadline)
                return
            outcome = forced
        else:
            completion = self._completion(request)
            outcome, spent = backends.outcome(backend, offset, completion)
            # Its first token comes after its latency, before the rest of the tokens.
            per_token = self.world.model_of(backend).per_token_ms
            request.first_token_us = start + max(0, spent - round(per_token * completion * 1000))
        if start + spent > deadline:
            outcome, spent = _DEADLINE, max(0, deadline - start)
        self._push(start + spent, outcome, request, spent)

    # -- model servers -----------------------------------------------------

    def _enqueue(
        self, request: Request, backend: str, start: int, added_us: int, deadline: int
    ) -> None:
        """Queue the attempt on the backend's server; start it if a slot is free."""
        server = self.backends.servers[backend]
        text = self._text(request) if server.model.cache_blocks else ""
        # The router stops waiting at its read timeout or the request's deadline.
        give_up = min(start + self.backends.read_timeout_us[backend], deadline)
        # A latency fault delays the request on its way: it reaches the queue later.
        job = Job(
            request, start + added_us, give_up, request.record.prompt_tokens,
            self._completion(request), text, server.blocks(text),
        )  # fmt: skip
        request.job = job
        server.queue.append(job)
        self._push(give_up, _QUEUE_TIMEOUT, job, give_up - start)
        self._start_jobs(backend, job.enqueued_us)

    def _start_jobs(self, backend: str, now: int) -> None:
        """Start the attempts waiting on the backend's server while it has free slots."""
        server = self.backends.servers[backend]
        result = self.result
        while (started := server.start_next(now)) is not None:
            job, run = started
            request: Request = job.request
            result.prompt_tokens[backend] += job.prompt_tokens
            result.cached_tokens[backend] += run.cached_tokens
            result.busy_us[backend] += run.end_us - run.start_us
            request.first_token_us = run.first_token_us
            request.queued_us = run.start_us - job.enqueued_us
            request.cached = run.cached_tokens
            outcome = OK
            if run.given_up:
                deadline = request.arrival_us + self._request_timeout_us
                outcome = _DEADLINE if job.give_up_us >= deadline else TIMED_OUT
            self._push(run.end_us, outcome, request, run.end_us - job.enqueued_us)

    def _completion(self, request: Request) -> int:
        record = request.record
        if record.operation == "embedding":
            return 0
        completion = record.completion_tokens
        cap = request.plan.max_tokens if request.plan is not None else None
        return completion if cap is None or completion <= cap else cap

    def _attempt_ended(self, request: Any, outcome: int, spent: int, at: int) -> None:
        """An attempt's end event: a server's slot frees, or a queued attempt is given up."""
        if outcome == _QUEUE_TIMEOUT:
            job: Job = request  # this event's payload is the job
            if job.started or job.cancelled:
                return  # it left the queue in time: its own end is coming
            job.cancelled = True
            request = job.request
            deadline = request.arrival_us + self._request_timeout_us
            outcome = _DEADLINE if at >= deadline else TIMED_OUT
            request.job = None
            self._ended(request, outcome, spent, at)
            return
        if request.job is None:
            self._ended(request, outcome, spent, at)
            return
        backend = request.backend
        server = self.backends.servers[backend]
        server.running -= 1
        if outcome == OK and request.record.answer is not None and server.model.cache_blocks:
            # It generated its answer: the answer's blocks follow the prompt's.
            server.remember(server.blocks(answered_of(request.record)))
        request.job = None
        self._ended(request, outcome, spent, at)
        self._start_jobs(backend, at)

    def _ended(self, request: Request, outcome: int, spent: int, at: int) -> None:
        backend = request.backend
        backends = self.backends
        backends.end(backend, request.tokens)
        self.result.last_end_us = max(self.result.last_end_us or at, at)
        breaker = backends.breakers[backend]
        seconds = self._seconds(at)
        if outcome == OK:
            backends.succeeded(backend, seconds, spent)
            self.total_in_flight -= 1
            self._served(request, backend, at)
            return
        if outcome == _DEADLINE:
            self.total_in_flight -= 1
            self._fail(request, "request_timeout", at)
            return
        failure = _failure(backend, outcome)
        breaker.failure(seconds, failure.detail, unreachable=failure.kind in UNREACHABLE)
        if breaker.take_early_probe(seconds):
            # Sent at once; a refused connection answers it within refused_ms.
            self._push(at + backends.refused_us, _EARLY_PROBE, backend, 0)
        self._plan_trial(backend, at)
        self.result.failed_attempts[backend] += 1
        attempts = request.attempts
        assert attempts is not None
        if attempts.failed(failure):
            self._next_attempt(request, at)
            return
        self.total_in_flight -= 1
        self._fail(request, attempts.problem().problem.code, at)

    def _served(self, request: Request, backend: str, at: int) -> None:
        result = self.result
        record = request.record
        completion = self._completion(request)
        result.served[backend] += 1
        result.latencies_ms[backend].append((at - request.arrival_us) / 1000)
        result.ttft_ms[backend].append((request.first_token_us - request.arrival_us) / 1000)
        if request.affinity:
            index = self._indexes.get(request.model)
            if index is not None:
                index.record(request.affinity, backend)
        if self.explain is not None:
            self._explained(request, "served", at)
        if request.price is None:
            result.unpriced += 1
        else:
            result.spend[request.org] += cost(request.price, record.prompt_tokens, completion)
        if request.holds and request.plan is not None:
            usage = TokenUsage(record.prompt_tokens, completion, record.prompt_tokens + completion)
            self.limits.settle(request.plan, request.holds, usage, served=True, now_us=at)

    def _fail(self, request: Request, reason: str, at: int) -> None:
        self.result.denials[reason] += 1
        if self.explain is not None:
            self._explained(request, reason, at)
        if request.holds and request.plan is not None:
            self.limits.settle(request.plan, request.holds, None, served=False, now_us=at)

    def _explained(self, request: Request, outcome: str, at: int) -> None:
        assert self.explain is not None
        self.explain(request.explanation(outcome, at))


def _failure(backend: str, outcome: int) -> Failure:
    """A failed attempt as the router would see it (a fault's kind decides)."""
    if outcome == TIMED_OUT:
        return Failure(backend, FailureKind.TIMEOUT, "timed out")
    if outcome == ERRORED:
        return status_failure(backend, 503)
    return Failure(backend, FailureKind.CONNECT, "failed")
