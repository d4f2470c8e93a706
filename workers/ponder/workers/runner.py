"""The life of one fetched job: run it on the engine, publish its results, settle its message.

Order matters: results are published to the scheduler's inbox and flushed *before* the job is
acked, so a worker that dies in between causes a redelivery (a duplicate result the scheduler
drops by branch id), never a lost branch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from ponder.api.wire import BranchJob, BranchResult
from ponder.workers import deadletters
from ponder.workers.cancellation import CancelRegistry
from ponder.workers.config import WorkerSettings
from ponder.workers.engine import Engine
from ponder.workers.generation import Generation
from ponder.workers.metrics import DeadLetterReason, JobOutcome, WorkerMetrics
from ponder.workers.outcomes import DISPOSITIONS, AbortReason, Settle, outcome_of
from ponder.workers.results import branch_results, failed_results, salvage_identity
from pydantic import ValidationError

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_SECONDS = 5  # nats-py wants whole seconds


@dataclass(eq=False)
class RunningJob:
    """A job this worker admitted; the handle a cancel or a drain stops it by."""

    job: BranchJob
    msg: Msg
    generation: Generation
    abort_reason: AbortReason | None = None
    engine_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def branches(self) -> int:
        return len(self.job.branch_ids)

    def abort(self, reason: AbortReason) -> None:
        """Stop the job; the first reason wins. Cancelling the engine call closes its HTTP
        connection, which makes vLLM abort the sequences."""
        if self.abort_reason is None:
            self.abort_reason = reason
        if self.engine_task is not None:
            self.engine_task.cancel()


def parse_job(msg: Msg) -> BranchJob | ValidationError:
    """The job in `msg`, or why it is not one."""
    try:
        return BranchJob.model_validate_json(msg.data)
    except ValidationError as error:
        return error


class JobRunner:
    """Runs admitted jobs and rejects malformed ones; shared by all jobs of a worker."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        js: JetStreamContext,
        engine: Engine,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        cancels: CancelRegistry,
    ) -> None:
        self.nc = nc
        self.js = js
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.cancels = cancels

    async def run(self, running: RunningJob) -> None:
        """Run `running` to its end: results published (when any), message settled."""
        job = running.job
        if running.msg.metadata.num_delivered > 1:
            self.metrics.redelivered_branches.inc(running.branches)
        outcome, generation_seconds, error = await self._generate(running)
        disposition = DISPOSITIONS[outcome]
        log.debug("job %s of query %s: %s", job.job_id, job.query_id, outcome.value)
        if disposition.status is not None:
            results = branch_results(
                job,
                running.generation,
                disposition.status,
                worker_id=self.settings.worker_id,
                generation_seconds=generation_seconds,
                error=error,
            )
            if not await self._publish(job.reply_subject, results):
                return  # not acked: JetStream redelivers it after the ack wait
        await self._settle(running.msg, disposition.settle)
        self.metrics.count_job(outcome)
        self.metrics.count_tokens(
            running.generation.prompt_tokens, running.generation.completion_tokens
        )

    async def reject(self, msg: Msg, error: ValidationError) -> None:
        """A malformed job: tell its scheduler when it can be told, keep it as a dead letter,
        and terminate it so it is never delivered again."""
        reason = f"malformed job: {_summary(error)}"
        log.warning("dead-lettering message %s: %s", msg.metadata.sequence.stream, reason)
        identity = salvage_identity(msg.data)
        if identity is not None:
            results = failed_results(identity, reason, worker_id=self.settings.worker_id)
            await self._publish(identity.reply_subject, results)
        letter = deadletters.dead_letter(reason, msg.subject, msg.data, self.settings.worker_id)
        try:
            await deadletters.keep(
                self.js, self.settings.subjects, letter, msg.metadata.sequence.stream
            )
        except Exception:
            log.exception("could not keep the dead letter; the job is terminated all the same")
        await msg.term()
        self.metrics.count_job(JobOutcome.MALFORMED)
        self.metrics.count_deadletter(DeadLetterReason.MALFORMED)

    async def _generate(self, running: RunningJob) -> tuple[JobOutcome, float, str | None]:
        """(outcome, seconds spent generating, error text for the results)."""
        job = running.job
        if running.abort_reason is AbortReason.DRAINING:
            return JobOutcome.HANDED_BACK, 0.0, None
        if running.abort_reason is AbortReason.CANCELLED or self.cancels.is_cancelled(
            job, time.time()
        ):
            return JobOutcome.CANCELLED, 0.0, None
        if time.time() >= job.deadline_at:
            return JobOutcome.EXPIRED, 0.0, None
        started = time.monotonic()
        task = asyncio.create_task(self.engine.generate(job, running.generation))
        running.engine_task = task
        try:
            past_deadline = await self._supervise(running, task)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        generation_seconds = time.monotonic() - started
        self.metrics.generation_seconds.observe(generation_seconds)
        error = None if task.cancelled() else task.exception()
        finished = not task.cancelled() and error is None
        outcome = outcome_of(
            finished=finished,
            abort_reason=running.abort_reason,
            past_deadline=past_deadline,
            error=error,
        )
        if outcome in (JobOutcome.FAILED, JobOutcome.RETRIED):
            log.warning("job %s %s: %s", job.job_id, outcome.value, error)
        error_text = f"{type(error).__name__}: {error}" if error is not None else None
        return outcome, generation_seconds, error_text

    async def _supervise(self, running: RunningJob, task: asyncio.Task[None]) -> bool:
        """Wait for the engine, telling JetStream the job is in progress every heartbeat.

        Stops the engine at the job's deadline; returns whether the deadline stopped it.
        """
        deadline_at = running.job.deadline_at
        while True:
            remaining = deadline_at - time.time()
            if remaining <= 0:
                task.cancel()
                await asyncio.wait({task})
                return not _finished(task)
            done, _ = await asyncio.wait(
                {task}, timeout=min(remaining, self.settings.heartbeat_seconds)
            )
            if done:
                return False
            try:
                await running.msg.in_progress()
            except Exception as error:  # a lost heartbeat only risks a redelivery
                log.warning("in-progress ack of job %s failed: %r", running.job.job_id, error)

    async def _publish(self, subject: str, results: list[BranchResult]) -> bool:
        """Publish results on core NATS and flush them out; False when NATS did not take them."""
        try:
            for result in results:
                await self.nc.publish(subject, result.model_dump_json().encode())
            await self.nc.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        except Exception as error:
            log.warning("publishing %d results to %s failed: %r", len(results), subject, error)
            return False
        return True

    async def _settle(self, msg: Msg, settle: Settle) -> None:
        try:
            if settle is Settle.ACK:
                # Acked synchronously: once this returns, the job is off the queue for good.
                await msg.ack_sync()
            elif settle is Settle.NAK_LATER:
                await msg.nak(delay=self.settings.retry_delay_seconds)
            else:
                await msg.nak()
        except Exception as error:  # the ack wait will redeliver it; results are idempotent
            log.warning("settling message %s (%s) failed: %r", msg.subject, settle.value, error)


def _finished(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _summary(error: ValidationError) -> str:
    """A one-line account of what is wrong with a job, naming the fields."""
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "message"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
