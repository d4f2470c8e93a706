"""Which worker pods a scale-down removes (pure): the idle ones, by their pod-deletion-cost.

When a Deployment is scaled down, its ReplicaSet deletes unscheduled, pending and unready pods
first, then those with the lowest `controller.kubernetes.io/pod-deletion-cost` (Kubernetes docs,
"ReplicaSet", Pod deletion cost), and only then the newest. So before the operator lowers the
worker replicas it sets every worker pod's cost to the branches its worker runs: an idle worker
costs 0 and goes first, a busy one keeps its branches. The slot use comes from the workers' own
reports (`WorkerStats` on NATS); a pod without a fresh report has no work the operator knows of
and costs 0 too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MAX_DELETION_COST = 2_147_483_647
"""The annotation is an int32 (the API server refuses anything else)."""


@dataclass(frozen=True)
class WorkerPod:
    """What the cost decision reads of one worker pod."""

    name: str
    cost: str | None
    """Its pod-deletion-cost annotation as written; None when it has none."""
    terminating: bool = False
    """It is being deleted already (the ReplicaSet no longer counts it)."""

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> WorkerPod:
        """The pod as the API server returns it (a plain dict)."""
        metadata = pod.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        return cls(
            name=str(metadata["name"]),
            cost=annotations.get(DELETION_COST_ANNOTATION),
            terminating=bool(metadata.get("deletionTimestamp")),
        )


def lowers_workers(current_replicas: int | None, desired_replicas: int) -> bool:
    """Whether applying `desired_replicas` takes worker pods away (None: no Deployment yet)."""
    return current_replicas is not None and desired_replicas < current_replicas


def deletion_costs(pods: Iterable[str], slot_use: Mapping[str, int]) -> dict[str, int]:
    """Each pod's deletion cost: the slots its worker's running jobs hold (`slot_use`, by worker
    id, which is the pod's name); 0 for an idle worker and for one that did not report."""
    return {pod: min(max(slot_use.get(pod, 0), 0), MAX_DELETION_COST) for pod in pods}


def cost_changes(pods: Iterable[WorkerPod], slot_use: Mapping[str, int]) -> dict[str, int]:
    """The costs to write: those of the pods still running whose annotation says otherwise.

    A pod without the annotation costs 0 to the ReplicaSet already, so an idle one needs no
    patch; a terminating one is gone from the ReplicaSet's count and is left alone.
    """
    running = [pod for pod in pods if not pod.terminating]
    costs = deletion_costs([pod.name for pod in running], slot_use)
    return {
        pod.name: costs[pod.name]
        for pod in running
        if (pod.cost if pod.cost is not None else "0") != str(costs[pod.name])
    }
