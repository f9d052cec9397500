"""Runtime knobs and counters of one mock backend process.

Everything here is touched only from the event loop thread, so plain ints and
dicts are enough; no locks.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from .payloads import LINE_ENDINGS

DEFAULT_MODELS = ("mock-gpt", "mock-embed")
METRICS_MODES = ("live", "fixed", "hang", "garbage")


class ConfigError(ValueError):
    """A runtime config update was rejected; nothing was applied."""


@dataclass(slots=True)
class MockConfig:
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    hang: bool = False
    truncate_after: int | None = None
    # SSE line endings ("lf", "crlf" or "cr": the spec allows all three), and
    # whether each event goes out as two chunks, the second its last N bytes
    # (N=1 with "crlf" puts the CR and the LF of its final line end apart).
    line_ending: str = "lf"
    split_tail_bytes: int | None = None
    # Answers and streams carry no `usage`, as some OpenAI-compatible servers do.
    omit_usage: bool = False
    seed: int = 0
    api_key: str | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    # Injected errors carry `retry-after: N` (and `retry-after-ms`), as a
    # provider's rate-limit answer does.
    retry_after_s: float | None = None
    # The PEM public key of the service account whose assertions /token takes
    # (Vertex AI); set, Vertex paths want a token the mock issued.
    google_public_key: str | None = None
    # GET /metrics (vLLM's names): "live" reports the requests being answered
    # as running (past metrics_max_running, the rest as waiting); "fixed"
    # reports metrics_running / metrics_waiting; "hang" never answers;
    # "garbage" answers a page that is no metrics at all.
    metrics: str = "live"
    metrics_max_running: int | None = None
    metrics_running: int = 0
    metrics_waiting: int = 0
    metrics_cache_usage: float = 0.0
    # Comment lines of this many bytes in all before the samples (a large page).
    metrics_pad_bytes: int = 0

    def public(self) -> dict[str, Any]:
        # The key itself stays out of the control API: tests only need to know it is on.
        return {
            "latency_ms": self.latency_ms,
            "chunk_delay_ms": self.chunk_delay_ms,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "hang": self.hang,
            "truncate_after": self.truncate_after,
            "line_ending": self.line_ending,
            "split_tail_bytes": self.split_tail_bytes,
            "omit_usage": self.omit_usage,
            "seed": self.seed,
            "api_key_required": self.api_key is not None,
            "models": list(self.models),
            "retry_after_s": self.retry_after_s,
            "google_public_key_set": self.google_public_key is not None,
            "metrics": self.metrics,
            "metrics_max_running": self.metrics_max_running,
            "metrics_running": self.metrics_running,
            "metrics_waiting": self.metrics_waiting,
            "metrics_cache_usage": self.metrics_cache_usage,
            "metrics_pad_bytes": self.metrics_pad_bytes,
        }


def _number(key: str, value: object, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number")
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{key} must be in [{low}, {high if high is not None else 'inf'}]")
    return float(value)


def _integer(key: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer")
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{key} must be in [{low}, {high if high is not None else 'inf'}]")
    return value


def updated_config(config: MockConfig, update: object) -> MockConfig:
    """Return `config` with `update` applied; null resets a knob to "off"."""
    if not isinstance(update, dict):
        raise ConfigError("config update must be a JSON object")
    fresh = MockConfig()
    changes: dict[str, Any] = {}
    for key, value in update.items():
        if value is None:
            if key not in _KNOBS:
                raise ConfigError(f"unknown config key {key!r}")
            changes[key] = getattr(fresh, key)
        elif key in ("latency_ms", "chunk_delay_ms", "retry_after_s"):
            changes[key] = _number(key, value, 0.0)
        elif key in ("error_rate", "metrics_cache_usage"):
            changes[key] = _number(key, value, 0.0, 1.0)
        elif key in ("metrics_running", "metrics_waiting", "metrics_pad_bytes"):
            changes[key] = _integer(key, value, 0)
        elif key == "metrics":
            if value not in METRICS_MODES:
                raise ConfigError(f"metrics must be one of {', '.join(METRICS_MODES)}")
            changes[key] = value
        elif key == "error_status":
            changes[key] = _integer(key, value, 400, 599)
        elif key in ("hang", "omit_usage"):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be a boolean")
            changes[key] = value
        elif key in ("truncate_after", "seed"):
            changes[key] = _integer(key, value, 0)
        elif key in ("split_tail_bytes", "metrics_max_running"):
            changes[key] = _integer(key, value, 1)
        elif key == "line_ending":
            if value not in LINE_ENDINGS:
                raise ConfigError(f"line_ending must be one of {', '.join(LINE_ENDINGS)}")
            changes[key] = value
        elif key == "google_public_key":
            if not isinstance(value, str) or "PUBLIC KEY" not in value:
                raise ConfigError("google_public_key must be a PEM public key")
            changes[key] = value
        elif key == "api_key":
            if not isinstance(value, str) or not value:
                raise ConfigError("api_key must be a non-empty string")
            changes[key] = value
        elif key == "models":
            if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
                raise ConfigError("models must be a list of non-empty strings")
            changes[key] = tuple(value)
        else:
            raise ConfigError(f"unknown config key {key!r}")
    merged = {k: getattr(config, k) for k in _KNOBS}
    merged.update(changes)
    return MockConfig(**merged)


_KNOBS = tuple(MockConfig.__dataclass_fields__)


@dataclass(slots=True)
class MockStats:
    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    models_seen: dict[str, int] = field(default_factory=dict)
    with_authorization: int = 0
    with_traceparent: int = 0
    last_traceparent: str | None = None
    streams: int = 0
    injected_errors: int = 0
    # Requests of the router's own probes (active and trial), among `requests`.
    probes: int = 0
    # Reads of GET /metrics (not among `requests`).
    metrics_reads: int = 0
    # The anthropic-version header of the last request that sent one.
    last_anthropic_version: str | None = None
    # Responses requests that named a previous_response_id (the mock keeps no state).
    previous_response_ids: int = 0
    # Azure OpenAI requests: by deployment, the last api-version, and how the
    # last one authenticated ("api-key" or "bearer").
    deployments_seen: dict[str, int] = field(default_factory=dict)
    last_api_version: str | None = None
    last_azure_auth: str | None = None
    # Bedrock calls refused for a missing or wrong SigV4 signature.
    refused_signatures: int = 0
    # Access tokens the /token endpoint issued, and calls refused for lacking one.
    tokens_issued: int = 0
    refused_tokens: int = 0


@dataclass(slots=True)
class MockState:
    """Shared by every connection of one server."""

    config: MockConfig
    stats: MockStats = field(default_factory=MockStats)
    rng: random.Random = field(default_factory=random.Random)
    # Live gauges, not reset by /_mock/reset: they describe the present, not history.
    in_flight: int = 0
    connections: set[asyncio.Transport] = field(default_factory=set)
    # Access tokens the mock issued (Vertex AI); kept across /_mock/reset.
    tokens: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng.seed(self.config.seed)

    def set_config(self, config: MockConfig, *, reseed: bool) -> None:
        self.config = config
        if reseed:
            self.rng.seed(config.seed)

    def should_fail(self) -> bool:
        rate = self.config.error_rate
        if rate <= 0.0:
            return False
        # Draw even at rate 1.0 so the sequence for a seed does not depend on the rate.
        return self.rng.random() < rate

    def metrics_page(self) -> bytes:
        """GET /metrics as a vLLM server writes it (the `metrics` knob says what)."""
        config = self.config
        if config.metrics == "garbage":
            return b"<html><body>502 Bad Gateway</body></html>\n"
        running, waiting = config.metrics_running, config.metrics_waiting
        if config.metrics == "live":
            cap = config.metrics_max_running
            running = self.in_flight if cap is None else min(self.in_flight, cap)
            waiting = self.in_flight - running
        pad = b""
        if config.metrics_pad_bytes:
            line = b"# " + b"x" * 77 + b"\n"
            pad = line * (config.metrics_pad_bytes // len(line) + 1)
        labels = b'{model_name="mock-gpt"}'
        return pad + b"".join(
            b"# TYPE %b gauge\n%b%b %b\n" % (name, name, labels, repr(float(value)).encode())
            for name, value in (
                (b"vllm:num_requests_running", running),
                (b"vllm:num_requests_waiting", waiting),
                (b"vllm:kv_cache_usage_perc", config.metrics_cache_usage),
            )
        )

    def stats_body(self) -> dict[str, Any]:
        s = self.stats
        return {
            "requests": s.requests,
            "by_path": s.by_path,
            "models_seen": s.models_seen,
            "with_authorization": s.with_authorization,
            "with_traceparent": s.with_traceparent,
            "last_traceparent": s.last_traceparent,
            "streams": s.streams,
            "injected_errors": s.injected_errors,
            "probes": s.probes,
            "metrics_reads": s.metrics_reads,
            "last_anthropic_version": s.last_anthropic_version,
            "previous_response_ids": s.previous_response_ids,
            "deployments_seen": s.deployments_seen,
            "last_api_version": s.last_api_version,
            "last_azure_auth": s.last_azure_auth,
            "refused_signatures": s.refused_signatures,
            "tokens_issued": s.tokens_issued,
            "refused_tokens": s.refused_tokens,
            "in_flight": self.in_flight,
            "open_connections": len(self.connections),
        }
