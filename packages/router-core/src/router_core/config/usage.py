"""Usage records (spool, ledger, Kafka) and idempotent retries."""

from __future__ import annotations

import attrs

from router_core.config.fields import (
    ENV_RE,
    NAME_RE,
    TOPIC_RE,
    _at_least,
    _between,
    _check_fields,
    _checked,
    _fraction,
    _matches,
    _one_of,
    _positive,
)
from router_core.config_enums import (
    Fsync,
)

DAY_S = 86_400


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
class ResponsesSettings:
    """OpenAI Responses' stored conversations (where: `state`)."""

    # How long a stored response can be read and continued (30 days, as OpenAI).
    retention_s: int = _checked(default=30 * DAY_S, validator=_between(60, 365 * DAY_S, "s"))
    # A conversation larger than this (as JSON) is answered but not stored.
    max_bytes: int = _checked(default=4 << 20, validator=_between(1 << 10, 64 << 20, "bytes"))

    __attrs_post_init__ = _check_fields
