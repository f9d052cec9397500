"""The router's configuration as frozen value objects.

Rules:
- Every class is immutable and validates its own fields at construction, so
  a `RouterConfig` that exists is a config the router can run.
- Each field's checks live in its metadata (`_checked`); construction runs
  all of them and raises one group of `FieldError`s, so a file with three
  mistakes in one object reports all three. The codec turns each into a path
  such as `models.gpt-4o.backends[1].weight: must be > 0`.
- Settings with a fixed set of values are `config_enums` StrEnums, so a
  typo is refused by the converter, never read as some default.
- Cross-references (a model naming a backend, key ids unique across
  organizations) are checked by `config_codec.check_references`, because they
  span objects.
- No serialization here; `config_codec` converts to and from plain data.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from router_core.config_enums import (
    FailureMode,
    Fsync,
    MaxTokensPolicy,
    Period,
    RedisMode,
    StateStoreKind,
    Strategy,
    TokenAlgorithm,
    TracingExporter,
    Transport,
    is_member,
    not_one_of,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
KEY_ID_RE = re.compile(r"^[A-Za-z0-9]{4,32}$")
KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldError(ValueError):
    """A field failed validation; `field` is its name in the enclosing object."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# `not value > 0` rather than `value <= 0`: a NaN (YAML's `.nan`) fails every
# comparison, so only this form rejects it.
def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # Written so NaN fails too; infinity is no setting either (a circuit that never closes).
    if not 0 < value < float("inf"):
        raise FieldError(attribute.name, "must be > 0")


