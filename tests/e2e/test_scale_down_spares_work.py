"""Scale-down spares work, on the local control plane with real worker processes under load.

The operator runs as in test_operator.py (a local process, the chart's RBAC, real NATS); the
scheduler runs as a local process on the ServiceConfig the operator wrote; the engine is vLLM
on the CPU serving the shipped arithmetic model. The test plays the kubelet for the worker pods
kwok runs: for each worker pod it starts a local worker process whose worker id is the pod's
name (as `_pod_name_env` gives a real pod), and when the pod is deleted it sends that process
SIGTERM and gives it the pod's grace period, with the pod's own `--drain-seconds`.

The ReplicaSet that kube-controller-manager runs here is the one that reads the
pod-deletion-cost. Left to its other rules it deletes the newest pod (of those doubled up on a
node), never the oldest; so the oldest pod's worker is the one kept idle: it starts only once the
other two have pulled every job. vLLM is paused (SIGSTOP) while the pool is scaled, so the jobs
stay in progress however slowly this machine runs, and resumed after.

    3 -> 2  the idle, oldest pod is deleted; the two busy ones keep their branches
    2 -> 1  both are busy: the one deleted drains, and hands back what it could not finish
            (vLLM is still paused), which the other runs once vLLM resumes
    every query is answered with every branch it planned
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import WorkerStats
from ponder.local.cluster.commands import Kubectl
from ponder.local.nats import NatsServer
from ponder.local.scheduler import SchedulerProcess, scheduler_process
from ponder.local.vllm import VllmServer
from ponder.local.worker import WorkerProcess, worker_process
from ponder.operator.deletion_cost import DELETION_COST_ANNOTATION
from ponder.operator.render import worker_selector
from tests.cluster.eventually import eventually
from tests.e2e.local_kubelet import operator_config
from tests.e2e.test_operator import (  # noqa: F401 (operator, namespace: fixtures, used by name)
    SETTLE_SECONDS,
    OperatorProcess,
    apply,
    get_json,
    namespace,
    operator,
    service,
    wait_ready,
)
from tests.e2e.test_scale_from_zero import (  # noqa: F401 (shipped_vllm: a fixture)
    ANSWER,
    PROMPT,
    shipped_vllm,
)
from tests.integration.vllm_control import paused
from tests.report import report as shared_report

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

SLOTS = 4
"""Slots per worker: two workers' worth of branches is the load."""
QUERIES = 4
BRANCHES = 2
"""Each query's self-consistency branches, one per job: QUERIES x BRANCHES = 2 x SLOTS."""
GRACE_SECONDS = 15
"""spec.workers.terminationGracePeriodSeconds (its renderer leaves 10 s of it to hand back)."""
DEADLINE_MS = 150_000
"""The queries' deadline: far beyond the time vLLM is paused, so that none expires."""
POLL_SECONDS = 0.5
SPEC: dict[str, Any] = {
    "model": {"name": "ponder-arith", "servedName": "ponder-arith", "maxModelLen": 256},
    "workers": {
        "minReplicas": 1,
        "maxReplicas": 1,
        "slotsPerWorker": SLOTS,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
    },
    "strategy": {
        "default": "SelfConsistency",
        "branches": BRANCHES,
        "maxBranches": 16,
        "branchesPerJob": 1,
    },
    "budget": {"defaultTokens": 256, "maxTokens": 1024, "maxTokensPerBranch": 64},
    "slo": {"targetLatencyMilliseconds": 20_000, "maxDeadlineMilliseconds": 300_000},
    "autoscaling": {"mode": "Builtin"},
}


@dataclass(frozen=True)
class StoppedWorker:
    """How a deleted pod's worker process ended."""

    seconds: float
    """From SIGTERM to exit."""
    returncode: int | None
    jobs_draining: int
    """Jobs it was running when it stopped pulling."""
    jobs_handed_back: int
    """Of those, the jobs it could not finish within its drain and handed back."""


