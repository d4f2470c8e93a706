"""Scale from zero that holds, on the local control plane with a real data plane.

The operator runs as in test_operator.py (a local process, the chart's RBAC, real NATS). The
data plane is real too: the scheduler runs as a local process on the ServiceConfig the operator
wrote into the service's ConfigMap, the engine is vLLM on the CPU serving the shipped arithmetic
model, and the test plays the kubelet for the worker pods (`tests.e2e.local_kubelet`): whenever
the worker Deployment asks for more replicas than run, it starts a local worker process after a
pod's start-up delay, and it stops one whenever the Deployment asks for fewer.

The story: a service created at zero workers answers its first query through a cold start
(0 -> 1), goes idle, is scaled to zero, and a query arriving then is held in JetStream past its
own deadline until the worker the operator scales up (0 -> 1, at the next tick) is running, and
then answered, whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ponder.api.service_config import ServiceConfig
from ponder.local.cluster.commands import Kubectl
from ponder.local.nats import NatsServer
from ponder.local.scheduler import SchedulerProcess
from ponder.local.vllm import VllmServer
from tests.cluster.eventually import eventually
from tests.conftest import shipped_model_present
from tests.e2e.local_kubelet import POD_START_SECONDS, LocalKubelet, served_locally
from tests.e2e.test_operator import (  # noqa: F401 (operator, namespace: fixtures, used by name)
    SETTLE_SECONDS,
    TICK_GAP_SLACK_SECONDS,
    TICK_SECONDS,
    OperatorProcess,
    apply,
    get_json,
    namespace,
    operator,
    service,
    wait_ready,
    worker_replicas,
)
from tests.report import report as shared_report

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

IDLE_SECONDS = 30
"""spec.autoscaling.scaleToZero.idleSeconds: its minimum, to keep the test short."""
HOLD_SECONDS = 120
"""spec.autoscaling.scaleToZero.holdSeconds: far longer than the cold start here takes."""
DEADLINE_MS = 3000
"""The queries' own deadline, shorter than a worker's start below: only the hold answers them."""
QUERY_TIMEOUT_SECONDS = HOLD_SECONDS + SETTLE_SECONDS
PROMPT = "Q:23+48-17 A:"
ANSWER = "54"

SPEC: dict[str, Any] = {
    "model": {"name": "ponder-arith", "servedName": "ponder-arith", "maxModelLen": 256},
    "workers": {"minReplicas": 0, "maxReplicas": 2, "slotsPerWorker": 8},
    # One branch per job: greedy (temperature 0) vLLM requests take n=1 only.
    "strategy": {
        "default": "SelfConsistency",
        "branches": 2,
        "maxBranches": 16,
        "branchesPerJob": 1,
    },
    "budget": {"defaultTokens": 256, "maxTokens": 1024, "maxTokensPerBranch": 64},
    "autoscaling": {
        "mode": "Builtin",
        "scaleToZero": {
            "enabled": True,
            "idleSeconds": IDLE_SECONDS,
            "holdSeconds": HOLD_SECONDS,
        },
    },
}


@pytest.fixture
def shipped_vllm(vllm: VllmServer) -> VllmServer:
    """The session's vLLM, which must serve the trained shipped model (the test asserts on its
    answer)."""
    if not shipped_model_present():
        pytest.fail("the shipped model models/arith/ponder-arith is missing", pytrace=False)
    return vllm


@pytest_asyncio.fixture
async def kubelet_and_scheduler(
    operator: OperatorProcess,  # noqa: F811 (the fixture)
    kubectl: Kubectl,
    namespace: str,  # noqa: F811 (the fixture)
    nats: NatsServer,
    shipped_vllm: VllmServer,
    stack_log_dir: Path,
) -> AsyncIterator[tuple[LocalKubelet, SchedulerProcess, ServiceConfig]]:
    """The service applied at zero workers, its scheduler running, the stand-in kubelet
    watching its worker Deployment."""
    name = "cold"
    await apply(kubectl, namespace, service(name, **SPEC))
    await wait_ready(kubectl, namespace, name)
    assert await worker_replicas(kubectl, namespace, name) == 0
    async with served_locally(
        kubectl, namespace, name, nats.url, shipped_vllm.base_url, stack_log_dir
    ) as (kubelet, scheduler, config):
        assert config.slo.cold_start_hold_ms == HOLD_SECONDS * 1000
        yield kubelet, scheduler, config


async def ask(scheduler: SchedulerProcess) -> tuple[int, dict[str, Any], float]:
    """One query with a deadline shorter than a cold start: status, body, seconds taken."""
    body = {
        "model": "ponder-arith",
        "prompt": PROMPT,
        "max_tokens": 48,
        "temperature": 0.0,  # greedy: the trained model answers the known problem
        "ponder": {"strategy": "self-consistency", "branches": 2, "deadline_ms": DEADLINE_MS},
    }
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{scheduler.base_url}/v1/completions", json=body) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text), time.monotonic() - started


def report(config: pytest.Config, line: str) -> None:
    shared_report(config, "scale-from-zero", line)


def assert_answered_whole_after_the_hold(status: int, body: dict[str, Any], seconds: float) -> None:
    """Answered (not a 504 at the deadline), with every branch it asked for."""
    assert status == 200, body
    ponder = body["ponder"]
    plan = ponder["plan"]
    assert plan["deadline_ms"] == DEADLINE_MS
    assert plan["cold_start_hold_ms"] == HOLD_SECONDS * 1000, plan
    assert (plan["branches"], plan["shrunk"]) == (2, False), plan
    assert ponder["branches_completed"] == 2, ponder
    assert not ponder["deadline_exceeded"], ponder
    assert ponder["answer"] == ANSWER, ponder
    # The worker started after the deadline had passed: only the hold kept the query alive.
    assert seconds > POD_START_SECONDS > DEADLINE_MS / 1000


async def test_a_query_at_zero_workers_is_held_until_a_worker_is_up_then_answered(
    kubelet_and_scheduler: tuple[LocalKubelet, SchedulerProcess, ServiceConfig],
    kubectl: Kubectl,
    namespace: str,  # noqa: F811 (the fixture)
    pytestconfig: pytest.Config,
) -> None:
    kubelet, scheduler, _ = kubelet_and_scheduler
    name = kubelet.name

    # 0 -> query -> 1 -> answered: the service was created without workers.
    asked_at = time.monotonic()
    status, body, seconds = await ask(scheduler)
    assert_answered_whole_after_the_hold(status, body, seconds)
    report(pytestconfig, f"created at zero: answered in {seconds:.1f} s, {when(kubelet, asked_at)}")
    assert len(kubelet.workers) == 1
    answered_at = time.monotonic()

    # 1 -> idle -> 0: after the idle period the operator removes the worker.
    await eventually(
        lambda: worker_replicas(kubectl, namespace, name),
        lambda replicas: replicas == 0,
        timeout_seconds=IDLE_SECONDS + SETTLE_SECONDS,
        what="the pool scaled to zero after the idle period",
    )
    zero_at = kubelet.first_seen_at(0, answered_at) or time.monotonic()
    assert zero_at - answered_at >= IDLE_SECONDS - TICK_SECONDS - TICK_GAP_SLACK_SECONDS

    async def running_workers() -> int:
        return len(kubelet.workers)

    await eventually(
        running_workers,
        lambda running: running == 0,
        timeout_seconds=SETTLE_SECONDS,
        what="the worker process stopped",
    )
    events = await get_json(
        kubectl, "events", "-n", namespace, "--field-selector", "reason=ScaledWorkers"
    )
    messages = [event["message"] for event in events["items"]]
    assert any(m.startswith("Scaled workers from 1 to 0: idle for") for m in messages), messages

    # 0 -> query -> 1 -> answered: held in JetStream past its deadline while the worker starts.
    asked_at = time.monotonic()
    status, body, seconds = await ask(scheduler)
    assert_answered_whole_after_the_hold(status, body, seconds)
    scaled_up_at = kubelet.first_seen_at(1, asked_at)
    assert scaled_up_at is not None, kubelet.replicas_seen
    # On the first queued job, within one (stretched) tick of the operator's timer.
    assert scaled_up_at - asked_at <= TICK_SECONDS + TICK_GAP_SLACK_SECONDS, kubelet.replicas_seen
    assert [count for _, count in kubelet.replicas_seen] == [0, 1, 0, 1], kubelet.replicas_seen
    report(
        pytestconfig,
        f"scaled to zero {zero_at - answered_at:.1f} s after the answer; the query then:"
        f" answered in {seconds:.1f} s, {when(kubelet, asked_at)}",
    )
    assert len(kubelet.started) == 2


def when(kubelet: LocalKubelet, asked_at: float) -> str:
    """When the scale-up and the worker came, from `asked_at` (for the report)."""
    scaled = kubelet.first_seen_at(1, asked_at)
    started = next((at for at in kubelet.started if at > asked_at), None)
    scaled_text = f"{scaled - asked_at:.1f} s" if scaled is not None else "never"
    started_text = f"{started - asked_at:.1f} s" if started is not None else "never"
    return f"scaled 0 -> 1 after {scaled_text}, worker up after {started_text}"
