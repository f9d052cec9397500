"""Backend health: a circuit breaker, a latency average and live load per backend.

The rules live in `router_core.breaker`; this module feeds them the monotonic
clock, the results of real requests (passive), of probes on an interval
(active) and of the trial probes that decide a half-open circuit, and hands
routing a `BackendView` of each backend per decision.

Live state only: the breaker settings, the probe interval and each backend's
in-flight cap are read from the running config (`config()`) when needed, so
a reload patches nothing here. The set of backends follows the running
config too: one that a reload adds starts fresh, one that stays keeps its
state, one that goes is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs

from router_core.attempts import UNREACHABLE, FailureKind
from router_core.breaker import Breaker, Circuit, Ewma
from router_core.config import Backend, HealthSettings, RouterConfig
from router_core.load_metrics import LoadSample
from router_core.routing import BackendView

log = logging.getLogger("router.health")


@attrs.define
class BackendHealth:
    breaker: Breaker
    latency: Ewma = attrs.field(factory=Ewma)
    in_flight: int = 0
    # The tokens of the requests in flight (each: prompt bound plus most output).
    outstanding_tokens: int = 0
    # The last reading of the backend's own metrics, and its monotonic time.
    reported: LoadSample | None = None
    reported_load: float | None = None
    reported_at: float = float("-inf")
    scrape_failures: dict[str, int] = attrs.field(factory=dict)
    last_probe_ok: bool | None = None
    requests: int = 0
    failures: int = 0
    # The monotonic time its last Retry-After runs out.
    throttled_until: float = float("-inf")

    def fresh_load(self, now: float, settings: Backend) -> float | None:
        """The reported load, unless it is stale (or the backend reports none)."""
        metrics = settings.load_metrics
        if metrics is None or now - self.reported_at > metrics.stale_after_s:
            return None
        return self.reported_load

    def view(self, now: float, settings: Backend) -> BackendView:
        breaker = self.breaker
        return BackendView(
            throttled=now < self.throttled_until,
            available=breaker.available(now),
            circuit=breaker.state.value,
            in_flight=self.in_flight,
            max_in_flight=settings.max_in_flight,
            latency_ms=self.latency.value,
            ramp=breaker.ramp(now),
            outstanding_tokens=self.outstanding_tokens,
            max_outstanding_tokens=settings.max_outstanding_tokens,
            reported_load=self.fresh_load(now, settings),
        )


@attrs.define
class Health:
    # The running config (a reload swaps it): settings are read from it on every call.
    config: Callable[[], RouterConfig]
    clock: Callable[[], float] = time.monotonic
    _backends: dict[str, BackendHealth] = attrs.field(factory=dict, init=False)
    # The backends of the config `_backends` was last matched to.
    _followed: Mapping[str, Backend] | None = attrs.field(default=None, init=False)
    # Set whenever a request to any backend ends, for requests waiting for a free slot.
    _freed: anyio.Event | None = attrs.field(default=None, init=False)
    # Set whenever a circuit changes state or an early probe is wanted, for the
    # loop that sends probes.
    _wanted: anyio.Event | None = attrs.field(default=None, init=False)

    @property
    def settings(self) -> HealthSettings:
        return self.config().health

    @property
    def backends(self) -> dict[str, BackendHealth]:
        """Each backend's live state, for the backends of the running config."""
        configured = self.config().backends
        if configured is not self._followed:
            kept = self._backends
            self._backends = {
                name: kept[name] if name in kept else BackendHealth(Breaker(lambda: self.settings))
                for name in configured
            }
            self._followed = configured
        return self._backends

    def views(self) -> dict[str, BackendView]:
        now = self.clock()
        configured = self.config().backends
        return {name: state.view(now, configured[name]) for name, state in self.backends.items()}

    def available(self, backend: str) -> bool:
        state = self.backends.get(backend)
        if state is None:
            return False
        now = self.clock()
        return now >= state.throttled_until and state.breaker.available(now)

    def throttle(self, backend: str, seconds: float) -> None:
        """The backend asked for no requests for `seconds` (its Retry-After)."""
        state = self.backends.get(backend)
        if state is not None:
            state.throttled_until = max(state.throttled_until, self.clock() + seconds)
            log.info(
                "backend throttled", extra={"backend": backend, "retry_after_s": round(seconds, 3)}
            )

    # A reload may remove a backend while requests to it are still running:
    # their results are then dropped (the `None` checks below).

    def begin(self, backend: str, tokens: int = 0) -> None:
        """An attempt starts: it holds one request and `tokens` of the backend."""
        state = self.backends.get(backend)
        if state is None:
            return
        state.in_flight += 1
        state.outstanding_tokens += tokens
        state.requests += 1

    def end(self, backend: str, tokens: int = 0) -> None:
        """The request no longer occupies the backend (its verdict may come earlier);
        `tokens` as given to its `begin`."""
        state = self.backends.get(backend)
        if state is not None:
            state.in_flight = max(0, state.in_flight - 1)
            state.outstanding_tokens = max(0, state.outstanding_tokens - tokens)
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    def reported(self, backend: str, sample: LoadSample) -> None:
        """A reading of the backend's own metrics, taken now."""
        state = self.backends.get(backend)
        settings = self.config().backends.get(backend)
        if state is None or settings is None:
            return
        state.reported = sample
        state.reported_load = sample.load(settings.max_in_flight)
        state.reported_at = self.clock()

    def scrape_failed(self, backend: str, reason: str) -> None:
        """A read of its metrics failed (`reason`: one of a few words, for a metric label)."""
        state = self.backends.get(backend)
        if state is not None:
            state.scrape_failures[reason] = state.scrape_failures.get(reason, 0) + 1

    def succeeded(self, backend: str, latency_ms: float) -> None:
        state = self.backends.get(backend)
        if state is None:
            return
        state.latency.add(latency_ms)
        state.breaker.success(self.clock())

    def failed(
        self,
        backend: str,
        reason: str,
        *,
        answered: bool = False,
        kind: FailureKind | None = None,
    ) -> None:
        """A failed request; `answered`: it had `succeeded` when its answer
        began, and broke later (the breaker counts the request once). One that
        could not reach the backend (`kind` connect or protocol) may ask for an
        early probe, which wakes the probe loop."""
        state = self.backends.get(backend)
        if state is None:
            return
        state.failures += 1
        breaker = state.breaker
        before, wanted = breaker.state, breaker.probe_wanted
        breaker.failure(self.clock(), reason, answered=answered, unreachable=kind in UNREACHABLE)
        self._log_transition(backend, before, breaker)
        if breaker.probe_wanted and not wanted:
            self._wake()

    def take_early_probes(self, backends: Iterable[str]) -> list[str]:
        """The backends among `backends` whose early probe is wanted; taken."""
        now = self.clock()
        return [
            name
            for name in backends
            if (state := self.backends.get(name)) is not None
            and state.breaker.take_early_probe(now)
        ]

    def probed(self, backend: str, ok: bool) -> None:
        state = self.backends.get(backend)
        if state is None:
            return
        state.last_probe_ok = ok
        before = state.breaker.state
        state.breaker.probe(self.clock(), ok, "" if ok else "active probe failed")
        self._log_transition(backend, before, state.breaker)

    def next_trial_at(self, backends: Iterable[str]) -> float | None:
        """When the first trial probe among `backends` is due (None: none to come)."""
        now = self.clock()
        due = [
            at
            for name in backends
            if (state := self.backends.get(name)) is not None
            and (at := state.breaker.next_trial_at(now)) is not None
        ]
        return min(due, default=None)

    def begin_trial(self, backend: str) -> int | None:
        """Take `backend`'s trial probe if one is due: its number, else None."""
        state = self.backends.get(backend)
        return None if state is None else state.breaker.begin_trial(self.clock())

    def end_trial(self, backend: str, trial: int, failure: str | None, *, cancelled: bool) -> None:
        """A trial probe's result: `failure` None if it succeeded; no verdict if cancelled."""
        state = self.backends.get(backend)
        if state is None:
            return
        before = state.breaker.state
        ok = None if cancelled else failure is None
        state.breaker.end_trial(self.clock(), trial, ok, failure or "")
        self._log_transition(backend, before, state.breaker)

    async def wanted(self) -> None:
        """Return when a circuit changes state or an early probe is wanted
        (callers bound the wait): what the probe loop waits for."""
        if self._wanted is None:
            self._wanted = anyio.Event()
        await self._wanted.wait()

    def _wake(self) -> None:
        if self._wanted is not None:
            self._wanted.set()
            self._wanted = None

    async def wait_for_capacity(self) -> None:
        """Return when some backend request ends (callers bound the wait)."""
        if self._freed is None:
            self._freed = anyio.Event()
        await self._freed.wait()

    def _log_transition(self, backend: str, before: Circuit, breaker: Breaker) -> None:
        if breaker.state is not before:
            self._wake()
            log.warning(
                "circuit %s",
                breaker.state.value,
                extra={"backend": backend, "circuit": breaker.state.value,
                       "reason": breaker.last_failure},
            )  # fmt: skip

    @staticmethod
    def _load_status(now: float, state: BackendHealth, settings: Backend) -> dict[str, Any]:
        if settings.load_metrics is None:
            return {}
        sample = state.reported
        return {
            "reported_load": state.fresh_load(now, settings),
            "load_metrics": {
                "running": None if sample is None else sample.running,
                "waiting": None if sample is None else sample.waiting,
                "cache_usage": None if sample is None else sample.cache_usage,
                "age_s": None if sample is None else round(now - state.reported_at, 3),
                "failures": dict(state.scrape_failures),
            },
        }

    def unserved_models(self, config: RouterConfig) -> list[str]:
        """Models none of whose backends could take a request now."""
        views = self.views()
        return sorted(
            name
            for name, model in config.models.items()
            if not any(
                views[t.backend].available
                for t in (*model.backends, *(t for r in model.routes for t in r.backends))
                if t.backend in views
            )
        )

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each backend's health, for /v1/status and the admin API."""
        now = self.clock()
        configured = self.config().backends
        out = {}
        for name, state in self.backends.items():
            breaker = state.breaker
            circuit = breaker.current(now)
            window = breaker.counts(now)
            rate = window.failure_rate
            out[name] = {
                "circuit": circuit.value,
                "available": breaker.available(now),
                "throttled_for_s": round(state.throttled_until - now, 3)
                if now < state.throttled_until
                else 0,
                "in_flight": state.in_flight,
                "max_in_flight": configured[name].max_in_flight,
                "outstanding_tokens": state.outstanding_tokens,
                "max_outstanding_tokens": configured[name].max_outstanding_tokens,
                **self._load_status(now, state, configured[name]),
                "latency_ewma_ms": None
                if state.latency.value is None
                else round(state.latency.value, 3),
                "weight_ramp": round(breaker.ramp(now), 3),
                "last_probe_ok": state.last_probe_ok,
                "last_failure": breaker.last_failure or None,
                "requests": state.requests,
                "failures": state.failures,
                # What the breaker judges by: the results of its sliding window.
                "window": {
                    "requests": window.requests,
                    "failures": window.failures,
                    "failure_rate": None if rate is None else round(rate, 4),
                },
                "trial_probes": breaker.trials,
                "last_trial_ok": breaker.last_trial_ok,
            }
        return out
