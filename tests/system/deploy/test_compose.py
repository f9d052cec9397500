"""The compose stack's files fit together: every file it mounts exists, the
router's config validates with the stack's variables, Prometheus scrapes the
router's listener and loads the alerts, and the image's defaults are the
variables the router reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from router_server import config_file, environment

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (DEPLOY / source).resolve()
    return out


def test_every_mounted_file_exists_but_the_secret_the_operator_makes() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            if source.name == "ops-token":
                continue  # made by the operator (docs/deployment.md)
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"


def test_the_router_config_validates_with_the_stacks_variables() -> None:
    router = _compose()["services"]["router"]
    env = {key: str(value) for key, value in router["environment"].items()}
    mounts = _mounts(router)
    config_path = mounts[env[environment.CONFIG]]
    config = config_file.load(config_path, env, check_env=True)
    assert config.state.store == "redis"
    assert config.usage.kafka is not None
    assert config.state.dir == env[environment.DATA_DIR]
    # Its backends are the stack's mock services, on the ports they listen on.
    services = _compose()["services"]
    for backend in config.backends.values():
        host, port = re.match(r"http://([\w-]+):(\d+)/v1", backend.base_url).groups()  # type: ignore[union-attr]
        assert port in services[host]["entrypoint"]


def test_prometheus_scrapes_the_router_and_loads_the_example_alerts() -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounts = _mounts(prometheus)
    settings = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    rule_file = settings["rule_files"][0]
    assert mounts[rule_file] == (ROOT / "examples" / "prometheus-alerts.yaml").resolve()
    targets = settings["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["router:8080"]
    assert _compose()["services"]["router"]["ports"] == ["8080:8080"]


def test_the_images_defaults_are_the_variables_the_router_reads() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for name, value in [
        (environment.CONFIG, "/etc/router/router.yaml"),
        (environment.HOST, "0.0.0.0"),
        (environment.PORT, "8080"),
        (environment.DATA_DIR, "/var/lib/router"),
    ]:
        assert re.search(rf"\b{name}={re.escape(value)}\b", dockerfile), name
    assert "USER 10001:10001" in dockerfile
    assert "/v1/status/healthz" in dockerfile
