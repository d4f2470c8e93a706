"""The pull loop: fetch no more jobs than free slots, the most important priority class first
(`pulling.PriorityPuller`), run each as an owned task, keep the long ones alive with
in-progress acks, stop on cancel messages, drain on shutdown.

Backpressure comes from pulling: a busy worker does not ask, so jobs wait in the stream (where
the autoscaler counts them) and go to whichever worker has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import CancelMessage
from ponder.workers.cancellation import CancelRegistry, cancel_matches
from ponder.workers.engine_watch import EngineWatch
from ponder.workers.generation import Generation
from ponder.workers.outcomes import AbortReason
from ponder.workers.pulling import PriorityPuller
from ponder.workers.runner import JobRunner, RunningJob, parse_job
from ponder.workers.slots import Slots

log = logging.getLogger(__name__)

FETCH_ERROR_BACKOFF_SECONDS = 1.0


class Consumer:
    """One worker's share of the pool's durable pull consumers (one per priority class)."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        subjects: ServiceSubjects,
        runner: JobRunner,
        slots: Slots,
        cancels: CancelRegistry,
        fetch_timeout_seconds: float,
        drain_seconds: float,
        heartbeat_seconds: float,
        engine: EngineWatch,
    ) -> None:
        self.puller = PriorityPuller(nc, subjects, self._delivered)
        self.runner = runner
        self.slots = slots
        self.cancels = cancels
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.drain_seconds = drain_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.engine = engine
        self.running: dict[RunningJob, asyncio.Task[None]] = {}
        self._jobs: asyncio.TaskGroup | None = None
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and run jobs until `stop` is set, then drain: running jobs get
        `drain_seconds` to finish, the rest are aborted and handed back to the stream."""
        async with asyncio.TaskGroup() as jobs:
            heartbeat = jobs.create_task(self._heartbeat())
            watch = jobs.create_task(self.engine.run())
            self._jobs, self._stop = jobs, stop
            await self.puller.start()
            try:
                await self._fetch_until(stop)
                # A pull request is never cancelled on our side (it could still deliver jobs
                # nobody reads): a lingering one ends within the fetch timeout, and whatever
                # it brings after the stop is handed back.
                await self.puller.wait_lingering(self.fetch_timeout_seconds + 1.0)
                await self._drain()
            finally:
                await self.puller.stop()
                self._jobs = None
            heartbeat.cancel()
            watch.cancel()

    def on_cancel(self, cancel: CancelMessage) -> None:
        """Remember `cancel` and abort the running jobs it names."""
        self.cancels.record(cancel, time.time())
        for running in self.running:
            if cancel_matches(cancel, running.job):
                log.info("cancelling job %s (%s)", running.job.job_id, cancel.reason)
                running.abort(AbortReason.CANCELLED)

    async def _heartbeat(self) -> None:
        """Tell JetStream that the jobs running for a while are in progress, so that only a
        dead or wedged worker loses its jobs.

        One loop for all jobs instead of a timer per job (most jobs end long before a
        heartbeat is due). Ticking every half heartbeat, a job's in-progress acks are never
        more than `heartbeat_seconds` apart, nor is its first after it was fetched.
        """
        interval = self.heartbeat_seconds / 2
        liveness = self.runner.liveness
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            due = [r for r in self.running if now - r.admitted_at >= interval]
            for running in due:
                try:
                    await running.msg.in_progress()
                except Exception as error:  # a lost heartbeat only risks a redelivery
                    log.warning("in-progress ack of job %s failed: %r", running.job.job_id, error)
            # A job whose scheduler died is aborted: nobody would read what it generates.
            await liveness.probe_all({r.job.reply_subject for r in due})
            for running in due:
                if liveness.gone(running.job.reply_subject):
                    running.abort(AbortReason.ORPHANED)

    async def _fetch_until(self, stop: asyncio.Event) -> None:
        while True:
            # No jobs while the engine is down: they wait in the stream for the other workers.
            if not await self.engine.wait_up(stop):
                return
            batch = await self.slots.wait_for_batch(stop)
            if batch == 0:
                return
            # Jobs are admitted as they arrive (`_delivered`), Critical's asked for first.
            try:
                await self.puller.fetch(batch, self.fetch_timeout_seconds)
            except Exception as error:
                log.warning("fetching jobs failed: %r", error)
                await _sleep_unless(stop, FETCH_ERROR_BACKOFF_SECONDS)

    async def _delivered(self, msg: Msg) -> None:
        """A job a pull request delivered: run it, or hand it back once stopping."""
        if self._jobs is None or self._stop is None or self._stop.is_set():
            await _hand_back(msg)
        else:
            self._admit(msg, self._jobs)

    def _admit(self, msg: Msg, jobs: asyncio.TaskGroup) -> None:
        job = parse_job(msg, self.runner.settings.subjects)
        if isinstance(job, ValidationError | str):
            # Malformed jobs take no slot; the task is tracked so the drain waits for it.
            jobs.create_task(self.runner.reject(msg, job))
            return
        running = RunningJob(job=job, msg=msg, generation=Generation.for_job(job))
        self.slots.acquire(running.branches)
        self.running[running] = jobs.create_task(self._run(running))

    async def _run(self, running: RunningJob) -> None:
        try:
            await self.runner.run(running)
        except Exception:
            # One job's bug must not take the worker (and every other job) down.
            log.exception("job %s crashed; JetStream will redeliver it", running.job.job_id)
        finally:
            self.slots.release(running.branches)
            del self.running[running]

    async def _drain(self) -> None:
        if not self.running:
            return
        log.info("draining: %d jobs running, %.1fs grace", len(self.running), self.drain_seconds)
        tasks = set(self.running.values())
        _, unfinished = await asyncio.wait(tasks, timeout=self.drain_seconds)
        for running, task in list(self.running.items()):
            if task in unfinished:
                running.abort(AbortReason.DRAINING)
        if unfinished:
            log.info("handed %d unfinished jobs back", len(unfinished))


async def _hand_back(msg: Msg) -> None:
    try:
        await msg.nak()
    except Exception as error:
        log.warning("handing back %s failed: %r", msg.subject, error)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
