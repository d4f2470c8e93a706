"""A ReasoningService whose `spec.nats.url` is unreachable, applied among ten healthy ones while
one of them is under load, on the local control plane with a real data plane for that one (the
operator, its scheduler on the operator's own ServiceConfig, vLLM on the CPU, worker processes
started by the stand-in kubelet of `tests.e2e.local_kubelet`).

The bad object must stall nothing: the healthy services applied after it become Ready, the
loaded one answers every query and is scaled up by the operator while the bad one's NATS
connects keep failing, the bad one reports `Degraded=NatsUnreachable`, and it can be deleted
mid-load. It prints and asserts the queries answered, failed, lost (0) and duplicated (0), and
the seconds until the healthy services were Ready, the scale-up, and the bad one's deletion.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ponder.local.cluster.commands import Kubectl
from ponder.local.nats import NatsServer
from ponder.local.vllm import VllmServer
from tests.chaos.load import (
    Load,
    LoadSpec,
    QueryRecord,
    Target,
    assert_every_query_answered,
    tally,
)
from tests.chaos.test_operator_chaos import apply_all, ready_names
from tests.cluster.eventually import eventually
from tests.e2e.local_kubelet import LocalKubelet, served_locally
from tests.e2e.test_operator import (  # noqa: F401 (operator, namespace: fixtures, used by name)
    SETTLE_SECONDS,
    UNREACHABLE_NATS,
    OperatorProcess,
    apply,
    condition,
    get_json,
    namespace,
    operator,
    service,
    wait_ready,
)
from tests.e2e.test_scale_from_zero import shipped_vllm  # noqa: F401 (a fixture)
from tests.report import report

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.vllm]

BAD = "lost-nats"
BUSY = "busy"
QUIET = [f"quiet-{index}" for index in range(9)]
"""With BUSY, the ten healthy services; scaled to zero while idle, so Ready on their scheduler."""
BUSY_SPEC: dict[str, Any] = {
    "model": {"name": "ponder-arith", "servedName": "ponder-arith", "maxModelLen": 256},
    "workers": {"minReplicas": 1, "maxReplicas": 2, "slotsPerWorker": 4},
    "strategy": {
        "default": "SelfConsistency",
        "branches": 4,
        "maxBranches": 16,
        "branchesPerJob": 1,
    },
    "budget": {"defaultTokens": 256, "maxTokens": 1024, "maxTokensPerBranch": 64},
    "autoscaling": {
        "mode": "Builtin",
        "targetUtilizationPercent": 100,
        "scaleDownStabilizationSeconds": 300,  # no scale-down within the test
    },
}
LOAD = LoadSpec(queries=32, in_flight=8, seed=12, branches=4)
"""32 branches in flight against one worker's 4 slots: demand for more than the pool's cap."""
DELETE_TIMEOUT_SECONDS = 60


async def the_bad_service_is_degraded(kubectl: Kubectl, where: str) -> dict[str, Any]:
    reported: dict[str, Any] = await eventually(
        lambda: get_json(kubectl, "rsvc", BAD, "-n", where),
        lambda obj: condition(obj, "Degraded").get("reason") == "NatsUnreachable",
        timeout_seconds=SETTLE_SECONDS,
        what="Degraded=NatsUnreachable",
    )
    return condition(reported, "Degraded")


async def meanwhile(
    kubectl: Kubectl, where: str, kubelet: LocalKubelet, since: float
) -> dict[str, float]:
    """While the load runs: the healthy services Ready, the loaded one scaled up, the bad one
    degraded and then deleted; the seconds from `since` (the bad apply) to each."""
    healthy = {BUSY, *QUIET}
    await eventually(
        lambda: ready_names(kubectl, where),
        lambda found: healthy <= found,
        timeout_seconds=SETTLE_SECONDS,
        interval_seconds=0.5,
        what="the ten healthy services Ready",
    )
    seconds = {"healthy Ready": time.monotonic() - since}

    async def replicas_asked() -> int:
        return kubelet.replicas_seen[-1][1] if kubelet.replicas_seen else 0

    await eventually(
        replicas_asked,
        lambda replicas: replicas == 2,
        timeout_seconds=SETTLE_SECONDS,
        interval_seconds=0.2,
        what=f"{BUSY} scaled 1 -> 2 under load",
    )
    seconds["scaled up"] = time.monotonic() - since
    degraded = await the_bad_service_is_degraded(kubectl, where)
    assert degraded["status"] == "True" and UNREACHABLE_NATS in degraded["message"], degraded
    seconds["degraded"] = time.monotonic() - since
    asked_at = time.monotonic()
    await kubectl("delete", "rsvc", BAD, "-n", where, f"--timeout={DELETE_TIMEOUT_SECONDS}s")
    seconds["deleted (from its delete)"] = time.monotonic() - asked_at
    return seconds


async def test_a_service_with_unreachable_nats_stalls_no_healthy_one_under_load(
    operator: OperatorProcess,  # noqa: F811 (the fixture)
    kubectl: Kubectl,
    namespace: str,  # noqa: F811 (the fixture)
    nats: NatsServer,
    shipped_vllm: VllmServer,  # noqa: F811 (the fixture)
    stack_log_dir: Path,
    http: aiohttp.ClientSession,
    pytestconfig: pytest.Config,
) -> None:
    bad_applied_at = time.monotonic()
    await apply(kubectl, namespace, service(BAD, nats={"url": UNREACHABLE_NATS}))
    await apply(kubectl, namespace, service(BUSY, **BUSY_SPEC))
    await wait_ready(kubectl, namespace, BUSY)
    async with served_locally(
        kubectl, namespace, BUSY, nats.url, shipped_vllm.base_url, stack_log_dir
    ) as (kubelet, scheduler, _):
        await apply_all(kubectl, namespace, QUIET)  # applied after the bad one, under load
        load = Load(LOAD, Target(scheduler.base_url), http)
        async with asyncio.TaskGroup() as group:
            running = group.create_task(load.run())
            watched = group.create_task(meanwhile(kubectl, namespace, kubelet, bad_applied_at))
        records: list[QueryRecord] = running.result()
        seconds = watched.result()
    counts = tally(records)
    left = await get_json(kubectl, "rsvc", "-n", namespace)
    names = {item["metadata"]["name"] for item in left["items"]}
    timeline = ", ".join(f"{what} {at:.1f} s" for what, at in seconds.items())
    line = (
        f"unreachable NATS among {1 + len(QUIET)} healthy services, {LOAD.queries} queries "
        f"({LOAD.in_flight} in flight) on one: {counts.line()}; from the bad apply: {timeline}"
    )
    print(f"\nchaos bad NATS URL: {line}")
    report(pytestconfig, "chaos", f"bad NATS URL: {line}")
    assert_every_query_answered(records, LOAD.queries)
    assert BAD not in names and {BUSY, *QUIET} <= names, names
