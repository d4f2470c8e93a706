"""What a scheduler app holds while it runs, and how it is started (its lifespan's resources).

`start_state` opens everything on an `AsyncExitStack` the caller owns: the NATS connection,
the stream (with `--ensure-stream`), the dispatcher's results subscription and the verifier's
sessions, and closes them in reverse order when the stack unwinds.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace

import nats
from nats.aio.client import Client as NatsClient

from ponder.api.jetstream import ensure_stream
from ponder.api.nats_renewal import following_renewed_credentials
from ponder.api.nats_tls import client_tls
from ponder.api.nats_urls import nats_servers
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.scheduler.config import SchedulerSettings
from ponder.scheduler.dispatch import Dispatcher
from ponder.scheduler.load import LoadSnapshot, LoadTracker
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.scheduler.pool import PoolWatch
from ponder.scheduler.runner import RunnerDeps
from ponder.scheduler.stats import LatencyWindow
from ponder.scheduler.verifiers import Verifier, make_verifier


@dataclass
class SchedulerState:
    """What the routes share; created by the lifespan, gone with it."""

    config: ServiceConfig
    settings: SchedulerSettings
    subjects: ServiceSubjects
    nc: NatsClient
    dispatcher: Dispatcher
    verifier: Verifier | None
    load: LoadTracker
    window: LatencyWindow
    metrics: SchedulerMetrics
    started_at: int
    pool: PoolWatch | None = None
    """Whether the pool is cold; None when the service holds no query for a cold start."""

    async def load_snapshot(self) -> LoadSnapshot:
        """What the planner sees of the pool now, whether it is cold included."""
        snapshot = self.load.snapshot(time.monotonic())
        if self.pool is not None and await self.pool.cold():
            snapshot = replace(snapshot, cold=True)
        return snapshot

    @property
    def deps(self) -> RunnerDeps:
        return RunnerDeps(
            dispatcher=self.dispatcher,
            model=self.config.model,
            load=self.load,
            metrics=self.metrics,
            verifier=self.verifier,
            usage_settle_seconds=self.config.slo.usage_settle_ms / 1000.0,
        )


async def start_state(
    config: ServiceConfig,
    settings: SchedulerSettings,
    metrics: SchedulerMetrics,
    stack: contextlib.AsyncExitStack,
) -> SchedulerState:
    """Connect and subscribe; everything opened is closed by `stack`."""
    subjects = ServiceSubjects(config.namespace, config.name)
    nc = await nats.connect(
        nats_servers(settings.nats_url),
        name=f"ponder-scheduler-{settings.scheduler_id}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        user_credentials=str(settings.nats_creds) if settings.nats_creds else None,
        tls=client_tls(settings.nats_ca),
        inbox_prefix=subjects.inbox_prefix,
    )
    stack.push_async_callback(nc.close)
    # nats-py gives up on a connection whose JWT expired: move to renewed credentials before.
    await stack.enter_async_context(following_renewed_credentials(nc, settings.nats_creds))
    if settings.ensure_stream:
        await ensure_stream(nc.jetstream(), subjects, config, settings.max_workers)
    dispatcher = Dispatcher(nc, subjects, settings.scheduler_id, metrics)
    await dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    verifier = make_verifier(config.strategy.verifier)
    if verifier is not None:
        verifier = await stack.enter_async_context(verifier)
    load = LoadTracker()
    window = LatencyWindow()
    target_seconds = config.slo.target_latency_ms / 1000.0
    metrics.queue_depth.set_function(lambda: float(load.branches_outstanding))
    metrics.slo_attainment.set_function(
        lambda: window.attainment(target_seconds, time.monotonic()) or 0.0
    )
    return SchedulerState(
        config=config,
        settings=settings,
        subjects=subjects,
        nc=nc,
        dispatcher=dispatcher,
        verifier=verifier,
        load=load,
        window=window,
        metrics=metrics,
        started_at=int(time.time()),
        pool=PoolWatch(nc.jetstream(), subjects) if config.slo.cold_start_hold_ms > 0 else None,
    )
