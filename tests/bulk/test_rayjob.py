"""Static checks of deploy/ray (no Kubernetes here): the PVC validates with
kubernetes-validate; the RayJob (a KubeRay CRD kubernetes-validate does not know) has the
structure KubeRay's ray.io/v1 API needs, runs a command the CLI accepts, on the Ray version
the lock pins; the image's Dockerfile lints clean and copies only existing paths."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from service.bulk.__main__ import _parser
from tests.test_deploy import _tool

ROOT = Path(__file__).resolve().parents[2]
RAY = ROOT / "deploy" / "ray"


def _documents() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((RAY / "rayjob.yaml").read_text()))
    return {doc["kind"]: doc for doc in docs}


def _locked(name: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==")[1]
    raise AssertionError(f"{name} not in requirements.lock")


def test_the_pvc_validates(tmp_path):
    tool = _tool("kubernetes-validate")
    pvc = tmp_path / "pvc.yaml"
    pvc.write_text(yaml.safe_dump(_documents()["PersistentVolumeClaim"]))
    result = subprocess.run([tool, "--strict", str(pvc)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rayjob_has_kuberays_structure_and_a_valid_command():
    docs = _documents()
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "SidecarMode"}
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _locked("ray")
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group[
            "maxReplicas"]  # fmt: skip
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    for group in groups:
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["image"] == "polyglot-embed:ray"
            for mount in container["volumeMounts"]:
                assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
    # the entrypoint is a command the CLI accepts, on the Ray engine, on the shared volume
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "service.bulk"]
    args = _parser().parse_args(argv[3:])
    assert args.command == "embed" and args.engine == "ray" and args.ray_address == "auto"
    assert all(p.startswith("/data/") for p in args.inputs) and str(args.output).startswith("/data")


def test_the_image_dockerfile_lints_clean_and_copies_existing_paths():
    dockerfile = RAY / "Dockerfile"
    text = dockerfile.read_text()
    assert f"rayproject/ray:{_locked('ray')}-" in text
    for line in text.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source
    result = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