@dataclass
class PodKubelet:
    """Runs one local worker process per live worker pod, named after the pod."""

    kubectl: Kubectl
    namespace: str
    name: str
    config: ServiceConfig
    nats_url: str
    vllm_url: str
    log_dir: Path
    starting: bool = False
    """Start workers for new pods (off until the test has made its pods)."""
    held: set[str] = field(default_factory=set)
    """Pods whose workers are not started yet."""
    workers: dict[str, tuple[contextlib.AsyncExitStack, WorkerProcess]] = field(
        default_factory=dict
    )
    stopped: dict[str, StoppedWorker] = field(default_factory=dict)

    async def pods(self) -> list[dict[str, Any]]:
        """The service's worker pods, oldest first."""
        listed = await get_json(
            self.kubectl, "pods", "-n", self.namespace, "-l", worker_selector(self.name)
        )
        pods: list[dict[str, Any]] = listed["items"]
        return sorted(pods, key=lambda pod: pod["metadata"]["creationTimestamp"])

    async def run(self) -> None:
        """Follow the pods until cancelled; stop every worker on the way out."""
        try:
            while True:
                pods = await self.pods()
                live = {
                    pod["metadata"]["name"]: pod
                    for pod in pods
                    if not pod["metadata"].get("deletionTimestamp")
                }
                for pod_name in list(self.workers):
                    if pod_name not in live:
                        await self._stop(pod_name)
                if self.starting:
                    for pod_name, pod in live.items():
                        if pod_name not in self.workers and pod_name not in self.held:
                            await self._start(pod_name, pod)
                await asyncio.sleep(POLL_SECONDS)
        finally:
            for pod_name in list(self.workers):
                await self._stop(pod_name)

    async def _start(self, pod_name: str, pod: dict[str, Any]) -> None:
        stack = contextlib.AsyncExitStack()
        worker = await stack.enter_async_context(
            worker_process(
                self.config,
                nats_url=self.nats_url,
                vllm_url=self.vllm_url,
                worker_id=pod_name,
                drain_seconds=drain_seconds_of(pod),
                log_dir=self.log_dir,
            )
        )
        self.workers[pod_name] = (stack, worker)

    async def _stop(self, pod_name: str) -> None:
        """What the kubelet does to a deleted pod: SIGTERM, then the grace period to exit."""
        stack, worker = self.workers.pop(pod_name)
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(worker.process.wait, GRACE_SECONDS)
        seconds = time.monotonic() - started
        returncode = worker.process.poll()
        await stack.aclose()  # SIGKILLs it if it outlived the grace period
        log = (self.log_dir / f"worker-{pod_name}-{worker.port}.log").read_text(errors="replace")
        self.stopped[pod_name] = StoppedWorker(
            seconds=seconds,
            returncode=returncode,
            jobs_draining=logged_count(log, r"draining: (\d+) jobs running"),
            jobs_handed_back=logged_count(log, r"handed (\d+) unfinished jobs back"),
        )


def drain_seconds_of(pod: dict[str, Any]) -> float:
    """The `--drain-seconds` the operator rendered into the pod's worker loop."""
    for container in pod["spec"]["containers"]:
        command = container.get("command") or []
        if "--drain-seconds" in command:
            return float(command[command.index("--drain-seconds") + 1])
    raise AssertionError(f"no --drain-seconds in pod {pod['metadata']['name']}")


def logged_count(log: str, pattern: str) -> int:
    """The number a worker's log line gives (0 when it never logged it)."""
    found = re.findall(pattern, log)
    return sum(int(count) for count in found)


@dataclass
class WorkerReports:
    """The latest `WorkerStats` of each worker of the service, as the operator hears them."""

    latest: dict[str, WorkerStats] = field(default_factory=dict)

    async def on_message(self, message: Msg) -> None:
        stats = WorkerStats.model_validate_json(message.data)
        self.latest[stats.worker_id] = stats

    async def until(self, slot_use: dict[str, int], what: str) -> None:
        """Until every worker named reported exactly that slot use (a fresh report)."""
        asked_at = time.time()

        async def observe() -> dict[str, tuple[int, float]]:
            return {w: (s.slots_in_use, s.at) for w, s in self.latest.items()}

        await eventually(
            observe,
            lambda seen: all(
                w in seen and seen[w][0] == n and seen[w][1] >= asked_at - 1.0
                for w, n in slot_use.items()
            ),
            timeout_seconds=SETTLE_SECONDS,
            what=what,
        )