def _port(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise FieldError(attribute.name, "must be a TCP port between 0 and 65535")


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if not pattern.match(value):
            raise FieldError(attribute.name, f"must be {what}")

    return check


def _one_of(kind: type[enum.StrEnum]) -> Any:
    # The codec's converter already refuses a non-member; this keeps objects
    # built in Python (embedders, tests) as strict as those read from a file.
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not is_member(value, kind):
            raise FieldError(attribute.name, not_one_of(kind, value))

    return check


def _url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise FieldError(attribute.name, "must be an http:// or https:// URL")


def _optional_positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise FieldError(attribute.name, "must be > 0")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise FieldError(attribute.name, "must be >= 0")


def _non_empty(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise FieldError(attribute.name, "must not be empty")


Check = Any  # (instance, attribute, value) -> None, raising FieldError


def _checked(*, validator: Check, **kwargs: Any) -> Any:
    """An attrs field whose check runs, with every other field's, when the object is built."""
    return attrs.field(metadata={"checks": (validator,)}, **kwargs)


def _check_fields(self: Any) -> None:
    errors: list[FieldError] = []
    for attribute in attrs.fields(type(self)):
        for check in attribute.metadata.get("checks", ()):
            try:
                check(self, attribute, getattr(self, attribute.name))
            except FieldError as error:
                errors.append(error)
                break
    if errors:
        raise ExceptionGroup(f"invalid {type(self).__name__}", errors)


@attrs.frozen
class Listener:
    """A plain HTTP listener."""

    # Address to listen on (0.0.0.0 for every interface).
    host: str = "127.0.0.1"
    # TCP port (0: any free port).
    port: int = _checked(default=8080, validator=_port)

    __attrs_post_init__ = _check_fields


def _file_path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must be a file path")


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
class ServerSettings:
    """The public server: body size, timeouts, transport, workers, backpressure."""

    # Request bodies above this many bytes get 413 before they are parsed.
    max_body_bytes: int = _checked(default=1_048_576, validator=_positive)
    # Upper bound on the time from accepting a request to the backend's
    # response headers (streams are then bounded by the backend read timeout).
    request_timeout_s: float = _checked(default=60.0, validator=_positive)
    # "aiohttp" (default, fastest) or "httpx" (httpx's own transport).
    transport: Transport = _checked(default=Transport.AIOHTTP, validator=_one_of(Transport))
    # Router processes sharing the listener.
    workers: int = _checked(default=1, validator=_positive)
    # Backpressure: requests being served at once, over all backends. Past it
    # a request waits up to queue_timeout_ms among at most max_queued others,
    # then gets 503 with Retry-After.
    max_in_flight: int = _checked(default=1024, validator=_positive)
    max_queued: int = _checked(default=256, validator=_non_negative)
    queue_timeout_ms: int = _checked(default=200, validator=_non_negative)
    # How often the config file is checked for changes (SIGHUP reloads at once).
    config_watch_s: float = _checked(default=2.0, validator=_positive)

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

    # Active probes of every backend: how often, and how long one may take.
    probe_interval_s: float = _checked(default=2.0, validator=_positive)
    probe_timeout_s: float = _checked(default=1.0, validator=_positive)
    # Consecutive failed requests that open a backend's circuit.
    failure_threshold: int = _checked(default=3, validator=_positive)
    # How long an open circuit rejects traffic before a trial request.
    open_s: float = _checked(default=5.0, validator=_positive)
    # Trial requests at once while half-open.
    half_open_max: int = _checked(default=1, validator=_positive)
    # After recovery, the backend's weight ramps from 10% to 100% over this long.
    ramp_s: float = _checked(default=10.0, validator=_non_negative)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Backend:
    """A model server: where it is, its credential, its timeouts and capacity."""

    # The backend's OpenAI-compatible base URL (the router appends /v1/...).
    base_url: str = _checked(validator=_url)
    # Name of the environment variable that holds this backend's credential;
    # the credential itself never appears in the config file.
    api_key_env: str | None = _checked(
        default=None,
        validator=attrs.validators.optional(_matches(ENV_RE, "an environment variable name")),
    )
    # Limits on connecting, and on each read of the answer (a stream's gap between chunks).
    connect_timeout_s: float = _checked(default=5.0, validator=_positive)
    read_timeout_s: float = _checked(default=60.0, validator=_positive)
    # Requests this backend serves at once; past it, routing picks another or waits.
    max_in_flight: int = _checked(default=256, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class ModelTarget:
    """One backend of a model, with its weight and tier."""

    # A name from `backends`.
    backend: str = _checked(validator=_matches(NAME_RE, "a backend name"))
    # The model name the backend knows; defaults to the public name.
    model: str | None = None
    # Share of traffic among the candidates of one tier.
    weight: float = _checked(default=1.0, validator=_positive)
    # Priority tier: 0 is primary; tier 1 is tried only when every tier-0
    # backend is unavailable or has failed, and so on.
    tier: int = _checked(default=0, validator=_non_negative)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class RouteRule:
    """Backends for some organizations or keys, instead of the model's default list."""

    # The backends for callers this rule matches.
    backends: tuple[ModelTarget, ...] = _checked(validator=_non_empty)
    # Organizations and API key ids the rule applies to.
    organizations: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    __attrs_post_init__ = _check_fields

    def matches(self, organization: str, key_id: str | None) -> bool:
        return organization in self.organizations or (key_id is not None and key_id in self.keys)


@attrs.frozen
class Model:
    """A public model name: its backends, how to choose among them, per-caller routes."""

    # The backends serving this public model name.
    backends: tuple[ModelTarget, ...] = _checked(validator=_non_empty)
    # weighted: random by weight; least_latency: of two weighted picks, the
    # one with the lower latency average (power of two choices).
    strategy: Strategy = _checked(default=Strategy.WEIGHTED, validator=_one_of(Strategy))
    # The first rule matching the caller's organization or key replaces `backends`.
    routes: tuple[RouteRule, ...] = ()
    # Non-streamed requests only: if the first backend has not answered after
    # this long, send the request to the next candidate too and keep the first
    # answer. Off unless set.
    hedge_after_ms: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


def _nanos(_: object, attribute: attrs.Attribute[Any], value: Decimal | None) -> None:
    if value is not None and (value <= 0 or (value * 10**9) % 1 != 0 or value >= 9_000_000):
        raise FieldError(attribute.name, "must be > 0 and < 9,000,000 USD with at most 9 decimals")


def _per_million(_: object, attribute: attrs.Attribute[Any], value: Decimal) -> None:
    if value < 0 or (value * 1000) % 1 != 0 or value >= 9_000_000:
        raise FieldError(attribute.name, "must be >= 0 USD per 1M tokens with at most 3 decimals")


# The `per` of a rate limit, in microseconds.
PERIOD_US = {"second": 1_000_000, "minute": 60_000_000, "hour": 3_600_000_000}


@attrs.frozen
class RateLimit:
    """`rate` units per `per`, of which up to `burst` at once (default: `rate`)."""

    # Units allowed per `per`.
    rate: int = _checked(validator=_positive)
    # The period of `rate`.
    per: Period = _checked(default=Period.SECOND, validator=_one_of(Period))
    # Units allowed at once (default: `rate`).
    burst: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Quotas:
    """Counts per calendar day or month (UTC)."""

    # Counts per UTC calendar day and month; a request over any is refused with 402.
    requests_per_day: int | None = _checked(default=None, validator=_optional_positive)
    requests_per_month: int | None = _checked(default=None, validator=_optional_positive)
    tokens_per_day: int | None = _checked(default=None, validator=_optional_positive)
    tokens_per_month: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Budget:
    """Spend limits in USD, from the `prices` table."""

    # USD per UTC day, per UTC month, and in total (never resets).
    per_day: Decimal | None = _checked(default=None, validator=_nanos)
    per_month: Decimal | None = _checked(default=None, validator=_nanos)
    total: Decimal | None = _checked(default=None, validator=_nanos)

    __attrs_post_init__ = _check_fields

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.per_day, self.per_month, self.total))


@attrs.frozen
class Limits:
    """Limits of one scope: an organization, an API key, or an organization's model."""

    # Requests per period (GCRA, with a burst).
    requests: RateLimit | None = None
    # Tokens (prompt bound plus max_tokens, then actual) per period.
    tokens: RateLimit | None = None
    # Requests and tokens per calendar day or month (UTC).
    quotas: Quotas = Quotas()
    # Spend per day, per month, or in total.
    budget: Budget = Budget()


@attrs.frozen
class ModelPrice:
    """USD per million tokens."""

    # USD per million prompt tokens, and per million completion tokens.
    input: Decimal = _checked(validator=_per_million)
    output: Decimal = _checked(default=Decimal(0), validator=_per_million)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class FailurePolicy:
    """What a limit does when its shared store (Redis) cannot answer in time."""

    # fail_open: decide against a local share (limit / expected_replicas);
    # fail_closed: refuse with 503.
    rate_limits: FailureMode = _checked(
        default=FailureMode.FAIL_OPEN, validator=_one_of(FailureMode)
    )
    # Quotas and budgets refuse (fail_closed) by default: they guard money.
    quotas: FailureMode = _checked(default=FailureMode.FAIL_CLOSED, validator=_one_of(FailureMode))
    budgets: FailureMode = _checked(default=FailureMode.FAIL_CLOSED, validator=_one_of(FailureMode))

    __attrs_post_init__ = _check_fields


@attrs.frozen
class LimitSettings:
    """How limits behave, and without their store (where they are kept: `state`)."""

    # Upper bound on one admission decision's wait for the store.
    timeout_ms: int = _checked(default=100, validator=_positive)
    # Replicas sharing the limits: a fail-open rate limit allows limit / this.
    expected_replicas: int = _checked(default=1, validator=_positive)
    # When max_tokens is absent or more than the budget left allows:
    # clamp it to what the budget affords, or refuse with 402.
    max_tokens_policy: MaxTokensPolicy = _checked(
        default=MaxTokensPolicy.CLAMP, validator=_one_of(MaxTokensPolicy)
    )
    # The worst case reserved for a request without max_tokens (and then sent
    # to the backend as its max_tokens), when a budget or token limit applies.
    default_max_tokens: int = _checked(default=4096, validator=_positive)
    # What each kind of limit does when the store does not answer.
    on_store_failure: FailurePolicy = FailurePolicy()

    __attrs_post_init__ = _check_fields


TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
DAY_S = 86_400


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value < 1:
        raise FieldError(attribute.name, "must be between 0 and 1 (exclusive)")


def _at_least(minimum: int, why: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < minimum:
            raise FieldError(attribute.name, f"must be >= {minimum} ({why})")

    return check


@attrs.frozen
class SpoolSettings:
    """The local disk spool every usage and audit record is appended to before
    it is answered, drained in order to the ledger and to Kafka."""

    # Above this, new requests are refused (503 usage_spool_full) so that no
    # accepted request goes unrecorded; size it for the outage to ride out.
    max_bytes: int = _checked(default=1 << 30, validator=_at_least(1 << 16, "64 KiB"))
    # A loud warning once the spool is this full.
    warn_ratio: float = _checked(default=0.5, validator=_fraction)
    # Size of one spool file; drained files are deleted whole.
    segment_bytes: int = _checked(default=16 << 20, validator=_at_least(4096, "4 KiB"))
    # always: fsync before answering; interval: every fsync_interval_ms (a
    # process crash loses nothing, a power cut at most that interval); never.
    fsync: Fsync = _checked(default=Fsync.INTERVAL, validator=_one_of(Fsync))
    fsync_interval_ms: int = _checked(default=200, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class KafkaSettings:
    """Export of usage and audit records to Kafka."""

    # Environment variable holding the bootstrap servers (host:port,...).
    bootstrap_env: str = _checked(
        default="ROUTER_KAFKA_BOOTSTRAP", validator=_matches(ENV_RE, "an environment variable name")
    )
    # Topics of usage records and of audit records.
    usage_topic: str = _checked(
        default="usage.records.v1", validator=_matches(TOPIC_RE, "a Kafka topic name")
    )
    audit_topic: str = _checked(
        default="audit.router.v1", validator=_matches(TOPIC_RE, "a Kafka topic name")
    )
    # Off for brokers without the idempotent producer (records carry ids to dedupe by).
    enable_idempotence: bool = True
    # Producer batching: wait up to linger_ms for up to batch_records records.
    linger_ms: int = _checked(default=20, validator=_at_least(0, "milliseconds"))
    batch_records: int = _checked(default=1000, validator=_positive)
    # A produce request not acknowledged in this long is retried.
    request_timeout_ms: int = _checked(default=10_000, validator=_positive)
    # Create the topics when missing (partitions, replication factor).
    create_topics: bool = False
    partitions: int = _checked(default=3, validator=_positive)
    replication_factor: int = _checked(default=1, validator=_positive)
    # The producer's client id, as brokers log it.
    client_id: str = _checked(default="router", validator=_matches(NAME_RE, "a client id"))

    __attrs_post_init__ = _check_fields


@attrs.frozen
class UsageSettings:
    """Usage records: the spool, the ledger, Kafka (all kept under `state.dir`)."""

    # The embedded SQLite ledger `router usage report` reads.
    ledger: bool = True
    # The write-ahead spool of every record.
    spool: SpoolSettings = SpoolSettings()
    # Export to Kafka when set.
    kafka: KafkaSettings | None = None


@attrs.frozen
class IdempotencySettings:
    """Idempotent retries: how long answers are kept (where: `state`)."""

    # How long a completed request's answer is kept for retries.
    retention_s: int = _checked(default=DAY_S, validator=_at_least(DAY_S, "keys are kept 24 h"))
    # A claim whose replica died lapses after this; a retry may then proceed.
    in_flight_timeout_s: int = _checked(default=300, validator=_positive)
    # Larger answers are not stored; their key is released after the answer.
    max_body_bytes: int = _checked(default=1 << 20, validator=_positive)

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


@attrs.frozen
class ApiKey:
    """An API key declared in the file, by the hash of its secret."""

    # The key's public id (the part of `rk_live_<id>_...` before the secret).
    id: str = _checked(validator=_matches(KEY_ID_RE, "4 to 32 letters or digits"))
    # The secret's SHA-256; the key itself is never stored (`router keys create`).
    hash: str = _checked(
        validator=_matches(KEY_HASH_RE, "'sha256:' followed by 64 lowercase hex digits"),
        repr=False,
    )
    # A revoked key is refused with 401.
    revoked: bool = False
    # Limits of this key alone, besides its organization's.
    limits: Limits = Limits()
    # Scopes: the public model names and the routes (paths) this key may use.
    models: tuple[str, ...] = ("*",)
    routes: tuple[str, ...] = ("*",)
    # Epoch seconds after which the key is refused (rotation sets it on the old key).
    expires_at: float | None = None

    __attrs_post_init__ = _check_fields

    def allows_model(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    def allows_route(self, route: str) -> bool:
        return "*" in self.routes or route in self.routes

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@attrs.frozen
class Organization:
    """A tenant: its API keys, the models it may use, and its limits."""

    # API keys declared in the file (managed keys live in the key store).
    keys: tuple[ApiKey, ...] = ()
    # Public model names this organization may use; "*" means all.
    models: tuple[str, ...] = ("*",)
    # Limits of the whole organization.
    limits: Limits = Limits()
    # Limits of this organization on one model (public name).
    model_limits: Mapping[str, Limits] = attrs.field(factory=dict)
    # Limits of each interactive (OIDC) user of this organization, apart.
    user_limits: Limits = Limits()

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


def _algorithms(_: object, attribute: attrs.Attribute[Any], value: tuple[object, ...]) -> None:
    if not value:
        raise FieldError(attribute.name, "must name at least one of " + ", ".join(TokenAlgorithm))
    bad = [a for a in value if not is_member(a, TokenAlgorithm)]
    if bad:
        raise FieldError(attribute.name, f"each {not_one_of(TokenAlgorithm, bad[0])}")


@attrs.frozen
class OidcIssuer:
    """An identity provider whose JWT bearer tokens identify interactive users."""

    # The exact `iss` claim.
    issuer: str = _checked(validator=_url)
    # Where the issuer publishes its signing keys (JWKS).
    jwks_url: str = _checked(validator=_url)
    # The `aud` claim the router requires.
    audience: str = _checked(validator=_matches(re.compile(r"^\S+$"), "a non-empty string"))
    # Signature algorithms accepted; others are refused.
    algorithms: tuple[TokenAlgorithm, ...] = _checked(
        default=(TokenAlgorithm.RS256,), validator=_algorithms
    )
    # Clock skew tolerated on exp, nbf and iat.
    leeway_s: float = _checked(default=30.0, validator=_non_negative)
    # Claims naming the organization (must exist in this config) and the user.
    organization_claim: str = "org"
    user_claim: str = "sub"
    # The JWKS is re-read this often, and at most this often on an unknown `kid`.
    jwks_cache_s: float = _checked(default=300.0, validator=_positive)
    jwks_refetch_s: float = _checked(default=10.0, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class AuthSettings:
    """HMAC request signing and OIDC issuers (managed keys live in `state`)."""

    # Signed requests older or newer than this are refused; nonces are kept as long.
    hmac_max_skew_s: int = _checked(default=300, validator=_positive)
    # Identity providers whose JWTs are accepted as bearer tokens.
    issuers: tuple[OidcIssuer, ...] = ()

    __attrs_post_init__ = _check_fields


@attrs.frozen
class RedisSettings:
    """The one Redis every shared store uses: limits, idempotency, keys, nonces, overrides."""

    # standalone: one server (or a proxy in front of several); sentinel: a
    # master found through Sentinel; cluster: a Redis Cluster (every store
    # keeps each operation's keys in one hash slot).
    mode: RedisMode = _checked(default=RedisMode.STANDALONE, validator=_one_of(RedisMode))
    # Environment variable holding the URL (it may carry a password; use
    # rediss:// for TLS). standalone: the server; cluster: any node (the
    # others are discovered); sentinel: the Sentinels, as
    # redis://[:password@]host:port[,host:port...][/db].
    url_env: str = _checked(
        default="ROUTER_REDIS_URL", validator=_matches(ENV_RE, "an environment variable name")
    )
    # sentinel: the name of the master the Sentinels monitor.
    sentinel_master: str = _checked(
        default="mymaster", validator=_matches(NAME_RE, "a Sentinel master name")
    )
    # Upper bound of one store call other than a limit decision (those have
    # limits.timeout_ms); a store slower than this is treated as down.
    timeout_ms: int = _checked(default=2000, validator=_positive)
    # Connections this process may open to Redis (to each node in a cluster).
    max_connections: int = _checked(default=1000, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class StateSettings:
    """Where the router keeps its state: limits, idempotency keys, managed keys,
    HMAC nonces, admin overrides, and (always local) the usage spool and ledger."""

    # embedded: SQLite files under `dir` and this process's memory, for one
    # router process; redis: shared by every replica through `redis`.
    store: StateStoreKind = _checked(
        default=StateStoreKind.EMBEDDED, validator=_one_of(StateStoreKind)
    )
    # The data directory: the usage spool (spool/) and ledger (usage.sqlite3),
    # and with the embedded store keys.sqlite3, nonces.sqlite3,
    # overrides.sqlite3 and idempotency.sqlite3. Relative paths are from the
    # config file's directory.
    dir: str = _checked(default="router-data", validator=_file_path)
    # The shared store (store: redis).
    redis: RedisSettings = RedisSettings()
    # Replicas re-read admin overrides and managed keys this often, besides
    # the change notifications they follow.
    refresh_s: float = _checked(default=2.0, validator=_positive)

    __attrs_post_init__ = _check_fields


# The file format this router reads; a newer file may mean settings it does not know.
CONFIG_VERSION = 1


def _version(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value != CONFIG_VERSION:
        raise FieldError(
            attribute.name,
            f"{value!r} is not supported; this router reads version {CONFIG_VERSION} "
            f"(write version: {CONFIG_VERSION}, or run a router that reads version {value!r})",
        )


@attrs.frozen
class RouterConfig:
    """The whole config file."""

    # Model servers, by name.
    backends: Mapping[str, Backend] = _checked(validator=_non_empty)
    # Public model names clients ask for, and where they go.
    models: Mapping[str, Model] = _checked(validator=_non_empty)
    # Tenants, by name: their keys, models and limits.
    organizations: Mapping[str, Organization] = attrs.field(factory=dict)
    listeners: Listeners = Listeners()
    server: ServerSettings = ServerSettings()
    health: HealthSettings = HealthSettings()
    # Where limits, keys, overrides, idempotency keys and usage are kept.
    state: StateSettings = StateSettings()
    limits: LimitSettings = LimitSettings()
    routing: RoutingSettings = RoutingSettings()
    # USD per million tokens, by public model name; needed where a budget applies.
    prices: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    usage: UsageSettings = UsageSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    auth: AuthSettings = AuthSettings()
    # The file format's version.
    version: int = _checked(default=CONFIG_VERSION, validator=_version)

    __attrs_post_init__ = _check_fields
