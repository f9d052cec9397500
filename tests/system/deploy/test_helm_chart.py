"""The Helm chart, rendered by Helm's own engine (helm-python-sdk binds the
Helm Go SDK: no helm binary needed) for its default, staging and production
values, and every manifest validated against the Kubernetes API's schemas
(kubernetes-validate bundles them: offline). The ServiceMonitor is a
Prometheus Operator CRD, outside those schemas: its fields are checked here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from router_core.config_codec import structure
from router_server import environment

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "router"
VALUES = ["values.yaml", "values-staging.yaml", "values-production.yaml"]
KUBERNETES = "1.31.0"  # the oldest version the chart is checked against


def render(values_file: str) -> dict[str, dict[str, Any]]:
    """`kind/name` -> manifest."""
    values = yaml.safe_load((CHART / values_file).read_text())
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="router", namespace="router")
    out = {}
    for text in rendered.values():
        for doc in yaml.safe_load_all(text):
            if doc:
                out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def test_helm_lints_the_chart_without_errors() -> None:
    result = helm.lint(str(CHART))
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("values_file", VALUES)
def test_every_manifest_is_valid_for_the_kubernetes_api(values_file: str) -> None:
    manifests = render(values_file)
    kinds = {key.split("/")[0] for key in manifests}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for manifest in manifests.values():
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: below
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_a_wrong_manifest_is_caught_by_the_validation() -> None:
    # The check above can fail: a field Kubernetes does not know is refused.
    deployment = render("values.yaml")["Deployment/router"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


@pytest.mark.parametrize("values_file", VALUES)
def test_the_pieces_fit_the_router(values_file: str) -> None:
    manifests = render(values_file)
    deployment = manifests["Deployment/router"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env[environment.CONFIG] == "/etc/router/router.yaml"
    assert env[environment.DATA_DIR] == "/var/lib/router"
    port = int(env[environment.PORT])
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/status/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v1/status/healthz"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # The config is a directory mount: kubelet swaps the file in it when the
    # ConfigMap changes, and the router's watch reloads it (a subPath mount
    # would never change).
    assert "subPath" not in mounts["config"]
    assert mounts["config"]["mountPath"] == "/etc/router"
    assert mounts["data"]["mountPath"] == env[environment.DATA_DIR]
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    # The ConfigMap holds a config the router accepts.
    configmap = manifests["ConfigMap/router"]
    config = structure(yaml.safe_load(configmap["data"]["router.yaml"]))
    assert config.server.config_watch_s > 0
    assert config.state.store == "redis"  # replicas share their limits
    admin = config.listeners.admin
    if admin is not None:
        tls = mounts["admin-tls"]["mountPath"]
        assert {admin.cert_file, admin.key_file, admin.ca_file} == {
            f"{tls}/tls.crt", f"{tls}/tls.key", f"{tls}/ca.crt",
        }  # fmt: skip
        assert admin.port in [p["containerPort"] for p in container["ports"]]
    # Credentials come from Secrets, never from the values.
    assert [ref["secretRef"]["name"] for ref in container["envFrom"]] == ["router-credentials"]
    for backend in config.backends.values():
        assert backend.api_key_env is None or backend.api_key_env not in env
    # Service, PDB, HPA and ServiceMonitor point at these pods and ports.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifests["Service/router"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["port"] == port
    pdb = manifests["PodDisruptionBudget/router"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = manifests["HorizontalPodAutoscaler/router"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # with the PDB, a drain keeps one serving
    monitor = manifests["ServiceMonitor/router"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    token = endpoint["authorization"]["credentials"]
    assert token["key"] == config.observability.ops_token_env
