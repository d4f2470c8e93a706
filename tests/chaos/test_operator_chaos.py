"""The operator SIGKILLed mid-reconcile of 50 ReasoningServices, on the local control plane:
once a fresh operator process is back, every service is Ready with exactly its own children,
none lost and none twice, and the seconds from the restart until all were Ready are printed.

The load here is the control plane's: 25 services applied at once, each becoming a ConfigMap,
two Deployments, a Service, a PodDisruptionBudget and NetworkPolicies; the kill lands once the
first has children, and 25 more are applied while the operator is dead, so the new process
finds services half-done, done and never seen.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ponder.local.cluster.commands import Kubectl
from ponder.local.nats import NatsServer
from tests.cluster.eventually import eventually
from tests.e2e.test_operator import OperatorProcess, condition, get_json, service
from tests.report import report

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

SERVICES = 50
CHILD_KINDS = ("configmap", "deployment", "service", "poddisruptionbudget")
CHILDREN_PER_SERVICE = {"configmap": 1, "deployment": 2, "service": 1, "poddisruptionbudget": 1}
RECOVERY_BOUND_SECONDS = 300.0
"""Only a hang exceeds it on a busy 2-core machine; the measured figure is printed."""


@pytest_asyncio.fixture
async def namespace(kubectl: Kubectl) -> AsyncIterator[str]:
    """A namespace of the test's own, deleted afterwards (without waiting: it frees the GPUs)."""
    name = f"chaos-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", name)
    yield name
    await kubectl("delete", "namespace", name, "--wait=false")


def small_service(name: str) -> dict[str, Any]:
    """The sample service scaled to zero while idle, so Ready with its scheduler alone, and a
    small scheduler: the local nodes' 16 GPUs could not hold a worker for each of 50, nor the
    CPU node's 16 cores 50 schedulers at their default 500m."""
    return service(
        name,
        workers={"minReplicas": 0, "maxReplicas": 1},
        autoscaling={"scaleToZero": {"enabled": True}},
        scheduler={"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
    )


async def ready_names(kubectl: Kubectl, namespace: str) -> set[str]:
    listing = await get_json(kubectl, "rsvc", "-n", namespace)
    return {
        item["metadata"]["name"]
        for item in listing["items"]
        if condition(item, "Ready").get("status") == "True"
    }


async def owners_of_children(kubectl: Kubectl, namespace: str) -> Counter[tuple[str, str]]:
    """(kind, owning service) -> how many children of that kind the service owns."""
    counts: Counter[tuple[str, str]] = Counter()
    for kind in CHILD_KINDS:
        listing = await get_json(kubectl, kind, "-n", namespace)
        for item in listing["items"]:
            for owner in item["metadata"].get("ownerReferences", []):
                if owner["kind"] == "ReasoningService":
                    counts[(kind, owner["name"])] += 1
    return counts


async def apply_all(kubectl: Kubectl, namespace: str, names: list[str]) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [small_service(n) for n in names]}
    await kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(listing))


async def services_with_workers(kubectl: Kubectl, namespace: str) -> int:
    """Services whose worker Deployment exists (at zero replicas while idle)."""
    listing = await get_json(
        kubectl, "deployment", "-n", namespace, "-l", "app.kubernetes.io/component=worker"
    )
    return len(listing["items"])


async def test_operator_sigkilled_mid_reconcile_of_50_services_loses_and_duplicates_nothing(
    operator_kubeconfig: Path,
    nats: NatsServer,
    kubectl: Kubectl,
    namespace: str,
    tmp_path: Path,
    pytestconfig: pytest.Config,
) -> None:
    operator = OperatorProcess(operator_kubeconfig, nats.url, tmp_path / "operator.log")
    await operator.start()
    try:
        names = [f"svc-{index:02d}" for index in range(SERVICES)]
        first, second = names[: SERVICES // 2], names[SERVICES // 2 :]
        await apply_all(kubectl, namespace, first)
        # Mid-reconcile: the first half is being reconciled, the second half arrives while
        # the operator is dead.
        with_workers = await eventually(
            lambda: services_with_workers(kubectl, namespace),
            lambda count: count >= 1,
            timeout_seconds=RECOVERY_BOUND_SECONDS,
            interval_seconds=0.1,
            what="the first service's children",
        )
        await operator.stop(kill=True)
        killed_with = await services_with_workers(kubectl, namespace)
        ready_at_kill = len(await ready_names(kubectl, namespace))
        await apply_all(kubectl, namespace, second)
        restarted_at = time.monotonic()
        await operator.start()
        ready = await eventually(
            lambda: ready_names(kubectl, namespace),
            lambda found: found == set(names),
            timeout_seconds=RECOVERY_BOUND_SECONDS,
            interval_seconds=1.0,
            what=f"all {SERVICES} services Ready after the restart",
        )
        recovery = time.monotonic() - restarted_at
        counts = await owners_of_children(kubectl, namespace)
    finally:
        await operator.stop()
    duplicated = sorted(
        f"{name}: {kind} x{counts[(kind, name)]}"
        for name in names
        for kind, expected in CHILDREN_PER_SERVICE.items()
        if counts[(kind, name)] > expected
    )
    missing = sorted(
        f"{name}: {kind}"
        for name in names
        for kind, expected in CHILDREN_PER_SERVICE.items()
        if counts[(kind, name)] < expected
    )
    line = (
        f"operator SIGKILL mid-reconcile of {SERVICES // 2} services, {SERVICES // 2} more "
        f"applied while it was dead (workers of {killed_with} applied and {ready_at_kill} "
        f"Ready at the kill; {with_workers} when first seen): "
        f"Ready {len(ready)}, lost {SERVICES - len(ready)}, children missing {len(missing)}, "
        f"duplicated {len(duplicated)}, all Ready {recovery:.1f} s after the restart"
    )
    report(pytestconfig, "chaos", line)
    assert not missing, missing
    assert not duplicated, duplicated
    assert recovery < RECOVERY_BOUND_SECONDS, line
