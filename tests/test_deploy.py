"""Static checks of docker/, docker-compose.yml and deploy/k8s (no Docker engine here):
the files validate, reference only what exists, and query only metrics the service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from tests.service.conftest import running

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "polyglot-embed.json"
K8S = ROOT / "deploy" / "k8s"
METRIC = re.compile(r"\bembed_[a-z0-9_]+")


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_validates_with_docker_compose():
    tool = _tool("docker-compose")
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "cpu", "--profile", "train",
         "config", "-q"], capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_references_exist():
    compose = _compose()
    services, volumes = compose["services"], set(compose["volumes"])
    assert {"embed", "embed-cpu", "distill", "prometheus", "grafana"} <= set(services)
    assert {"gpu", "cpu", "train"} <= {p for s in services.values() for p in s.get("profiles", [])}
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source}"
            elif not source.startswith("$"):
                assert source in volumes, f"{name}: volume {source} is not declared"
        for dependency in service.get("depends_on", []):
            assert dependency in services
    gpu = services["embed"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["embed"]["healthcheck"]["test"][-1] == "/app/healthcheck.py"


def test_dockerfiles_lint_clean():
    tool = _tool("hadolint")
    result = subprocess.run(
        [tool, *map(str, DOCKERFILES)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_copy_only_existing_paths_and_run_as_non_root(dockerfile):
    text = dockerfile.read_text()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources = [p for p in line.split()[1:-1] if not p.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}"
    assert "USER 10001" in text and "HEALTHCHECK" in text
    assert text.count("FROM ") >= 2  # multi-stage


def test_image_start_command_is_the_documented_one():
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "deployment.md").read_text()
    for dockerfile in DOCKERFILES:
        cmd = re.search(r"^CMD (\[.*\])$", dockerfile.read_text(), re.M).group(1)
        assert json.loads(cmd) == ["python", "-m", "service"]
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "service"]
    assert "python -m service" in readme


def test_prometheus_config_passes_promtool():
    tool = _tool("promtool")
    result = subprocess.run(
        [tool, "check", "config", "docker/prometheus/prometheus.yml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_manifests_validate():
    tool = _tool("kubernetes-validate")
    files = sorted(
        str(p)
        for p in K8S.glob("*.yaml")
        if p.name not in {"kustomization.yaml", "prometheus-adapter-rules.yaml"}
    )
    result = subprocess.run([tool, "--strict", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(str(K8S / name) for name in listed) == files


def _exported_metric_names(cache_dir) -> set[str]:
    with running(Settings(_env_file=None, cache_dir=cache_dir)) as client:
        client.post("/embed", json={"inputs": "warm"})
        text = client.get("/metrics").text
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_dashboard_and_autoscaler_query_only_real_metrics(cache_dir):
    exported = _exported_metric_names(cache_dir)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    adapter = (K8S / "prometheus-adapter-rules.yaml").read_text()
    used = {m for q in queries for m in METRIC.findall(q)} | set(METRIC.findall(adapter))
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    hpa_metrics = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    adapter_names = set(re.findall(r'as: "([a-z_0-9]+)"', adapter))
    assert hpa_metrics <= adapter_names  # the HPA reads what the adapter exposes
    used -= adapter_names - exported  # adapter output names are derived, not scraped
    missing = sorted(used - exported)
    assert not missing, f"queried but not exported: {missing}"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for needle in (
        "latency",
        "queue depth",
        "batch size",
        "batch tokens",
        "inference",
        "error",
        "429",
        "requests/s",
    ):
        assert needle in titles


def _duration_s(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) if text.endswith("s") else float(text)


def test_kill_grace_outlasts_the_drain():
    """Kubernetes and compose kill the container only after the service's own drain
    (graceful_shutdown_s, plus its bounded exit margin, plus the preStop sleep) is over."""
    from service.server import SHUTDOWN_MARGIN_S

    default_grace = Settings.model_fields["graceful_shutdown_s"].default
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    grace = float(config.get("EMBED_GRACEFUL_SHUTDOWN_S", default_grace))
    pod = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pre_stop_s = float(command[1]) if command[:1] == ["sleep"] else 0.0
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + grace + SHUTDOWN_MARGIN_S

    embed = _compose()["services"]["embed"]
    compose_grace = float(
        str(embed["environment"].get("EMBED_GRACEFUL_SHUTDOWN_S", default_grace))
        .split(":-")[-1]
        .rstrip("}")
    )
    assert _duration_s(embed["stop_grace_period"]) > compose_grace + SHUTDOWN_MARGIN_S


def test_liveness_restarts_a_hung_engine_core_within_a_bound():
    """The liveness probe reads /health, which turns 503 once the engine core has not
    answered for core_timeout_s (tests/service/test_faults.py proves that timing): the pod
    is restarted within core_timeout_s + period x failures, under a minute, and one slow
    probe (a busy event loop) does not restart it."""
    default_core_timeout = Settings.model_fields["core_timeout_s"].default
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    core_timeout = float(config.get("EMBED_CORE_TIMEOUT_S", default_core_timeout))
    pod = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    live = container["livenessProbe"]
    assert live["failureThreshold"] >= 2
    assert live.get("timeoutSeconds", 1) >= 2
    restart_s = core_timeout + live["periodSeconds"] * live["failureThreshold"]
    assert restart_s <= 30
