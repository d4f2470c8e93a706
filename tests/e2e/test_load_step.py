"""A load step reaches a scale decision within one tick, whatever the tick (issue 12, item 5).

The operator runs as in test_operator.py (a local process, the chart's RBAC, real NATS), but
with a timer interval far longer than the test: after the tick at the service's creation, no
other comes while the test runs, so only the schedulers' push can explain a decision. A real
scheduler serves the service (its ServiceConfig from the operator's ConfigMap) with a stats
interval longer than the wait too; kwok's worker pods run nothing, so the queries the test sends
stay outstanding. The step: from idle to 40 concurrent queries of 8 branches. Measured: step ->
the scheduler's pushed update (on NATS) -> the operator's ScaledWorkers Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import SchedulerStats
from ponder.local.cluster.commands import Kubectl
from ponder.local.nats import NatsServer
from ponder.local.scheduler import SchedulerProcess, scheduler_process
from tests.cluster.eventually import eventually
from tests.e2e.local_kubelet import operator_config
from tests.e2e.test_operator import (  # noqa: F401 (namespace: a fixture, used by name)
    SETTLE_SECONDS,
    OperatorProcess,
    apply,
    get_json,
    namespace,
    service,
    wait_ready,
    worker_replicas,
)
from tests.report import report

pytestmark = pytest.mark.e2e

TICK_SECONDS = 600.0
"""The operator's timer interval here: far longer than the test takes from the service's
creation (when the first tick runs) to the decision."""
STATS_INTERVAL_SECONDS = 25.0
"""The scheduler's periodic stats: the step comes right after one, and the push well before the
next (and before the operator's 30 s staleness forgets the scheduler)."""
DECISION_BOUND_SECONDS = 5.0
"""The issue's target: the decision Event at most this long after the step."""
PUSH_BOUND_SECONDS = 2.0
"""The scheduler's update at most this long after the step (it checks every half second)."""
QUERIES = 40
BRANCHES = 8
QUERY_DEADLINE_MS = 120_000
"""Longer than the test: the queries stay outstanding (no worker runs their jobs)."""

SPEC: dict[str, Any] = {
    "workers": {"minReplicas": 1, "maxReplicas": 4, "slotsPerWorker": 8},
    "strategy": {"default": "SelfConsistency", "branches": BRANCHES, "maxBranches": 32},
    "autoscaling": {"mode": "Builtin", "targetUtilizationPercent": 100},
}


@pytest_asyncio.fixture
async def slow_operator(
    operator_kubeconfig: Path, nats: NatsServer, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """An operator whose timer never ticks twice within the test."""
    process = OperatorProcess(
        operator_kubeconfig,
        nats.url,
        tmp_path / "operator.log",
        extra_args=("--autoscale-interval-seconds", str(TICK_SECONDS)),
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def scaled_workers_events(kubectl: Kubectl, where: str) -> list[dict[str, Any]]:
    events = await get_json(
        kubectl, "events", "-n", where, "--field-selector", "reason=ScaledWorkers"
    )
    return list(events["items"])


def event_unix_time(event: dict[str, Any]) -> float | None:
    """When the operator posted `event` (its eventTime, microseconds), in unix seconds."""
    stamp = event.get("eventTime") or event.get("firstTimestamp")
    if not stamp:
        return None
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


async def listen(url: str) -> NatsClient:
    """A NATS client of the test's own (the fixture's name hides the module in tests)."""
    return await nats.connect(url)


async def ask(scheduler: SchedulerProcess, model: str) -> None:
    """One query that stays outstanding until the test ends (no worker runs its jobs)."""
    body = {
        "model": model,
        "prompt": "Q: 2+2? A:",
        "max_tokens": 16,
        "ponder": {
            "strategy": "self-consistency",
            "branches": BRANCHES,
            "deadline_ms": QUERY_DEADLINE_MS,
        },
    }
    timeout = aiohttp.ClientTimeout(total=QUERY_DEADLINE_MS / 1000 + SETTLE_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{scheduler.base_url}/v1/completions", json=body) as response,
    ):
        await response.read()


async def test_a_load_step_is_decided_within_five_seconds_however_long_the_tick(
    slow_operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,  # noqa: F811 (the fixture)
    nats: NatsServer,
    stack_log_dir: Path,
    pytestconfig: pytest.Config,
) -> None:
    name = "stepped"
    created_at = time.monotonic()
    await apply(kubectl, namespace, service(name, **SPEC))
    await wait_ready(kubectl, namespace, name)
    assert await worker_replicas(kubectl, namespace, name) == 1
    config = await operator_config(kubectl, namespace, name)

    updates: asyncio.Queue[tuple[float, SchedulerStats]] = asyncio.Queue()

    async def on_stats(message: Msg) -> None:
        updates.put_nowait((time.monotonic(), SchedulerStats.model_validate_json(message.data)))

    client = await listen(nats.url)
    try:
        await client.subscribe(ServiceSubjects(namespace, name).stats, cb=on_stats)
        await client.flush()
        async with scheduler_process(
            config,
            nats_url=nats.url,
            log_dir=stack_log_dir,
            stats_interval_seconds=STATS_INTERVAL_SECONDS,
        ) as scheduler:
            # Right after a periodic update (the first), so the next one is 25 s away.
            _, first = await asyncio.wait_for(updates.get(), SETTLE_SECONDS)
            assert (first.branches_outstanding, first.step) == (0, False)
            assert await scaled_workers_events(kubectl, namespace) == []

            stepped_at, stepped_at_unix = time.monotonic(), time.time()
            queries = [asyncio.create_task(ask(scheduler, config.model)) for _ in range(QUERIES)]
            try:
                pushed_at, pushed = await asyncio.wait_for(updates.get(), SETTLE_SECONDS)
                events = await eventually(
                    lambda: scaled_workers_events(kubectl, namespace),
                    bool,
                    timeout_seconds=SETTLE_SECONDS,
                    interval_seconds=0.2,
                    what="a ScaledWorkers Event after the load step",
                )
                seen_at = time.monotonic()
            finally:
                for query in queries:
                    query.cancel()
                await asyncio.gather(*queries, return_exceptions=True)
    finally:
        with contextlib.suppress(Exception):
            await client.close()

    assert pushed.step, pushed
    assert pushed.branches_outstanding > 0, pushed

    message = events[0]["message"]
    assert message.startswith("Scaled workers from 1 to "), message
    assert await worker_replicas(kubectl, namespace, name) > 1
    posted_at = event_unix_time(events[0])
    decision_seconds = (
        posted_at - stepped_at_unix if posted_at is not None else seen_at - stepped_at
    )
    push_seconds = pushed_at - stepped_at
    report(
        pytestconfig,
        "load-step",
        f"step -> pushed stats {push_seconds:.2f} s ({pushed.branches_outstanding} branches)"
        f" -> ScaledWorkers Event {decision_seconds:.2f} s after the step"
        f" (seen by the test after {seen_at - stepped_at:.2f} s); operator tick"
        f" {TICK_SECONDS:.0f} s, stats interval {STATS_INTERVAL_SECONDS:.0f} s: {message}",
    )
    # Only the push explains it: the timer ticked once, at the creation, and not again since.
    assert seen_at - created_at < TICK_SECONDS
    assert push_seconds <= PUSH_BOUND_SECONDS
    assert decision_seconds <= DECISION_BOUND_SECONDS
