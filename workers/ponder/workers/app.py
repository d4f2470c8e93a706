"""The worker app factory: wires NATS, the engine, the pull loop, advisories and HTTP together.

    async with worker_app(settings) as worker:    # connected, subscribed, serving HTTP
        await worker.run(stop)                    # until `stop` is set, then drained

Everything lives inside the `async with` block (an AsyncExitStack), nothing at module level,
so tests and benchmarks can run several workers in one process, e.g. with a stub engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

from ponder.api import tracing
from ponder.api.jetstream import ensure_stream
from ponder.api.nats_renewal import following_renewed_credentials
from ponder.api.nats_tls import client_tls
from ponder.api.nats_urls import nats_servers
from ponder.api.wire import CancelMessage
from ponder.workers.advisories import MaxDeliveriesHandler
from ponder.workers.cancellation import CancelRegistry
from ponder.workers.config import WorkerSettings
from ponder.workers.consumer import Consumer
from ponder.workers.engine import Engine, VllmEngine
from ponder.workers.engine_watch import EngineWatch
from ponder.workers.liveness import SchedulerLiveness
from ponder.workers.metrics import WorkerMetrics
from ponder.workers.runner import JobRunner
from ponder.workers.server import build_app, serving
from ponder.workers.slot_report import SlotReport
from ponder.workers.slots import Slots

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_SECONDS = 5
"""Longest the NATS connection takes to flush on the way out (after the jobs drained)."""


@dataclass
class Worker:
    """A started worker: connected to NATS, subscribed, serving `/healthz` and `/metrics`."""

    settings: WorkerSettings
    nc: NatsClient
    engine: Engine
    consumer: Consumer
    metrics: WorkerMetrics
    slot_report: SlotReport | None = None
    """Reports the slot use to the operator while the worker runs and drains."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve jobs until `stop` is set, then drain (see Consumer.run)."""
        log.info(
            "worker %s serving %s with %d slots",
            self.settings.worker_id,
            ", ".join(self.settings.subjects.job_subjects),
            self.settings.slots,
        )
        async with asyncio.TaskGroup() as tasks:
            reporting = tasks.create_task(self.slot_report.run(stop)) if self.slot_report else None
            await self.consumer.run(stop)
            if reporting is not None:
                reporting.cancel()
        log.info("worker %s drained", self.settings.worker_id)

    async def health_problem(self) -> str | None:
        if not self.nc.is_connected:
            return "not connected to NATS"
        return (await self.engine.health()).problem


async def _log_nats_error(error: Exception) -> None:
    log.warning("NATS: %r", error)


@contextlib.asynccontextmanager
async def worker_app(
    settings: WorkerSettings, engine: Engine | None = None
) -> AsyncIterator[Worker]:
    """A started worker for `settings`; `engine` defaults to vLLM at `settings.vllm_url`."""
    subjects = settings.subjects
    async with contextlib.AsyncExitStack() as stack:
        provider = tracing.configure_tracing(
            "ponder-worker",
            {
                "service.namespace": settings.service.namespace,
                "service.instance.id": settings.worker_id,
                "ponder.service": settings.service.name,
            },
        )
        if provider is not None:
            stack.callback(provider.shutdown)  # last: exports the spans of the last jobs
        if engine is None:
            engine = await stack.enter_async_context(VllmEngine(settings.vllm_url))

        async def on_disconnected() -> None:
            if not (nc.is_closed or nc.is_draining):
                log.warning("lost the NATS connection; reconnecting")

        async def on_reconnected() -> None:
            log.info("reconnected to NATS at %s", nc.connected_url)

        nc = await nats.connect(
            nats_servers(settings.nats_url),
            name=f"ponder-worker {settings.worker_id}",
            # A NATS outage is waited out, not fatal: running generations continue and their
            # results are buffered until the connection is back.
            max_reconnect_attempts=-1,
            error_cb=_log_nats_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            drain_timeout=DRAIN_TIMEOUT_SECONDS,
            user_credentials=str(settings.nats_creds) if settings.nats_creds else None,
            tls=client_tls(settings.nats_ca),
            inbox_prefix=subjects.inbox_prefix,
        )
        stack.push_async_callback(nc.close)
        # nats-py gives up on a connection whose JWT expired: move to renewed credentials before.
        await stack.enter_async_context(following_renewed_credentials(nc, settings.nats_creds))
        js = nc.jetstream()
        if settings.ensure_stream:
            await ensure_stream(js, subjects, settings.service, settings.max_workers)

        metrics = WorkerMetrics(settings.worker_id)
        slots = Slots(settings.slots, settings.service.strategy.branches_per_job)
        metrics.track_slots(settings.slots, lambda: slots.in_use)
        # A job of a cancelled query is worthless until the longest deadline has passed.
        cancels = CancelRegistry(remember_seconds=settings.service.slo.max_deadline_ms / 1000)
        engine_watch = EngineWatch(
            engine.health,
            interval_seconds=settings.engine_check_seconds,
            on_change=lambda up: metrics.engine_up.set(1 if up else 0),
        )
        runner = JobRunner(
            nc=nc,
            js=js,
            engine=engine,
            settings=settings,
            metrics=metrics,
            cancels=cancels,
            liveness=SchedulerLiveness(nc, subjects),
            engine_watch=engine_watch,
        )
        consumer = Consumer(
            nc=nc,
            subjects=subjects,
            runner=runner,
            slots=slots,
            cancels=cancels,
            fetch_timeout_seconds=settings.fetch_timeout_seconds,
            drain_seconds=settings.drain_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            engine=engine_watch,
        )

        async def on_cancel(msg: Msg) -> None:
            try:
                cancel = CancelMessage.model_validate_json(msg.data)
            except ValidationError as error:
                log.warning("ignoring malformed cancel %r: %s", msg.data[:200], error)
                return
            consumer.on_cancel(cancel)

        # Every worker hears every cancel (no queue group): any of them may run the branches.
        await nc.subscribe(subjects.cancel, cb=on_cancel)
        await MaxDeliveriesHandler(
            nc=nc, js=js, subjects=subjects, worker_id=settings.worker_id, metrics=metrics
        ).subscribe()

        slot_report = SlotReport(
            nc=nc,
            subject=subjects.worker_stats,
            worker_id=settings.worker_id,
            slots=slots,
            jobs_running=lambda: len(consumer.running),
        )
        worker = Worker(
            settings=settings,
            nc=nc,
            engine=engine,
            consumer=consumer,
            metrics=metrics,
            slot_report=slot_report,
        )
        # Listening last: once the port answers, the worker is ready.
        http_app = build_app(
            worker.health_problem,
            metrics.registry,
            engine.exposition if isinstance(engine, VllmEngine) else None,
        )
        await stack.enter_async_context(serving(http_app, settings.http_host, settings.http_port))
        yield worker
        # The pull inboxes were dropped by the consumer's run (a job a last pull request
        # delivered after that is redelivered after the ack wait).
        # Results of the last jobs are flushed before the connection goes.
        await nc.drain()


async def serve(settings: WorkerSettings, engine: Engine | None = None) -> int:
    """Run a worker until SIGTERM or SIGINT, drain it, and return the exit status (0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with worker_app(settings, engine) as worker:
        await worker.run(stop)
    return 0
