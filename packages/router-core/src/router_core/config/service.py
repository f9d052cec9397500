"""The listeners, the server, health checks, routing, observability."""

from __future__ import annotations

import attrs

from router_core.config.fields import (
    _between,
    _check_fields,
    _checked,
    _file_path,
    _non_negative,
    _one_of,
    _optional_between,
    _port,
    _positive,
    _share,
)
from router_core.config_enums import (
    TracingExporter,
    Transport,
)


@attrs.frozen
class Listener:
    """A plain HTTP listener."""

    # Address to listen on (0.0.0.0 for every interface).
    host: str = "127.0.0.1"
    # TCP port (0: any free port).
    port: int = _checked(default=8080, validator=_port)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class AdminListener:
    """The admin API's own listener: HTTPS with mutual TLS, never on the public port."""

    # The admin listener's server certificate and key (PEM).
    cert_file: str = _checked(validator=_file_path)
    key_file: str = _checked(validator=_file_path)
    # Client certificates must be signed by this CA (CERT_REQUIRED).
    ca_file: str = _checked(validator=_file_path)
    # Address of the admin listener; keep it off the public network.
    host: str = "127.0.0.1"
    port: int = _checked(default=8443, validator=_port)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Listeners:
    """The listeners: the public API, and the optional admin API."""

    # The inference API: /v1/*, status, metrics.
    public: Listener = Listener()
    # No admin listener unless configured: the admin API needs certificates.
    admin: AdminListener | None = None


@attrs.frozen
class AdmissionSettings:
    """Admission control from measured saturation, ahead of every reservation
    (see `router_core.saturation` and `router_core.fair_share`)."""

    # Shed new requests (503 overloaded) while the event loop runs this many
    # ms behind (smoothed): a saturated router refuses in a few ms instead of
    # serving everyone late. Low-priority requests are shed at half this lag,
    # high-priority ones at twice it. null: never shed for lag.
    max_loop_lag_ms: int | None = _checked(
        default=100, validator=_optional_between(1, 60_000, "ms")
    )
    # Lag sheds only while at least this many requests are in flight: fewer
    # cannot lag the loop that far themselves (the lag comes from elsewhere:
    # the host, a pause), and refusing them would relieve nothing.
    min_in_flight: int = _checked(default=16, validator=_between(0, 1_000_000))
    # Keep the router's CPU (its process's CPU time, as a share of one core)
    # under this: each window_ms, the in-flight limit drops to what fits in
    # this share at the measured cost of what is in flight, and grows back
    # while it is in use and the CPU is under it. Past the limit requests
    # queue (queue_timeout_ms) or are refused at once. null: no such limit.
    max_busy_percent: int | None = _checked(default=None, validator=_optional_between(10, 100, "%"))
    # How often the lag is measured: a sleep this long, and how late it wakes.
    lag_probe_interval_ms: int = _checked(default=50, validator=_between(5, 1_000, "ms"))
    # Adapt the in-flight limit to the router's own latency (the time from
    # taking a slot to calling a backend: limits, idempotency, routing), as
    # Netflix's gradient limit does; server.max_in_flight stays the hard cap.
    adaptive: bool = False
    # Neither the adaptive nor the busy limit goes below this many requests
    # in flight (at most server.max_in_flight).
    min_limit: int = _checked(default=16, validator=_between(1, 1_000_000))
    # How much the router's latency may grow over its long-run average before
    # the adaptive limit shrinks: 2.0 tolerates twice the usual latency.
    tolerance: float = _checked(default=2.0, validator=_between(1, 10))
    # The adaptive and busy limits are recomputed this often, from that
    # window's latencies and CPU time. For the busy limit under streaming
    # traffic, shorter (25) catches bursts sooner.
    window_ms: int = _checked(default=250, validator=_between(10, 60_000, "ms"))

    __attrs_post_init__ = _check_fields


