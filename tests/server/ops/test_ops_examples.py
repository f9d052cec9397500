"""examples/: the Grafana dashboard and the Prometheus alert rules are valid, and
every metric they name is one the router serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ALERTS = EXAMPLES / "prometheus-alerts.yaml"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
# Names in PromQL that are ours: everything starting with router_.
_METRIC = re.compile(r"\brouter_[a-z0-9_]+")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def served_names(client: TestClient) -> set[str]:
    """Every sample name /metrics can serve (families without samples included)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(client.get("/metrics").text):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alert_rules_are_well_formed_and_cover_the_issue() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert {"groups"} == set(document)
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert rule["alert"]
            assert rule["expr"].strip()
            assert rule["labels"]["severity"] in {"page", "ticket", "info"}
            assert rule["annotations"]["summary"]
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for needed in ("router_request_duration_seconds_bucket", "router_requests_total",
                   "router_usage_export_lag_seconds", 'limit_type="budget"'):  # fmt: skip
        assert needed in exprs


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (CI installs Debian's prometheus package)")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_every_metric_in_the_examples_is_served(client: TestClient) -> None:
    served = served_names(client)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [rule["expr"] for rule in alert_rules()]
    named = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert named, "no metric found"
    assert named <= served, sorted(named - served)


def test_the_dashboard_is_grafana_shaped() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"type", "title", "gridPos", "targets", "datasource"} <= set(panel)
        assert all(t["expr"] and t["refId"] for t in panel["targets"])
