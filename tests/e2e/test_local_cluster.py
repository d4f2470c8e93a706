"""The local control plane is a real one: real scheduler, controllers, versions and helm."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ponder.local.cluster.commands import CommandError, Kubectl, run_command
from ponder.local.cluster.fake_nodes import GPU_RESOURCE, GPU_TAINT, GPUS_PER_NODE
from ponder.local.cluster.local_cluster import LocalCluster
from tests.cluster import pins
from tests.cluster.eventually import eventually

pytestmark = pytest.mark.e2e

GPU_TOLERATION = {**GPU_TAINT, "operator": "Equal"}


@pytest_asyncio.fixture
async def namespace(kubectl: Kubectl) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", name)
    yield name
    await kubectl("delete", "namespace", name, "--wait=false")


async def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(await kubectl("get", *args, "-o", "json"))


def deployment(
    name: str, replicas: int, gpus: int, *, tolerate_gpu_taint: bool = True
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        # Extended resources are requested through limits (requests default to them).
        resources["limits"] = {GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "main", "image": "busybox", "resources": resources}],
                    "tolerations": [GPU_TOLERATION] if tolerate_gpu_taint else [],
                },
            },
        },
    }


def pods_of(pod_list: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_list["items"])


def all_running(pods: list[dict[str, Any]], count: int) -> bool:
    return len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods)


async def test_three_nodes_are_ready_and_gpu_nodes_advertise_eight_gpus(kubectl: Kubectl) -> None:
    nodes = (await get_json(kubectl, "nodes"))["items"]
    ready = {
        node["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
        )
        for node in nodes
    }
    assert ready == {"gpu-node-0": True, "gpu-node-1": True, "cpu-node-0": True}
    for node in nodes:
        gpus = (
            node["status"]["allocatable"].get(GPU_RESOURCE),
            node["status"]["capacity"].get(GPU_RESOURCE),
        )
        if node["metadata"]["name"].startswith("gpu-"):
            assert gpus == (str(GPUS_PER_NODE), str(GPUS_PER_NODE))
            assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
            assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node[
                "spec"
            ]["taints"]
        else:
            assert gpus == (None, None)


async def test_api_server_reports_the_pinned_kubernetes_version(kubectl: Kubectl) -> None:
    server = json.loads(await kubectl("version", "-o", "json"))["serverVersion"]
    pinned = pins.kubernetes_version()
    major, minor, _ = pinned.removeprefix("v").split(".")
    assert (server["gitVersion"], server["major"], server["minor"]) == (pinned, major, minor)


async def test_gpu_deployment_is_scheduled_onto_gpu_nodes_and_runs(
    kubectl: Kubectl, namespace: str
) -> None:
    manifest = deployment("gpu-worker", replicas=3, gpus=1)
    await kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))

    pods = await eventually(
        lambda: get_json(kubectl, "pods", "-n", namespace, "-l", "app=gpu-worker"),
        lambda found: all_running(pods_of(found), 3),
        what="3 gpu-worker pods Running",
    )

    assert {p["spec"]["nodeName"] for p in pods_of(pods)} <= {"gpu-node-0", "gpu-node-1"}
    await kubectl("rollout", "status", "-n", namespace, "deployment/gpu-worker", "--timeout=60s")


async def test_pod_asking_for_more_gpus_than_a_node_has_stays_pending(
    kubectl: Kubectl, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"limits": {GPU_RESOURCE: str(GPUS_PER_NODE + 1)}},
                }
            ],
            "tolerations": [GPU_TOLERATION],
        },
    }
    await kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(pod))

    events = await eventually(
        lambda: get_json(
            kubectl,
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=too-big,reason=FailedScheduling",
        ),
        lambda found: bool(found["items"]),
        what="a FailedScheduling event",
    )

    assert f"Insufficient {GPU_RESOURCE}" in events["items"][0]["message"]
    status = (await get_json(kubectl, "pod", "too-big", "-n", namespace))["status"]
    assert status["phase"] == "Pending"
    scheduled = next(c for c in status["conditions"] if c["type"] == "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")


async def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(
    kubectl: Kubectl, namespace: str
) -> None:
    manifest = deployment("cpu-app", replicas=2, gpus=0, tolerate_gpu_taint=False)
    await kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    pods = await eventually(
        lambda: get_json(kubectl, "pods", "-n", namespace, "-l", "app=cpu-app"),
        lambda found: all_running(pods_of(found), 2),
        what="2 cpu-app pods Running",
    )
    # Untolerated GPU taints keep CPU work on the CPU node.
    assert {p["spec"]["nodeName"] for p in pods_of(pods)} == {"cpu-node-0"}
    replica_sets = (await get_json(kubectl, "replicasets", "-n", namespace))["items"]
    assert [rs["metadata"]["ownerReferences"][0]["name"] for rs in replica_sets] == ["cpu-app"]

    await kubectl("delete", "-n", namespace, "deployment/cpu-app", "--wait=false")

    await eventually(
        lambda: get_json(kubectl, "replicasets,pods", "-n", namespace),
        lambda found: not found["items"],
        what="the ReplicaSet and pods garbage-collected",
    )


async def test_helm_reports_its_pinned_version(kube_cluster: LocalCluster) -> None:
    helm = str(kube_cluster.bin_dir / "helm")
    version = await run_command(
        [helm, "version", "--template", "{{.Version}}"], env=kube_cluster.env()
    )
    assert version.strip() == pins.helm_version()


@pytest.mark.parametrize(
    ("extra_args", "expected_version"),
    [
        # Offline, helm assumes the Kubernetes minor it was built against (not 1.20).
        ([], f"v1.{pins.kubernetes_version().split('.')[1]}.0"),
        # Against the cluster, it asks the API server.
        (["--validate"], pins.kubernetes_version()),
    ],
    ids=["offline", "validate-against-cluster"],
)
async def test_helm_template_sees_the_pinned_kubernetes_version(
    kube_cluster: LocalCluster, tmp_path: Path, extra_args: list[str], expected_version: str
) -> None:
    chart = tmp_path / "capabilities"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: capabilities\nversion: 0.1.0\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: capabilities\n"
        "data:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    helm = str(kube_cluster.bin_dir / "helm")

    rendered = await run_command(
        [helm, "template", "probe", str(chart), *extra_args], env=kube_cluster.env()
    )

    assert f'kubeVersion: "{expected_version}"' in rendered


async def test_service_account_token_gets_only_what_rbac_grants(
    kube_cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    await kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = await kubectl("create", "token", "reader", "-n", namespace, "--duration=10m")
    as_reader = Kubectl(
        kube_cluster.kubectl_binary, await kube_cluster.token_kubeconfig(token, "reader")
    )

    with pytest.raises(CommandError, match="forbidden"):
        await as_reader("get", "pods", "-n", namespace)

    await kubectl("create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods")
    await kubectl(
        "create", "rolebinding", "reader", "-n", namespace, "--role=pod-reader",
        f"--serviceaccount={namespace}:reader",
    )  # fmt: skip

    async def may_list_pods() -> bool:
        try:  # `auth can-i` answers "no" with exit status 1
            await as_reader("auth", "can-i", "list", "pods", "-n", namespace)
        except CommandError:
            return False
        return True

    await eventually(may_list_pods, bool, what="the RoleBinding to take effect")
    assert await as_reader("get", "pods", "-n", namespace) == ""
    with pytest.raises(CommandError, match="forbidden"):
        await as_reader("get", "secrets", "-n", namespace)