@attrs.frozen
class ServerSettings:
    """The public server: body size, timeouts, transport, workers, backpressure."""

    # Request bodies above this many bytes get 413 before they are parsed.
    max_body_bytes: int = _checked(default=1_048_576, validator=_positive)
    # Upper bound on the time from accepting a request to the backend's
    # response headers (streams are then bounded by the backend read timeout).
    request_timeout_s: float = _checked(default=60.0, validator=_positive)
    # "aiohttp" (default, fastest) or "httpx" (httpx's own transport).
    transport: Transport = _checked(default=Transport.AIOHTTP, validator=_one_of(Transport))
    # Router processes sharing the listener (`router serve --workers N` wins
    # over this). null: one per usable core with state.store redis, one with
    # the embedded store, which refuses more (its limits live in one process's
    # memory: N workers would each admit the whole limit).
    workers: int | None = _checked(default=None, validator=_optional_between(1, 1024))
    # Backpressure: requests being served at once, over all backends (the hard
    # cap; the adaptive limit, when on, may admit fewer). Past it a request
    # waits up to queue_timeout_ms among at most max_queued others, then gets
    # 503 with Retry-After. Organizations share slots and queue by priority.
    max_in_flight: int = _checked(default=1024, validator=_positive)
    max_queued: int = _checked(default=256, validator=_non_negative)
    queue_timeout_ms: int = _checked(default=200, validator=_non_negative)
    # How long an idle keep-alive connection of a client stays open (read at
    # start): keep it above the idle timeout of any load balancer in front,
    # so the balancer, not the router, closes it.
    keep_alive_timeout_s: float = _checked(default=75.0, validator=_between(1, 3600, "s"))
    # How often the config file is checked for changes (SIGHUP reloads at once).
    config_watch_s: float = _checked(default=2.0, validator=_positive)
    # The cycle collector runs when allocations outnumber frees by this many
    # objects (CPython's generation-0 threshold, read at start). Each run stops
    # every request in flight while it walks the young objects still alive:
    # lower values mean more, shorter pauses and less memory held by garbage
    # cycles (a closed client connection leaves about 35 objects to it).
    gc_young_threshold: int = _checked(default=200_000, validator=_between(700, 10_000_000))
    # Shedding from measured saturation: event-loop lag, adaptive limit.
    admission: AdmissionSettings = AdmissionSettings()

    __attrs_post_init__ = _check_fields


@attrs.frozen
class ObservabilitySettings:
    """Operator surfaces: the ops page and /metrics credential, traces, log content."""

    # Environment variable holding the bearer token of the operator page's
    # data (/ops/summary) and of /metrics; unset: no ops page, open /metrics.
    ops_token_env: str | None = None
    # OpenTelemetry traces (needs the `opentelemetry-sdk` package when on).
    tracing: bool = False
    # "otlp" (OTLP over HTTP, the exporter's own environment variables), "console",
    # or "memory" (kept in process: tests, debugging).
    tracing_exporter: TracingExporter = _checked(
        default=TracingExporter.OTLP, validator=_one_of(TracingExporter)
    )
    # Put prompts and completions in the access log (never on by default).
    log_content: bool = False

    __attrs_post_init__ = _check_fields


@attrs.frozen
class HealthSettings:
    """Active probes and the per-backend circuit breaker (see `router_core.breaker`)."""

    # Active probes of every backend: how often, and how long one may take
    # (a trial probe of a half-open circuit too).
    probe_interval_s: float = _checked(default=2.0, validator=_positive)
    probe_timeout_s: float = _checked(default=1.0, validator=_positive)
    # Share of failed requests (connect errors, timeouts, 5xx) over the last
    # `window_s` seconds that opens a backend's circuit, once that window
    # holds at least `min_requests` results.
    failure_rate: float = _checked(default=0.5, validator=_share)
    # Length of the sliding window the failure rate is measured over (kept
    # in 10 buckets of a tenth of it each).
    window_s: float = _checked(default=10.0, validator=_positive)
    # Requests the window must hold before the failure rate counts.
    min_requests: int = _checked(default=20, validator=_positive)
    # Below `min_requests` in the window (low volume), this many failed
    # requests in a row open the circuit instead.
    failure_threshold: int = _checked(default=3, validator=_positive)
    # How long an open circuit takes no client requests; then a trial probe (a
    # one-token chat completion, bounded by `probe_timeout_s`) closes it if it
    # succeeds, or opens it again for this long.
    open_s: float = _checked(default=5.0, validator=_positive)
    # After recovery, the backend's weight ramps from 10% to 100% over this long.
    ramp_s: float = _checked(default=10.0, validator=_non_negative)
    # A backend that answers 429 or 503 with `Retry-After` (or `retry-after-ms`)
    # gets no requests for that long, but at most this long; 0 ignores it.
    max_retry_after_s: float = _checked(default=60.0, validator=_non_negative)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class RoutingSettings:
    """Failover and retries: attempts per request and the retry budget."""

    # Backends tried per request, the first included (failover and retries).
    max_attempts: int = _checked(default=3, validator=_positive)
    # Retries (attempts after the first) may add at most this share of load...
    retry_budget_ratio: float = _checked(default=0.2, validator=_non_negative)
    # ...plus this many per second, so a quiet router can still fail over.
    retry_min_per_s: float = _checked(default=5.0, validator=_non_negative)

    __attrs_post_init__ = _check_fields
