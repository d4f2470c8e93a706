"""A stand-in kubelet for e2e tests with a real data plane: it runs one local worker process
(`python -m ponder.workers`) per replica that a service's worker Deployment asks for, after a
pod's start-up delay, and stops one whenever the Deployment asks for fewer. kwok's pods stand for
them in the cluster; nothing runs in those. `served_locally` runs it beside the service's
scheduler, both on the ServiceConfig the operator wrote into the service's ConfigMap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from ponder.api.service_config import ServiceConfig
from ponder.local.cluster.commands import Kubectl
from ponder.local.scheduler import SchedulerProcess, scheduler_process
from ponder.local.worker import worker_process
from tests.e2e.test_operator import get_json, worker_replicas

POD_START_SECONDS = 5.0
"""How long after the Deployment asks for a worker its process starts (a GPU pod: minutes)."""
POLL_SECONDS = 0.5
"""How often the stand-in kubelet reads the worker Deployment."""


@dataclass
class LocalKubelet:
    """Runs one local worker process per replica the worker Deployment asks for."""

    kubectl: Kubectl
    namespace: str
    name: str
    config: ServiceConfig
    nats_url: str
    vllm_url: str
    log_dir: Path
    replicas_seen: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time, spec.replicas) at every change the kubelet saw."""
    started: list[float] = field(default_factory=list)
    """When each worker process was up (connected, pulling)."""
    workers: list[contextlib.AsyncExitStack] = field(default_factory=list)

    def first_seen_at(self, replicas: int, after: float) -> float | None:
        """When the Deployment was first seen at `replicas` after `after`."""
        return next(
            (at for at, count in self.replicas_seen if at > after and count == replicas), None
        )

    async def run(self) -> None:
        """Follow the Deployment until cancelled; stop every worker on the way out."""
        try:
            while True:
                replicas = await worker_replicas(self.kubectl, self.namespace, self.name)
                if not self.replicas_seen or self.replicas_seen[-1][1] != replicas:
                    self.replicas_seen.append((time.monotonic(), replicas))
                while len(self.workers) > replicas:
                    await self.workers[-1].aclose()  # drained and gone before it is not counted
                    self.workers.pop()
                if len(self.workers) < replicas:
                    await asyncio.sleep(POD_START_SECONDS)  # the pod's start
                    await self._start_worker()
                    continue
                await asyncio.sleep(POLL_SECONDS)
        finally:
            while self.workers:
                await self.workers.pop().aclose()

    async def _start_worker(self) -> None:
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(
            worker_process(
                self.config,
                nats_url=self.nats_url,
                vllm_url=self.vllm_url,
                worker_id=f"worker-{len(self.started)}",
                log_dir=self.log_dir,
            )
        )
        self.workers.append(stack)
        self.started.append(time.monotonic())


async def operator_config(kubectl: Kubectl, where: str, name: str) -> ServiceConfig:
    """The ServiceConfig the operator rendered into the service's ConfigMap."""
    config_map = await get_json(kubectl, "configmap", f"{name}-config", "-n", where)
    return ServiceConfig.model_validate_json(config_map["data"]["service.json"])


@contextlib.asynccontextmanager
async def served_locally(
    kubectl: Kubectl, namespace: str, name: str, nats_url: str, vllm_url: str, log_dir: Path
) -> AsyncIterator[tuple[LocalKubelet, SchedulerProcess, ServiceConfig]]:
    """Service `name` (applied, Ready) served by a local scheduler and the stand-in kubelet's
    workers on its operator-rendered ServiceConfig, until the block ends."""
    config = await operator_config(kubectl, namespace, name)
    kubelet = LocalKubelet(kubectl, namespace, name, config, nats_url, vllm_url, log_dir)
    async with scheduler_process(config, nats_url=nats_url, log_dir=log_dir) as scheduler:
        watching = asyncio.create_task(kubelet.run())
        try:
            yield kubelet, scheduler, config
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
