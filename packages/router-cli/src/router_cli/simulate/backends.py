"""The simulated backends: their health as the router sees it, and what an attempt costs.

Rules:
- Each backend has the router's own `Breaker` (with the config's `health`
  settings), an in-flight count against its `max_in_flight`, and a latency
  average (kept only when some model routes by latency).
- A half-open circuit is decided by a trial probe, as in the router: a
  one-token request that fails while the backend is down, hung or erroring,
  and when its cost passes `probe_timeout_s`.
- Routing sees them as `BackendView`s; a backend whose circuit is closed and
  settled, below its cap, needs none (routing's default is "healthy"),
  unless some model routes by load (`least_load` or affinity): then every
  backend's view carries its in-flight requests and outstanding tokens
  (each request's prompt tokens plus its max_tokens, the live router's
  count) against its `max_in_flight` and `max_outstanding_tokens`.
- A backend the `World` gives a `server` is a `servers.Server` (queue,
  slots, cache); the engine runs its queue.
- An attempt's outcome and cost follow the `World`: the first active fault of
  kind down, hang or error decides it; otherwise latency faults add up, and a
  total past the backend's `read_timeout_s` is a timeout at that timeout.
- Times here are offsets from the trace's first request: µs for faults,
  seconds for breakers.
"""

from __future__ import annotations

from router_cli.simulate.faults import FaultKind, World
from router_cli.simulate.servers import Server
from router_core.breaker import Breaker, Circuit, Ewma
from router_core.config import RouterConfig
from router_core.routing import BackendView

# Outcomes of one attempt: answered, connection refused, timed out, answered 503.
OK, FAILED, TIMED_OUT, ERRORED = 0, 1, 2, 4


class Backends:
    def __init__(self, config: RouterConfig, world: World) -> None:
        self.world = world
        health = config.health  # a simulation runs under one config
        self.breakers = {name: Breaker(lambda: health) for name in config.backends}
        self.latency = {name: Ewma() for name in config.backends}
        self.in_flight = dict.fromkeys(config.backends, 0)
        self.outstanding = dict.fromkeys(config.backends, 0)
        self.caps = {name: b.max_in_flight for name, b in config.backends.items()}
        self.token_caps = {name: b.max_outstanding_tokens for name, b in config.backends.items()}
        self.latency_aware = any(m.strategy == "least_latency" for m in config.models.values())
        self.load_aware = any(
            m.strategy == "least_load" or m.affinity is not None for m in config.models.values()
        )
        self.servers: dict[str, Server] = {}
        for name in config.backends:
            server = world.model_of(name).server
            if server is not None:
                self.servers[name] = Server(server)
        self.faults = {n: [f for f in world.faults if f.backend == n] for n in config.backends}
        self.refused_us = round(world.refused_ms * 1000)
        self.read_timeout_us = {
            name: round(b.read_timeout_s * 1_000_000) for name, b in config.backends.items()
        }

    def views(self, seconds: float) -> dict[str, BackendView] | None:
        """Views of the backends that are not plainly healthy (None: all are)."""
        views: dict[str, BackendView] | None = None
        for name, breaker in self.breakers.items():
            in_flight = self.in_flight[name]
            if (
                breaker.state is Circuit.CLOSED
                and breaker.closed_at is None
                and in_flight < self.caps[name]
                and not self.latency_aware
                and not self.load_aware
            ):
                continue
            if views is None:
                views = {}
            available = breaker.available(seconds)
            views[name] = BackendView(
                available=available,
                circuit=breaker.state.value,
                in_flight=in_flight,
                max_in_flight=self.caps[name],
                latency_ms=self.latency[name].value,
                ramp=breaker.ramp(seconds),
                outstanding_tokens=self.outstanding[name],
                max_outstanding_tokens=self.token_caps[name],
            )
        return views

    def begin(self, backend: str, tokens: int) -> None:
        self.in_flight[backend] += 1
        self.outstanding[backend] += tokens

    def end(self, backend: str, tokens: int) -> None:
        self.in_flight[backend] -= 1
        self.outstanding[backend] -= tokens

    def succeeded(self, backend: str, seconds: float, spent_us: int) -> None:
        self.breakers[backend].success(seconds)
        if self.latency_aware:  # only least_latency reads the average
            self.latency[backend].add(spent_us / 1000)

    def fault(self, backend: str, offset_us: int) -> tuple[int, int]:
        """The outcome a fault forces on an attempt at `offset_us` and its cost
        (µs), or (OK, the latency faults' added µs)."""
        model = self.world.model_of(backend)
        added = 0.0
        for fault in self.faults[backend]:
            if not fault.active(offset_us):
                continue
            if fault.kind is FaultKind.DOWN:
                return FAILED, round(self.world.refused_ms * 1000)
            if fault.kind is FaultKind.HANG:
                return TIMED_OUT, self.read_timeout_us[backend]
            if fault.kind is FaultKind.ERROR:
                # A server that errors answers at once; a fixed latency, after it.
                errs = self.world.refused_ms if model.server is not None else model.latency_ms
                return ERRORED, round(errs * 1000)
            added += fault.added_ms
        return OK, round(added * 1000)

    def outcome(self, backend: str, offset_us: int, completion: int) -> tuple[int, int]:
        """How an attempt on `backend` (a fixed latency, not a server) at
        `offset_us` ends, and how long it takes (µs)."""
        model = self.world.model_of(backend)
        read_timeout = self.read_timeout_us[backend]
        forced, added = self.fault(backend, offset_us)
        if forced != OK:
            return forced, added
        spent = round((model.latency_ms + model.per_token_ms * completion) * 1000) + added
        if spent > read_timeout:
            return TIMED_OUT, read_timeout
        return OK, spent

    def trial(self, backend: str, offset_us: int, timeout_us: int) -> tuple[str | None, int]:
        """A trial probe of `backend` at `offset_us`: its failure (None: it
        answered) and how long it takes (µs)."""
        server = self.world.model_of(backend).server
        if server is not None:
            # A server takes a probe's one token at once (it does not queue it).
            outcome, spent = self.fault(backend, offset_us)
            if outcome == OK:
                one = server.prefill_ms_per_token + server.decode_ms_per_token
                spent += round(one * 1000 / server.speed)
        else:
            outcome, spent = self.outcome(backend, offset_us, 1)
        if outcome == TIMED_OUT or spent > timeout_us:
            return "trial probe: timed out waiting for the backend", timeout_us
        if outcome == FAILED:
            return "trial probe: connection refused or unreachable", spent
        if outcome == ERRORED:
            return "trial probe: HTTP 503", spent
        return None, spent

    def probe(self, offset_us: int, seconds: float) -> None:
        """Active probes of every backend: they fail while it is down, hung or erroring."""
        for name in self.breakers:
            self.probe_one(name, offset_us, seconds)

    def probe_one(self, backend: str, offset_us: int, seconds: float) -> None:
        broken = any(
            f.kind is not FaultKind.LATENCY and f.active(offset_us) for f in self.faults[backend]
        )
        self.breakers[backend].probe(seconds, not broken, "active probe failed")
