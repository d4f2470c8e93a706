"""The I/O edge of "scale-down spares work": write the worker pods' pod-deletion-cost.

`deletion_cost` decides (pure); this lists the service's worker pods, and merge-patches the
annotation of each whose cost changed, before the pass applies the lower replica count. A cost
that cannot be written (a chart without `patch` on pods, a pod deleted meanwhile) never stops
the scale-down: it only lets the ReplicaSet choose by its other rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from ponder.operator import render
from ponder.operator.decide import Plan
from ponder.operator.deletion_cost import (
    DELETION_COST_ANNOTATION,
    WorkerPod,
    cost_changes,
    lowers_workers,
)
from ponder.operator.runtime import Runtime
from ponder.operator.snapshot import Snapshot
from ponder.operator.status import DeploymentState

Logger = logging.Logger | logging.LoggerAdapter[Any]


async def spare_busy_workers(
    runtime: Runtime, snapshot: Snapshot, plan: Plan, logger: Logger
) -> None:
    """Before a pass lowers the worker replicas, make the idle workers' pods the cheapest to
    delete, so that the ReplicaSet removes them and the busy ones keep their branches."""
    current = DeploymentState.from_manifest(snapshot.workers)
    if not lowers_workers(current.spec_replicas if current.exists else None, plan.worker_replicas):
        return
    namespace, name = snapshot.key
    await set_deletion_costs(
        runtime.kube, namespace, name, runtime.worker_slots.slot_use(snapshot.key), logger
    )


async def set_deletion_costs(
    kube: AsyncClient,
    namespace: str,
    name: str,
    slot_use: Mapping[str, int],
    logger: Logger,
) -> dict[str, int]:
    """Annotate the worker pods of service `namespace/name` with their slot use (by pod name);
    returns the costs written."""
    selector: dict[str, Any] = dict(render.selector_labels(name, "worker"))
    try:
        pods = [
            WorkerPod.from_pod(pod.to_dict())
            async for pod in kube.list(Pod, namespace=namespace, labels=selector)
        ]
    except ApiError as error:
        logger.warning("could not list the worker pods of %s/%s: %s", namespace, name, error)
        return {}
    written: dict[str, int] = {}
    for pod, cost in cost_changes(pods, slot_use).items():
        patch = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}}
        try:
            await kube.patch(Pod, pod, patch, namespace=namespace, patch_type=PatchType.MERGE)
        except ApiError as error:
            if error.status.code != 404:
                logger.warning(
                    "could not set the deletion cost of Pod %s/%s: %s", namespace, pod, error
                )
            continue
        written[pod] = cost
    if written:
        logger.info(
            "Set pod-deletion-cost of %s before scaling down",
            ", ".join(f"Pod {namespace}/{pod} to {cost}" for pod, cost in sorted(written.items())),
        )
    return written