@pytest_asyncio.fixture
async def pool(
    operator: OperatorProcess,  # noqa: F811 (the fixture)
    kubectl: Kubectl,
    namespace: str,  # noqa: F811 (the fixture)
    nats: NatsServer,
    shipped_vllm: VllmServer,  # noqa: F811 (the fixture)
    stack_log_dir: Path,
) -> AsyncIterator[tuple[PodKubelet, SchedulerProcess, WorkerReports]]:
    """The service at one worker pod, its scheduler running, the stand-in kubelet watching (not
    starting anything yet), and a subscription to its workers' reports."""
    name = "spare"
    await apply(kubectl, namespace, service(name, **SPEC))
    await wait_ready(kubectl, namespace, name)
    config = await operator_config(kubectl, namespace, name)
    kubelet = PodKubelet(
        kubectl, namespace, name, config, nats.url, shipped_vllm.base_url, stack_log_dir
    )
    reports = WorkerReports()
    client = await _connect(nats.url)  # `nats` here is the server fixture
    await client.subscribe(ServiceSubjects(namespace, name).worker_stats, cb=reports.on_message)
    try:
        async with scheduler_process(config, nats_url=nats.url, log_dir=stack_log_dir) as scheduler:
            # Not a task group: a fixture's setup and teardown may run in different tasks.
            watching = asyncio.create_task(kubelet.run())
            try:
                yield kubelet, scheduler, reports
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
    finally:
        await client.close()


async def _connect(url: str) -> NatsClient:
    """A client of the session's NATS (module `nats`, which the fixture's name hides)."""
    return await nats.connect(url)


async def scale(kubectl: Kubectl, where: str, name: str, replicas: int) -> None:
    """Pin the pool at `replicas` through its bounds (the operator applies them at once)."""
    patch = {"spec": {"workers": {"minReplicas": replicas, "maxReplicas": replicas}}}
    await kubectl("patch", "rsvc", name, "-n", where, "--type", "merge", "-p", json.dumps(patch))


async def ask(scheduler: SchedulerProcess) -> tuple[int, dict[str, Any]]:
    """One self-consistency query of BRANCHES branches: status and body."""
    body = {
        "model": "ponder-arith",
        "prompt": PROMPT,
        "max_tokens": 48,
        "temperature": 0.0,  # greedy: the trained model answers the known problem
        "ponder": {
            "strategy": "self-consistency",
            "branches": BRANCHES,
            "deadline_ms": DEADLINE_MS,
        },
    }
    timeout = aiohttp.ClientTimeout(total=DEADLINE_MS / 1000 + SETTLE_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{scheduler.base_url}/v1/completions", json=body) as response,
    ):
        return response.status, json.loads(await response.text())


def assert_answered_whole(answers: list[tuple[int, dict[str, Any]]]) -> None:
    """Every query answered, with every branch it planned completed: none failed or lost one."""
    assert len(answers) == QUERIES
    for status, body in answers:
        assert status == 200, body
        ponder = body["ponder"]
        assert ponder["plan"]["branches"] == BRANCHES, ponder["plan"]
        assert ponder["branches_completed"] == BRANCHES, ponder
        assert ponder["answer"] == ANSWER, ponder


def report(config: pytest.Config, line: str) -> None:
    shared_report(config, "scale-down", line)


async def live_pods(kubelet: PodKubelet) -> list[dict[str, Any]]:
    return [pod for pod in await kubelet.pods() if not pod["metadata"].get("deletionTimestamp")]


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [pod["metadata"]["name"] for pod in pods]


