"""The router's configuration as frozen value objects.

Rules:
- Every class is immutable and validates its own fields at construction, so
  a `RouterConfig` that exists is a config the router can run.
- Each field's checks live in its metadata (`_checked`); construction runs
  all of them and raises one group of `FieldError`s, so a file with three
  mistakes in one object reports all three. The codec turns each into a path
  such as `models.gpt-4o.backends[1].weight: must be > 0`.
- Cross-references (a model naming a backend, key ids unique across
  organizations) are checked by `config_codec.check_references`, because they
  span objects.
- No serialization here; `config_codec` converts to and from plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

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


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise FieldError(attribute.name, "must be > 0")


def _port(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise FieldError(attribute.name, "must be a TCP port between 0 and 65535")


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if not pattern.match(value):
            raise FieldError(attribute.name, f"must be {what}")

    return check


def _one_of(*choices: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise FieldError(attribute.name, f"must be one of {', '.join(choices)}, not {value!r}")

    return check


def _url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise FieldError(attribute.name, "must be an http:// or https:// URL")


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
    host: str = "127.0.0.1"
    port: int = _checked(default=8080, validator=_port)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Listeners:
    public: Listener = Listener()


@attrs.frozen
class ServerSettings:
    # Request bodies above this many bytes get 413 before they are parsed.
    max_body_bytes: int = _checked(default=1_048_576, validator=_positive)
    # Upper bound on the time from accepting a request to the backend's
    # response headers (streams are then bounded by the backend read timeout).
    request_timeout_s: float = _checked(default=60.0, validator=_positive)
    # "aiohttp" (default, fastest) or "httpx" (httpx's own transport).
    transport: str = _checked(default="aiohttp", validator=_one_of("aiohttp", "httpx"))
    workers: int = _checked(default=1, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class HealthSettings:
    probe_interval_s: float = _checked(default=5.0, validator=_positive)
    probe_timeout_s: float = _checked(default=2.0, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Backend:
    base_url: str = _checked(validator=_url)
    # Name of the environment variable that holds this backend's credential;
    # the credential itself never appears in the config file.
    api_key_env: str | None = _checked(
        default=None,
        validator=attrs.validators.optional(_matches(ENV_RE, "an environment variable name")),
    )
    connect_timeout_s: float = _checked(default=5.0, validator=_positive)
    read_timeout_s: float = _checked(default=60.0, validator=_positive)
    max_in_flight: int = _checked(default=256, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class ModelTarget:
    backend: str = _checked(validator=_matches(NAME_RE, "a backend name"))
    # The model name the backend knows; defaults to the public name.
    model: str | None = None
    weight: float = _checked(default=1.0, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Model:
    backends: tuple[ModelTarget, ...] = _checked(validator=_non_empty)

    __attrs_post_init__ = _check_fields


def _optional_positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise FieldError(attribute.name, "must be > 0")


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

    rate: int = _checked(validator=_positive)
    per: str = _checked(default="second", validator=_one_of("second", "minute", "hour"))
    burst: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Quotas:
    requests_per_day: int | None = _checked(default=None, validator=_optional_positive)
    requests_per_month: int | None = _checked(default=None, validator=_optional_positive)
    tokens_per_day: int | None = _checked(default=None, validator=_optional_positive)
    tokens_per_month: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Budget:
    """Spend limits in USD, from the `prices` table."""

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

    requests: RateLimit | None = None
    tokens: RateLimit | None = None
    quotas: Quotas = Quotas()
    budget: Budget = Budget()


@attrs.frozen
class ModelPrice:
    """USD per million tokens."""

    input: Decimal = _checked(validator=_per_million)
    output: Decimal = _checked(default=Decimal(0), validator=_per_million)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class FailurePolicy:
    """What a limit does when its shared store (Redis) cannot answer in time."""

    # fail_open: decide against a local share (limit / expected_replicas);
    # fail_closed: refuse with 503.
    rate_limits: str = _checked(default="fail_open", validator=_one_of("fail_open", "fail_closed"))
    quotas: str = _checked(default="fail_closed", validator=_one_of("fail_open", "fail_closed"))
    budgets: str = _checked(default="fail_closed", validator=_one_of("fail_open", "fail_closed"))

    __attrs_post_init__ = _check_fields


@attrs.frozen
class LimitSettings:
    # memory: this process only (the embedded default); redis: shared by replicas.
    store: str = _checked(default="memory", validator=_one_of("memory", "redis"))
    # Environment variable holding the Redis URL (it may carry a password).
    redis_url_env: str = _checked(
        default="ROUTER_REDIS_URL", validator=_matches(ENV_RE, "an environment variable name")
    )
    # Upper bound on one admission decision's wait for the store.
    timeout_ms: int = _checked(default=100, validator=_positive)
    # Replicas sharing the limits: a fail-open rate limit allows limit / this.
    expected_replicas: int = _checked(default=1, validator=_positive)
    # When max_tokens is absent or more than the budget left allows:
    # clamp it to what the budget affords, or refuse with 402.
    max_tokens_policy: str = _checked(default="clamp", validator=_one_of("clamp", "refuse"))
    # The worst case reserved for a request without max_tokens (and then sent
    # to the backend as its max_tokens), when a budget or token limit applies.
    default_max_tokens: int = _checked(default=4096, validator=_positive)
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
    segment_bytes: int = _checked(default=16 << 20, validator=_at_least(4096, "4 KiB"))
    # always: fsync before answering; interval: every fsync_interval_ms (a
    # process crash loses nothing, a power cut at most that interval); never.
    fsync: str = _checked(default="interval", validator=_one_of("always", "interval", "never"))
    fsync_interval_ms: int = _checked(default=200, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class KafkaSettings:
    # Environment variable holding the bootstrap servers (host:port,...).
    bootstrap_env: str = _checked(
        default="ROUTER_KAFKA_BOOTSTRAP", validator=_matches(ENV_RE, "an environment variable name")
    )
    usage_topic: str = _checked(
        default="usage.records.v1", validator=_matches(TOPIC_RE, "a Kafka topic name")
    )
    audit_topic: str = _checked(
        default="audit.router.v1", validator=_matches(TOPIC_RE, "a Kafka topic name")
    )
    # Off for brokers without the idempotent producer (records carry ids to dedupe by).
    enable_idempotence: bool = True
    linger_ms: int = _checked(default=20, validator=_at_least(0, "milliseconds"))
    batch_records: int = _checked(default=1000, validator=_positive)
    request_timeout_ms: int = _checked(default=10_000, validator=_positive)
    # Create the topics when missing (partitions, replication factor).
    create_topics: bool = False
    partitions: int = _checked(default=3, validator=_positive)
    replication_factor: int = _checked(default=1, validator=_positive)
    client_id: str = _checked(default="router", validator=_matches(NAME_RE, "a client id"))

    __attrs_post_init__ = _check_fields


@attrs.frozen
class UsageSettings:
    # Where the ledger (usage.sqlite3), the spool (spool/) and the embedded
    # idempotency store live; relative paths are from the working directory.
    dir: str = "router-data"
    # The embedded SQLite ledger `router usage report` reads.
    ledger: bool = True
    spool: SpoolSettings = SpoolSettings()
    # Export to Kafka when set.
    kafka: KafkaSettings | None = None


@attrs.frozen
class IdempotencySettings:
    # sqlite: this replica only (under usage.dir); redis: shared by replicas.
    store: str = _checked(default="sqlite", validator=_one_of("sqlite", "redis"))
    redis_url_env: str = _checked(
        default="ROUTER_REDIS_URL", validator=_matches(ENV_RE, "an environment variable name")
    )
    # How long a completed request's answer is kept for retries.
    retention_s: int = _checked(default=DAY_S, validator=_at_least(DAY_S, "keys are kept 24 h"))
    # A claim whose replica died lapses after this; a retry may then proceed.
    in_flight_timeout_s: int = _checked(default=300, validator=_positive)
    # Larger answers are not stored; their key is released after the answer.
    max_body_bytes: int = _checked(default=1 << 20, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class ApiKey:
    id: str = _checked(validator=_matches(KEY_ID_RE, "4 to 32 letters or digits"))
    hash: str = _checked(
        validator=_matches(KEY_HASH_RE, "'sha256:' followed by 64 lowercase hex digits"),
        repr=False,
    )
    revoked: bool = False
    limits: Limits = Limits()

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Organization:
    keys: tuple[ApiKey, ...] = ()
    # Public model names this organization may use; "*" means all.
    models: tuple[str, ...] = ("*",)
    limits: Limits = Limits()
    # Limits of this organization on one model (public name).
    model_limits: Mapping[str, Limits] = attrs.field(factory=dict)

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


@attrs.frozen
class RouterConfig:
    backends: Mapping[str, Backend] = _checked(validator=_non_empty)
    models: Mapping[str, Model] = _checked(validator=_non_empty)
    organizations: Mapping[str, Organization] = attrs.field(factory=dict)
    listeners: Listeners = Listeners()
    server: ServerSettings = ServerSettings()
    health: HealthSettings = HealthSettings()
    limits: LimitSettings = LimitSettings()
    # USD per million tokens, by public model name; needed where a budget applies.
    prices: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    usage: UsageSettings = UsageSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    version: int = 1

    __attrs_post_init__ = _check_fields
