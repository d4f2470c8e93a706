"""The fake nodes of the local cluster: two 8-GPU nodes and CPU nodes, managed by kwok.

Pure data: `fake_nodes()` returns Node manifests that `kubectl apply` takes as they are. kwok's
node-initialize stage keeps the capacity and allocatable given here and marks the nodes Ready;
the annotation `kwok.x-k8s.io/node: fake` is what kwokctl's kwok-controller selects
(https://kwok.sigs.k8s.io/docs/user/kwok-manage-nodes-and-pods/).
"""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPUS_PER_NODE = 8
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_INSTANCE_TYPE = "p5.48xlarge"
CPU_INSTANCE_TYPE = "m7i.4xlarge"
# What the NVIDIA GPU operator and the cloud GPU node pools put on GPU nodes; workloads that
# want a GPU must tolerate it.
GPU_TAINT: dict[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}


def gpu_node_name(index: int) -> str:
    return f"gpu-node-{index}"


def cpu_node_name(index: int) -> str:
    return f"cpu-node-{index}"


def _node(
    name: str,
    pod_cidr: str,
    labels: dict[str, str],
    resources: dict[str, str],
    taints: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {**KWOK_ANNOTATION, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": taints},
        # The API server keeps a Node's status on create; kwok then keeps it and adds conditions.
        "status": {"capacity": resources, "allocatable": resources},
    }


def fake_nodes(gpu_nodes: int = 2, cpu_nodes: int = 1) -> list[dict[str, Any]]:
    """Node manifests: `gpu_nodes` H100x8 nodes (tainted) and `cpu_nodes` CPU-only nodes."""
    nodes = [
        _node(
            gpu_node_name(index),
            f"10.244.{index}.0/24",
            labels={
                "node.kubernetes.io/instance-type": GPU_INSTANCE_TYPE,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": str(GPUS_PER_NODE),
            },
            resources={
                "cpu": "32",
                "memory": "256Gi",
                "ephemeral-storage": "1Ti",
                "pods": "110",
                GPU_RESOURCE: str(GPUS_PER_NODE),
            },
            taints=[GPU_TAINT],
        )
        for index in range(gpu_nodes)
    ]
    nodes += [
        _node(
            cpu_node_name(index),
            f"10.244.{100 + index}.0/24",
            labels={"node.kubernetes.io/instance-type": CPU_INSTANCE_TYPE},
            resources={"cpu": "16", "memory": "64Gi", "ephemeral-storage": "500Gi", "pods": "110"},
            taints=[],
        )
        for index in range(cpu_nodes)
    ]
    return nodes