def cost_of(pod: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = pod["metadata"].get("annotations") or {}
    return annotations.get(DELETION_COST_ANNOTATION)


async def grow_to(kubelet: PodKubelet, replicas: int) -> list[str]:
    """Scale the pool up one pod at a time, a second apart, so the pods' creation times (which
    the API server keeps to the second) order them."""
    await pods_at(kubelet, 1)
    for count in range(2, replicas + 1):
        await asyncio.sleep(1.1)
        await scale(kubelet.kubectl, kubelet.namespace, kubelet.name, count)
        await pods_at(kubelet, count)
    return names(await live_pods(kubelet))


async def pods_at(kubelet: PodKubelet, count: int) -> list[dict[str, Any]]:
    """The live worker pods, once there are `count` of them."""
    return await eventually(
        lambda: live_pods(kubelet),
        lambda pods: len(pods) == count,
        timeout_seconds=SETTLE_SECONDS,
        what=f"{count} worker pods",
    )


async def stopped_workers(kubelet: PodKubelet) -> set[str]:
    return set(kubelet.stopped)


async def test_scale_down_deletes_the_idle_worker_and_a_draining_one_hands_back_its_jobs(
    pool: tuple[PodKubelet, SchedulerProcess, WorkerReports],
    shipped_vllm: VllmServer,  # noqa: F811 (the fixture)
    pytestconfig: pytest.Config,
) -> None:
    kubelet, scheduler, reports = pool
    kubectl, where, name = kubelet.kubectl, kubelet.namespace, kubelet.name
    oldest, middle, newest = await grow_to(kubelet, 3)

    # The two newer pods' workers take the whole load; the oldest pod's starts only after.
    kubelet.held = {oldest}
    kubelet.starting = True
    await reports.until({middle: 0, newest: 0}, "the two newer pods' workers up")
    with paused(shipped_vllm):
        queries = [asyncio.create_task(ask(scheduler)) for _ in range(QUERIES)]
        await reports.until({middle: SLOTS, newest: SLOTS}, "the load pulled by two workers")
        kubelet.held = set()
        await reports.until({oldest: 0, middle: SLOTS, newest: SLOTS}, "the idle worker up")

        # 3 -> 2 under load: the idle pod goes, although it is the oldest.
        scaled_at = time.monotonic()
        await scale(kubectl, where, name, 2)
        pods = await pods_at(kubelet, 2)
        deleted_after = time.monotonic() - scaled_at
        assert names(pods) == [middle, newest], names(pods)
        assert [cost_of(pod) for pod in pods] == [str(SLOTS), str(SLOTS)]
        await eventually(
            lambda: stopped_workers(kubelet),
            lambda stopped: oldest in stopped,
            timeout_seconds=SETTLE_SECONDS,
            what="the idle worker stopped",
        )
    first = await asyncio.gather(*queries)
    assert_answered_whole(first)
    idle = kubelet.stopped[oldest]
    assert idle.returncode == 0, idle
    assert (idle.jobs_draining, idle.jobs_handed_back) == (0, 0), idle
    report(
        pytestconfig,
        f"3 -> 2 under load ({QUERIES * BRANCHES} branches on 2 of 3 workers): the idle oldest"
        f" pod deleted {deleted_after:.1f} s after the scale; it drained 0 jobs in"
        f" {idle.seconds:.1f} s; {QUERIES} queries answered whole",
    )

    # 2 -> 1 with both busy: the one deleted drains and hands back what it cannot finish.
    await reports.until({middle: 0, newest: 0}, "both workers idle again")
    with paused(shipped_vllm):
        queries = [asyncio.create_task(ask(scheduler)) for _ in range(QUERIES)]
        await reports.until({middle: SLOTS, newest: SLOTS}, "the load on both workers")
        await scale(kubectl, where, name, 1)
        pods = await pods_at(kubelet, 1)
        (victim,) = {middle, newest} - set(names(pods))
        await eventually(
            lambda: stopped_workers(kubelet),
            lambda stopped: victim in stopped,
            timeout_seconds=SETTLE_SECONDS + GRACE_SECONDS,
            what="the deleted busy worker drained and stopped",
        )
    second = await asyncio.gather(*queries)
    assert_answered_whole(second)
    busy = kubelet.stopped[victim]
    assert busy.returncode == 0, busy
    assert busy.seconds <= GRACE_SECONDS, busy
    # vLLM was paused through its whole drain: every job it held was handed back, none lost.
    assert (busy.jobs_draining, busy.jobs_handed_back) == (SLOTS, SLOTS), busy
    report(
        pytestconfig,
        f"2 -> 1 with both busy: the deleted worker drained {busy.jobs_draining} jobs, handed"
        f" {busy.jobs_handed_back} back and exited in {busy.seconds:.1f} s (grace"
        f" {GRACE_SECONDS} s); the other ran them; {QUERIES} queries answered whole",
    )
