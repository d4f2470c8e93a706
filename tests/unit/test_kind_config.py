"""kind-config.yaml and its guide (docs/kind-gpu.md) agree with nvkind, the chart and the sample.

kind cannot run here (no Docker), so these tests check what can go stale without one: the
cluster shape NVIDIA's GPU injection needs, and that every name the guide types (files, release,
Service, port, model) is the one the repository really has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ponder.api.crd import ReasoningServiceSpec
from ponder.operator.render import SCHEDULER_PORT, ChildNames

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND_CONFIG = REPO_ROOT / "kind-config.yaml"
GUIDE = REPO_ROOT / "docs" / "kind-gpu.md"
EXAMPLE = REPO_ROOT / "examples" / "reasoningservice.yaml"
CHART = REPO_ROOT / "charts" / "ponder"
# nvidia-container-runtime injects every GPU into a container with this (volume-mount mode).
ALL_GPUS_MOUNT = {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return dict(yaml.safe_load(KIND_CONFIG.read_text()))


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


def test_kind_config_has_a_control_plane_and_one_gpu_worker(config: dict[str, Any]) -> None:
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker"]


def test_gpu_worker_gets_all_gpus_injected_and_is_labelled(config: dict[str, Any]) -> None:
    control_plane, worker = config["nodes"]
    assert ALL_GPUS_MOUNT in worker["extraMounts"]
    assert ALL_GPUS_MOUNT not in control_plane.get("extraMounts", [])
    assert worker["labels"]["nvidia.com/gpu.present"] == "true"
    # nvkind renders the file as a Go template; plain YAML must stay free of template syntax.
    assert "{{" not in KIND_CONFIG.read_text()


def test_guide_uses_the_repository_files_and_the_cluster_name(
    config: dict[str, Any], guide: str
) -> None:
    assert "nvkind cluster create --config-template=kind-config.yaml" in guide
    assert "kind create cluster --config kind-config.yaml" in guide
    assert f"kubectl config use-context kind-{config['name']}" in guide
    assert f"docker exec {config['name']}-worker" in guide
    assert f"--name {config['name']}" in guide
    assert "helm install ponder charts/ponder" in guide
    assert f"kubectl apply -f {EXAMPLE.relative_to(REPO_ROOT)}" in guide


def test_guide_builds_the_image_tag_the_chart_and_the_crd_default_expect(guide: str) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{chart['appVersion']}"
    sample = yaml.safe_load(EXAMPLE.read_text())
    assert ReasoningServiceSpec.model_validate(sample["spec"]).workers.image == image
    assert f"docker build -t {image} ." in guide
    assert f"kind load docker-image {image}" in guide


def test_guide_queries_the_sample_service_port_and_model(guide: str) -> None:
    sample = yaml.safe_load(EXAMPLE.read_text())
    name = sample["metadata"]["name"]
    served_name = sample["spec"]["model"]["servedName"]
    service = ChildNames(name).service
    assert f"kubectl get rsvc {name}" in guide
    assert f"kubectl port-forward svc/{service} {SCHEDULER_PORT}:{SCHEDULER_PORT}" in guide
    assert f"http://127.0.0.1:{SCHEDULER_PORT}/v1/chat/completions" in guide
    assert f'base_url="http://127.0.0.1:{SCHEDULER_PORT}/v1"' in guide
    assert set(re.findall(r'"model": "([^"]+)"', guide)) == {served_name}
    assert set(re.findall(r'model="([^"]+)"', guide)) == {served_name}


def test_guide_python_sample_compiles(guide: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        compile(block, str(GUIDE), "exec")
