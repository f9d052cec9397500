"""Config for routing, health, backpressure, overrides and the admin listener:
each mistake is reported with its path, all at once."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from router_core.config import RouteRule
from router_core.config_codec import ConfigInvalid, structure, unstructure

HASH = "sha256:" + "b" * 64


def config() -> dict[str, Any]:
    return {
        "backends": {"a": {"base_url": "http://a/v1"}, "b": {"base_url": "http://b/v1"}},
        "models": {
            "gpt": {
                "backends": [{"backend": "a"}, {"backend": "b", "tier": 1}],
                "strategy": "least_latency",
                "hedge_after_ms": 300,
                "routes": [
                    {"organizations": ["acme"], "backends": [{"backend": "b", "model": "gpt-b"}]},
                    {"keys": ["glx1"], "backends": [{"backend": "a"}]},
                ],
            }
        },
        "organizations": {
            "acme": {"keys": [{"id": "acme1", "hash": HASH}]},
            "globex": {"keys": [{"id": "glx1", "hash": HASH}]},
        },
        "listeners": {
            "public": {"port": 8080},
            "admin": {"cert_file": "c.pem", "key_file": "k.pem", "ca_file": "ca.pem"},
        },
        "server": {"max_in_flight": 10, "max_queued": 0, "queue_timeout_ms": 0},
        "health": {
            "open_s": 2.5,
            "failure_threshold": 1,
            "ramp_s": 0,
            "failure_rate": 0.25,
            "window_s": 30,
            "min_requests": 50,
        },
        "routing": {"max_attempts": 1, "retry_budget_ratio": 0, "retry_min_per_s": 0},
        "state": {"store": "redis", "refresh_s": 0.5, "redis": {"mode": "cluster"}},
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        structure(data)
    return sorted(str(p) for p in info.value.problems)


def test_every_new_field_loads() -> None:
    loaded = structure(config())
    gpt = loaded.models["gpt"]
    assert gpt.strategy == "least_latency"
    assert gpt.hedge_after_ms == 300
    assert gpt.backends[1].tier == 1
    assert gpt.routes[0] == RouteRule(
        backends=(gpt.routes[0].backends[0],), organizations=("acme",)
    )
    assert gpt.routes[0].backends[0].model == "gpt-b"
    assert gpt.routes[1].keys == ("glx1",)
    assert loaded.listeners.admin is not None
    assert loaded.listeners.admin.port == 8443
    assert loaded.server.max_queued == 0
    assert loaded.health.ramp_s == 0
    assert (loaded.health.failure_rate, loaded.health.window_s) == (0.25, 30)
    assert loaded.health.min_requests == 50
    assert loaded.routing.max_attempts == 1
    assert loaded.state.store == "redis"
    assert loaded.state.redis.mode == "cluster"


def test_the_defaults() -> None:
    data = config()
    for section in ("listeners", "server", "health", "routing", "state"):
        del data[section]
    loaded = structure(data)
    assert loaded.listeners.admin is None
    assert loaded.health.failure_threshold == 3
    assert loaded.health.failure_rate == 0.5
    assert loaded.health.window_s == 10
    assert loaded.health.min_requests == 20
    assert loaded.routing.max_attempts == 3
    assert loaded.state.store == "embedded"
    assert loaded.state.redis.mode == "standalone"
    assert loaded.state.dir == "router-data"
    assert loaded.models["gpt"].hedge_after_ms == 300
    assert (
        structure({"backends": data["backends"], "models": {"m": {"backends": [{"backend": "a"}]}}})
        .models["m"]
        .hedge_after_ms
        is None
    )


def test_it_survives_a_round_trip() -> None:
    loaded = structure(config())
    assert structure(unstructure(loaded)) == loaded


def test_route_references_are_checked() -> None:
    data = config()
    data["models"]["gpt"]["routes"] = [
        {"organizations": ["acme", "nobody"], "backends": [{"backend": "zzz"}]},
        {"keys": ["nokey1", "acme1"], "backends": [{"backend": "a"}]},
        {"backends": [{"backend": "a"}]},
    ]
    assert problems_of(data) == [
        "models.gpt.routes[0].backends[0].backend: unknown backend 'zzz'; defined: a, b",
        "models.gpt.routes[0].organizations: unknown organization 'nobody'",
        "models.gpt.routes[1].keys: unknown key id 'nokey1'",
        "models.gpt.routes[2]: a route needs organizations or keys to match",
    ]


def test_a_route_needs_backends() -> None:
    data = config()
    data["models"]["gpt"]["routes"] = [{"organizations": ["acme"], "backends": []}]
    assert problems_of(data) == ["models.gpt.routes[0].backends: must not be empty"]


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("models", "gpt", "backends", 0, "tier"), -1, "models.gpt.backends[0].tier: must be >= 0"),
        (
            ("models", "gpt", "routes", 0, "backends", 0, "tier"),
            -2,
            "models.gpt.routes[0].backends[0].tier: must be >= 0",
        ),
        (
            ("models", "gpt", "backends", 0, "tier"),
            0.5,
            "models.gpt.backends[0].tier: must be an integer, not float",
        ),
        (("models", "gpt", "hedge_after_ms"), 0, "models.gpt.hedge_after_ms: must be > 0"),
        (("models", "gpt", "hedge_after_ms"), -10, "models.gpt.hedge_after_ms: must be > 0"),
        (
            ("models", "gpt", "strategy"),
            "fastest",
            "models.gpt.strategy: "
            "must be one of weighted, least_latency, least_load, not 'fastest'",
        ),
        (
            ("models", "gpt", "affinity"),
            {"load_factor": 1},
            "models.gpt.affinity.load_factor: must be > 1",
        ),
        (
            ("models", "gpt", "affinity"),
            {"block_chars": 0},
            "models.gpt.affinity.block_chars: must be > 0",
        ),
        (
            ("models", "gpt", "affinity"),
            {"session_header": "x session"},
            "models.gpt.affinity.session_header: must be an HTTP header name (or empty: none)",
        ),
        (
            ("backends", "a", "max_outstanding_tokens"),
            0,
            "backends.a.max_outstanding_tokens: must be > 0",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "triton"},
            "backends.a.load_metrics.format: must be one of vllm, sglang, tgi, not 'triton'",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "vllm", "url": "a:9000/metrics"},
            "backends.a.load_metrics.url: must be an http:// or https:// URL",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "vllm", "interval_s": 0},
            "backends.a.load_metrics.interval_s: must be > 0",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "vllm", "max_bytes": -1},
            "backends.a.load_metrics.max_bytes: must be > 0",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "sglang", "timeout_s": 0},
            "backends.a.load_metrics.timeout_s: must be > 0",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "tgi", "stale_after_s": 1, "interval_s": 1},
            "backends.a.load_metrics.stale_after_s: must be more than interval_s (1): every "
            "reading would go stale before the next",
        ),
        (
            ("backends", "a", "load_metrics"),
            {"format": "tgi", "timeout_s": 3},
            "backends.a.load_metrics.timeout_s: must be at most interval_s (1)",
        ),
        (
            ("backends", "a"),
            {
                "base_url": "https://api.anthropic.com/v1",
                "kind": "anthropic",
                "load_metrics": {"format": "vllm"},
            },
            "backends.a.load_metrics: only for kind: openai (a self-hosted vLLM, SGLang or "
            "TGI server), not kind: anthropic",
        ),
        (("routing", "max_attempts"), 0, "routing.max_attempts: must be > 0"),
        (("routing", "retry_budget_ratio"), -0.1, "routing.retry_budget_ratio: must be >= 0"),
        (("routing", "retry_min_per_s"), -1, "routing.retry_min_per_s: must be >= 0"),
        (("server", "max_queued"), -1, "server.max_queued: must be >= 0"),
        (("server", "max_in_flight"), 0, "server.max_in_flight: must be > 0"),
        (("server", "queue_timeout_ms"), -1, "server.queue_timeout_ms: must be >= 0"),
        (("health", "open_s"), 0, "health.open_s: must be > 0"),
        (("health", "failure_threshold"), 0, "health.failure_threshold: must be > 0"),
        (("health", "failure_rate"), 0, "health.failure_rate: must be > 0 and <= 1"),
        (("health", "failure_rate"), 1.5, "health.failure_rate: must be > 0 and <= 1"),
        (("health", "failure_rate"), -0.5, "health.failure_rate: must be > 0 and <= 1"),
        (("health", "failure_rate"), float("nan"), "health.failure_rate: must be > 0 and <= 1"),
        (("health", "window_s"), 0, "health.window_s: must be > 0"),
        (("health", "window_s"), float("inf"), "health.window_s: must be > 0"),
        (("health", "min_requests"), 0, "health.min_requests: must be > 0"),
        (("health", "ramp_s"), -1, "health.ramp_s: must be >= 0"),
        (
            ("state", "store"),
            "postgres",
            "state.store: must be one of embedded, redis, not 'postgres'",
        ),
        (("state", "refresh_s"), 0, "state.refresh_s: must be > 0"),
        (("state", "dir"), " ", "state.dir: must be a file path"),
        (
            ("state", "redis", "url_env"),
            "1BAD",
            "state.redis.url_env: must be an environment variable name",
        ),
        (
            ("state", "redis", "mode"),
            "ring",
            "state.redis.mode: must be one of standalone, sentinel, cluster, not 'ring'",
        ),
        (("state", "redis", "timeout_ms"), 0, "state.redis.timeout_ms: must be > 0"),
        (("state", "redis", "max_connections"), -1, "state.redis.max_connections: must be > 0"),
        (
            ("state", "redis", "sentinel_master"),
            "",
            "state.redis.sentinel_master: must be a Sentinel master name",
        ),
        (("listeners", "admin", "cert_file"), "", "listeners.admin.cert_file: must be a file path"),
        (
            ("listeners", "admin", "port"),
            70000,
            "listeners.admin.port: must be a TCP port between 0 and 65535",
        ),
    ],
)
def test_one_bad_value_one_problem_at_its_path(
    path: tuple[str | int, ...], value: object, problem: str
) -> None:
    data = config()
    parent: Any = data
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    assert problems_of(data) == [problem]


def test_an_admin_listener_needs_all_three_certificate_files() -> None:
    data = config()
    data["listeners"]["admin"] = {"port": 9443}
    assert problems_of(data) == [
        "listeners.admin.ca_file: required field is missing",
        "listeners.admin.cert_file: required field is missing",
        "listeners.admin.key_file: required field is missing",
    ]


def test_unknown_fields_in_the_new_sections_are_named() -> None:
    data = config()
    data["health"]["open_seconds"] = 3
    data["routing"]["retries"] = 2
    data["models"]["gpt"]["routes"][0]["org"] = "acme"
    assert problems_of(data) == [
        "health.open_seconds: unknown field",
        "models.gpt.routes[0].org: unknown field",
        "routing.retries: unknown field",
    ]


def test_many_mistakes_are_reported_together() -> None:
    data = copy.deepcopy(config())
    data["health"]["open_s"] = 0
    data["health"]["failure_rate"] = 2
    data["routing"]["max_attempts"] = 0
    data["server"]["max_queued"] = -3
    data["models"]["gpt"]["backends"][1]["tier"] = -1
    data["models"]["gpt"]["routes"][1]["backends"][0]["weight"] = 0
    data["state"]["store"] = "x"
    assert problems_of(data) == [
        "health.failure_rate: must be > 0 and <= 1",
        "health.open_s: must be > 0",
        "models.gpt.backends[1].tier: must be >= 0",
        "models.gpt.routes[1].backends[0].weight: must be > 0",
        "routing.max_attempts: must be > 0",
        "server.max_queued: must be >= 0",
        "state.store: must be one of embedded, redis, not 'x'",
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (("limits", "store"), "state.store"),
        (("limits", "redis_url_env"), "state.redis.url_env"),
        (("idempotency", "store"), "state.store"),
        (("idempotency", "redis_url_env"), "state.redis.url_env"),
        (("auth", "store"), "state.store"),
        (("auth", "sqlite_path"), "state.dir"),
        (("auth", "redis_url_env"), "state.redis.url_env"),
        (("auth", "refresh_s"), "state.refresh_s"),
        (("usage", "dir"), "state.dir"),
        (("overrides",), "state"),
    ],
)
def test_a_setting_of_the_old_store_sections_names_its_new_place(
    old: tuple[str, ...], new: str
) -> None:
    data = config()
    del data["state"]
    parent: Any = data
    for step in old[:-1]:
        parent = parent.setdefault(step, {})
    parent[old[-1]] = {"store": "redis"} if old == ("overrides",) else "redis"
    [problem] = problems_of(data)
    assert problem.startswith(f"{'.'.join(old)}: moved to {new}: one `state` section")


def test_half_open_max_is_refused_with_what_replaced_it() -> None:
    """Half-open circuits take no client requests any more: the setting that
    bounded those trials is gone, and a file that still sets it is told why."""
    data = config()
    data["health"]["half_open_max"] = 1
    [problem] = problems_of(data)
    assert problem.startswith("health.half_open_max: removed: a half-open circuit takes no client")
    assert "trial probe" in problem


def test_a_models_own_fields_are_checked_in_the_same_pass_as_its_targets() -> None:
    """A model whose target failed is not built; its own checks still run on
    the rest of it, so a second mistake does not wait for the next edit."""
    data = config()
    data["models"]["gpt"]["backends"][1]["tier"] = -1
    data["models"]["gpt"]["hedge_after_ms"] = 0
    assert problems_of(data) == [
        "models.gpt.backends[1].tier: must be >= 0",
        "models.gpt.hedge_after_ms: must be > 0",
    ]


def test_reference_problems_come_with_the_field_problems() -> None:
    data = config()
    data["models"]["gpt"]["routes"][0]["organizations"] = ["nobody"]
    data["health"]["open_s"] = 0
    assert problems_of(data) == [
        "health.open_s: must be > 0",
        "models.gpt.routes[0].organizations: unknown organization 'nobody'",
    ]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (("health", "open_s"), "health.open_s: must be > 0"),
        (("models", "gpt", "backends", 0, "weight"), "models.gpt.backends[0].weight: must be > 0"),
        (("routing", "retry_budget_ratio"), "routing.retry_budget_ratio: must be >= 0"),
    ],
)
def test_not_a_number_is_not_a_valid_number(path: tuple[str | int, ...], problem: str) -> None:
    """YAML's `.nan` is a float; a NaN open_s would keep a circuit open forever,
    a NaN weight would scramble the weighted order."""
    data = config()
    parent: Any = data
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = float("nan")
    assert problems_of(data) == [problem]


def test_admission_defaults_never_shed_a_healthy_loop_and_keep_the_adaptive_limit_off() -> None:
    admission = structure(config()).server.admission
    assert admission.max_loop_lag_ms == 100
    assert admission.lag_probe_interval_ms == 50
    assert admission.min_in_flight == 16
    assert admission.adaptive is False
    assert admission.max_busy_percent is None
    loaded = structure(config())
    assert loaded.organizations["acme"].priority == "normal"
    assert loaded.organizations["acme"].keys[0].priority is None


def test_admission_and_priorities_load() -> None:
    data = config()
    data["server"] = {
        "max_in_flight": 64,
        "admission": {
            "max_loop_lag_ms": None,
            "adaptive": True,
            "min_limit": 64,
            "tolerance": 1.5,
            "max_busy_percent": 80,
        },
    }
    data["organizations"]["acme"]["priority"] = "high"
    data["organizations"]["globex"]["keys"][0]["priority"] = "low"
    loaded = structure(data)
    assert loaded.server.admission.max_loop_lag_ms is None
    assert loaded.server.admission.min_limit == 64
    assert loaded.server.admission.max_busy_percent == 80
    assert loaded.organizations["acme"].priority == "high"
    assert loaded.organizations["globex"].keys[0].priority == "low"
    assert structure(unstructure(loaded)) == loaded


def test_bad_admission_values_are_all_refused_with_their_paths() -> None:
    data = config()
    data["server"]["admission"] = {
        "max_loop_lag_ms": 0, "lag_probe_interval_ms": 2, "min_limit": 0,
        "tolerance": 0.5, "window_ms": 100_000, "adaptive": "sometimes", "min_in_flight": -1,
        "max_busy_percent": 101,
    }  # fmt: skip
    data["server"]["keep_alive_timeout_s"] = 0
    data["organizations"]["acme"]["priority"] = "urgent"
    data["organizations"]["acme"]["keys"][0]["priority"] = 3
    assert problems_of(data) == [
        "organizations.acme.keys[0].priority: must be one of high, normal, low, not 3",
        "organizations.acme.priority: must be one of high, normal, low, not 'urgent'",
        "server.admission.adaptive: must be true or false, not str",
        "server.admission.lag_probe_interval_ms: must be between 5 and 1,000 ms",
        "server.admission.max_busy_percent: must be between 10 and 100 %",
        "server.admission.max_loop_lag_ms: must be between 1 and 60,000 ms",
        "server.admission.min_in_flight: must be between 0 and 1,000,000",
        "server.admission.min_limit: must be between 1 and 1,000,000",
        "server.admission.tolerance: must be between 1 and 10",
        "server.admission.window_ms: must be between 10 and 60,000 ms",
        "server.keep_alive_timeout_s: must be between 1 and 3,600 s",
    ]


def test_the_adaptive_floor_may_not_exceed_the_hard_cap() -> None:
    data = config()
    data["server"] = {"max_in_flight": 8, "admission": {"adaptive": True, "min_limit": 16}}
    assert problems_of(data) == [
        "server.admission.min_limit: must be <= server.max_in_flight (8), the hard cap"
    ]
    data["server"]["admission"]["adaptive"] = False  # the floor is unused: no problem
    assert structure(data).server.admission.min_limit == 16


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (699, "must be between 700 and 10,000,000"),
        (10_000_001, "must be between 700 and 10,000,000"),
        (-1, "must be between 700 and 10,000,000"),
        ("lots", "must be an integer, not str"),
        (True, "must be an integer, not bool"),
    ],
)
def test_the_young_gc_threshold_is_refused_out_of_range(value: object, problem: str) -> None:
    data = config()
    data["server"]["gc_young_threshold"] = value
    assert problems_of(data) == [f"server.gc_young_threshold: {problem}"]


def test_the_young_gc_threshold_defaults_to_200_000() -> None:
    assert structure(config()).server.gc_young_threshold == 200_000
    data = config()
    data["server"]["gc_young_threshold"] = 700
    assert structure(data).server.gc_young_threshold == 700
