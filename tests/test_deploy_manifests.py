"""Deployment files, validated offline: Kubernetes manifests (rendered by kubectl's kustomize, checked against
the Kubernetes schemas bundled in the kubernetes-validate package), compose.yaml and the Dockerfile."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"
SETTINGS_ENV = {f"RESNET_SERVE_{name.upper()}" for name in Settings.model_fields}


def render(path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render deploy/k8s"
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu", "overlays/inflight-autoscaling"])
def test_manifests_validate_against_kubernetes_schemas(overlay):
    docs = render(K8S / overlay)
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema error or unknown field


def test_schema_validation_can_fail():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_deployment_probes_drain_and_settings():
    docs = by_kind(render(K8S / "base"))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    settings = docs["ConfigMap"]["data"]
    assert set(settings) <= SETTINGS_ENV, set(settings) - SETTINGS_ENV
    drain = float(settings["RESNET_SERVE_DRAIN_TIMEOUT_S"])
    pre_stop = 5
    assert "sleep(5)" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert pod["terminationGracePeriodSeconds"] > drain + pre_stop
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]


def test_gpu_overlay():
    deployment = by_kind(render(K8S / "overlays" / "gpu"))["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "resnet-serve:gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= SETTINGS_ENV and env["RESNET_SERVE_PROVIDERS"].startswith("TensorrtExecutionProvider")


def test_inflight_autoscaling_overlay_reads_a_metric_the_service_exports():
    from service.admission import work_capacity
    from service.metrics import Metrics

    hpa = by_kind(render(K8S / "overlays" / "inflight-autoscaling"))["HorizontalPodAutoscaler"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "24"}
    name = metric["pods"]["metric"]["name"]
    exported = {m.name for m in Metrics().registry.collect()}
    assert name in exported
    rules = yaml.safe_load((K8S / "overlays" / "inflight-autoscaling" / "prometheus-adapter-rule.yaml").read_text())
    (rule,) = rules["rules"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
    # The target is below one pod's work capacity with the default settings, so pods scale out before queueing.
    capacity = work_capacity(Settings())  # the service's own rule
    assert 0 < int(metric["pods"]["target"]["averageValue"]) < capacity


def test_compose_file():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    server = compose["services"]["server"]
    assert set(server["environment"]) <= SETTINGS_ENV
    assert server["ports"][0].startswith("${BIND_ADDRESS:-127.0.0.1}:")
    assert "./models:/models:ro" in server["volumes"]
    # the rollout state on a volume, where the image's settings put it (a read-only repository cannot hold it)
    assert "rollout-state:/var/lib/resnet-serve" in server["volumes"] and "rollout-state" in compose["volumes"]
    assert "RESNET_SERVE_ROLLOUT_STATE_FILE=/var/lib/resnet-serve/rollouts.json" in (ROOT / "Dockerfile").read_text()
    grace = int(server["stop_grace_period"].rstrip("s"))
    assert grace > float(server["environment"]["RESNET_SERVE_DRAIN_TIMEOUT_S"])
    assert compose["services"]["prometheus"]["profiles"] == ["monitoring"]
    gpu = compose["services"]["server-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["server:8000"]


def test_dockerfile_serves_without_torch_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text and "ARG VARIANT=cpu" in text and "ARG PIP_CERT=" in text
    assert "'/src[serve]'" in text and "! /opt/venv/bin/python -c 'import torch'" in text  # the build fails if torch got in
    assert (
        "USER 10001" in text and "EXPOSE 8000" in text and "/readyz" in text and "COPY --chown=10001:10001 models /models" in text
    )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "runs", "training", "export"} <= set(ignored)


KSERVE = ROOT / "deploy" / "kserve"
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"  # the kserve SDK, in its own environment (make test)


def validate_kserve(*paths) -> subprocess.CompletedProcess:
    assert KSERVE_PYTHON.is_file(), "the KServe check needs .venv-kserve: run `make test` (or `make .venv-kserve/.installed`)"
    validator = ROOT / "tests" / "tools" / "validate_kserve.py"
    return subprocess.run([KSERVE_PYTHON, validator, *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_kserve_manifests_validate_against_the_kserve_sdk_models():
    result = validate_kserve(*sorted(KSERVE.glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("valid for kserve") == 2, result.stdout


def test_kserve_validation_can_fail(tmp_path):
    bad = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {
            "predictor": {
                "minReplicas": "one",
                "model": {"modelFormat": {"name": "onnx"}, "storageURI": "pvc://x"},
                "containers": [{"image": "x"}],
            }
        },
    }
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = validate_kserve(tmp_path / "bad.yaml")
    assert result.returncode == 1
    for problem in ("minReplicas: expected int", "storageURI: not a field of V1beta1ModelSpec", "containers[0]: V1Container"):
        assert problem in result.stdout, result.stdout


def test_kserve_runtime_runs_our_v2_api_with_valid_settings(monkeypatch):
    from service import v2_api

    runtime = yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= SETTINGS_ENV
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the values parse as the service's settings
    assert str(settings.model_repository) == "/mnt/models"  # where KServe's storage initializer puts storageUri
    assert [p["containerPort"] for p in container["ports"]] == [settings.port] == [8080]
    served = {route.path for route in v2_api.ROUTES}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in served and container[probe]["httpGet"]["port"] == settings.port
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert (ROOT / "models" / isvc["metadata"]["name"]).is_dir()  # the bundled model, under the name clients call
