"""The life of one fetched job: run it on the engine, publish its results, settle its message.

Order matters, and one NATS connection keeps it without a round trip: the job's results (one
`BranchResults` message) are published to the scheduler's inbox *before* the job is acked, on
the same connection. NATS delivers a connection's messages to the server in the order they were
published, and the server routes the results to the inbox before it processes the ack, so the
job never leaves the queue before its results reached the server. Neither a `flush` nor
`ack_sync` is needed for that, and both would cost a round trip per job:
- the worker dies or loses its connection before both went out: the job is not acked (or its ack
  was lost with the results) and JetStream redelivers it after the ack wait;
- the results went out but the ack was lost (connection dropped right after): the job is
  redelivered and run again, and the scheduler drops the second report of each branch by its
  branch id (or as late, when the query already answered).
Either way the scheduler gets every branch at least once and counts it once; what a lost ack
costs is a repeated generation, which is why the ack is not waited for: it is as rare as a
connection dropped between two writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import ValidationError

from ponder.api import tracing
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob, BranchResults
from ponder.workers import deadletters
from ponder.workers.cancellation import CancelRegistry
from ponder.workers.config import WorkerSettings
from ponder.workers.engine import Engine
from ponder.workers.engine_watch import EngineWatch
from ponder.workers.generation import Generation
from ponder.workers.job_trace import job_attributes, outcome_attributes
from ponder.workers.liveness import SchedulerLiveness
from ponder.workers.metrics import DeadLetterReason, JobOutcome, WorkerMetrics
from ponder.workers.outcomes import DISPOSITIONS, AbortReason, Settle, outcome_of, rejection_of
from ponder.workers.partials import publishing
from ponder.workers.results import branch_results, failed_results, salvage_identity

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RunningJob:
    """A job this worker admitted; the handle a cancel or a drain stops it by."""

    job: BranchJob
    msg: Msg
    generation: Generation
    admitted_at: float = field(default_factory=time.monotonic)
    abort_reason: AbortReason | None = None
    aborted_at: float | None = None
    """When the first abort came (monotonic), to time how soon the engine call was freed."""
    deadline: asyncio.Timeout | None = field(default=None, repr=False)
    """The engine call's deadline while it runs; moved to now to abort the call."""

    @property
    def branches(self) -> int:
        return len(self.job.branch_ids)

    def abort(self, reason: AbortReason) -> None:
        """Stop the job; the first reason wins. The engine call's deadline moves to now, which
        cancels the call and so closes its HTTP connection: vLLM aborts the sequences."""
        if self.abort_reason is None:
            self.abort_reason = reason
            self.aborted_at = time.monotonic()
        if self.deadline is not None and not self.deadline.expired():
            self.deadline.reschedule(0)  # any time in the past: at once


_ABORTED = frozenset({JobOutcome.CANCELLED, JobOutcome.ORPHANED})
"""Outcomes of a generation stopped part-way by a cancel or a dead scheduler."""


def parse_job(msg: Msg, subjects: ServiceSubjects) -> BranchJob | ValidationError | str:
    """The job in `msg`, or why it is not one: its validation error, or (a string) why its
    reply subject is not one this service's workers may publish to."""
    try:
        job = BranchJob.model_validate_json(msg.data)
    except ValidationError as error:
        return error
    if not subjects.is_results_inbox(job.reply_subject):
        return (
            f"foreign reply subject: {job.reply_subject[:200]!r} is not a results inbox of "
            f"{subjects.prefix}"
        )
    return job


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
        liveness: SchedulerLiveness,
        engine_watch: EngineWatch,
    ) -> None:
        self.nc = nc
        self.js = js
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.cancels = cancels
        self.liveness = liveness
        self.engine_watch = engine_watch

    async def run(self, running: RunningJob) -> None:
        """Run `running` to its end: results published (when any), message settled."""
        job = running.job
        span = tracing.tracer().start_span(
            f"process {running.msg.subject}",
            context=tracing.extract(running.msg.headers),  # the scheduler's wave
            kind=SpanKind.CONSUMER,
            attributes=job_attributes(job, running.msg.metadata.num_delivered),
        )
        with trace.use_span(span, end_on_exit=True):  # the engine's requests are its children
            await self._run(running, span)

    async def _run(self, running: RunningJob, span: Span) -> None:
        job = running.job
        if running.msg.metadata.num_delivered > 1:
            self.metrics.redelivered_branches.inc(running.branches)
        outcome, generation_seconds, error, rejected = await self._generate(running)
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
                rejected=rejected,
            )
            if not await self._publish(job.reply_subject, results):
                span.set_status(Status(StatusCode.ERROR, "results not published"))
                return  # not acked: JetStream redelivers it after the ack wait
            self.metrics.count_answers(results.results)
        await self._settle(running.msg, disposition.settle)
        self.metrics.count_job(outcome)
        self.metrics.count_tokens(
            running.generation.prompt_tokens, running.generation.completion_tokens
        )
        span.set_attributes(outcome_attributes(outcome, running.generation))
        if outcome in (JobOutcome.FAILED, JobOutcome.RETRIED):
            span.set_status(Status(StatusCode.ERROR, error or outcome.value))

    async def reject(self, msg: Msg, problem: ValidationError | str) -> None:
        """A malformed job, or one naming a reply subject of someone else: keep it as a dead
        letter and terminate it so it is never delivered again. A malformed job's scheduler is
        told when it can be (its identity intact, its inbox this service's); a foreign reply
        subject is never published to."""
        subjects = self.settings.subjects
        if isinstance(problem, ValidationError):
            reason = f"malformed job: {_summary(problem)}"
            identity = salvage_identity(msg.data, subjects)
            why = DeadLetterReason.MALFORMED
        else:
            reason, identity, why = problem, None, DeadLetterReason.FOREIGN_REPLY_SUBJECT
        log.warning("dead-lettering message %s: %s", msg.metadata.sequence.stream, reason)
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
        self.metrics.count_deadletter(why)

    async def _generate(self, running: RunningJob) -> tuple[JobOutcome, float, str | None, bool]:
        """(outcome, seconds spent generating, error text for the results, whether the engine
        rejected the request as invalid: then the error text is the engine's own message)."""
        job = running.job
        if running.abort_reason is AbortReason.DRAINING:
            return JobOutcome.HANDED_BACK, 0.0, None, False
        if running.abort_reason is AbortReason.CANCELLED or self.cancels.is_cancelled(
            job, time.time()
        ):
            return JobOutcome.CANCELLED, 0.0, None, False
        if time.time() >= job.deadline_at:
            return JobOutcome.EXPIRED, 0.0, None, False
        if running.abort_reason is AbortReason.ORPHANED or await self.liveness.before_start(
            job.reply_subject
        ):
            return JobOutcome.ORPHANED, 0.0, None, False
        started = time.monotonic()
        # The engine runs in this task, under the job's deadline (one timer, no second task):
        # the deadline, a cancel and a drain all stop it by firing that timer. In-progress acks
        # of long jobs come from the consumer's heartbeat, one timer for all running jobs.
        error: BaseException | None = None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + job.deadline_at - time.time()) as deadline:
                running.deadline = deadline
                # A `partials` job's text so far goes out while it generates, on this same
                # connection, so the results below follow every partial.
                async with publishing(job, running.generation, self.nc.publish):
                    await self.engine.generate(job, running.generation)
        except Exception as failure:
            # The deadline's own TimeoutError only says the engine was stopped (by the
            # deadline, or by an abort: `abort_reason` says which); anything else is the
            # engine's error.
            if not (isinstance(failure, TimeoutError) and deadline.expired()):
                error = failure
        finally:
            running.deadline = None
        freed_at = time.monotonic()
        generation_seconds = freed_at - started
        self.metrics.generation_seconds.observe(generation_seconds)
        outcome = outcome_of(
            finished=not deadline.expired() and error is None,
            abort_reason=running.abort_reason,
            past_deadline=deadline.expired(),
            error=error,
        )
        if outcome in _ABORTED and running.aborted_at is not None:
            self.metrics.cancel_to_free_seconds.observe(max(0.0, freed_at - running.aborted_at))
        if outcome in (JobOutcome.FAILED, JobOutcome.RETRIED):
            log.warning("job %s %s: %s", job.job_id, outcome.value, error)
        if outcome is JobOutcome.RETRIED:
            self.engine_watch.suspect()  # the engine was unavailable: is it down?
        rejection = rejection_of(outcome, error)
        if rejection is not None:
            return outcome, generation_seconds, rejection, True
        error_text = f"{type(error).__name__}: {error}" if error is not None else None
        return outcome, generation_seconds, error_text, False

    async def _publish(self, subject: str, results: BranchResults) -> bool:
        """Queue the job's results on the connection (no round trip: see the module docstring);
        False when NATS did not take them (closed, or the reconnect buffer is full)."""
        try:
            await self.nc.publish(subject, results.model_dump_json().encode())
        except Exception as error:
            log.warning(
                "publishing %d results to %s failed: %r", len(results.results), subject, error
            )
            return False
        return True

    async def _settle(self, msg: Msg, settle: Settle) -> None:
        try:
            if settle is Settle.ACK:
                # Behind the results on the same connection; not waited for (module docstring).
                await msg.ack()
            elif settle is Settle.NAK_LATER:
                await msg.nak(delay=self.settings.retry_delay_seconds)
            else:
                await msg.nak()
        except Exception as error:  # the ack wait will redeliver it; results are idempotent
            log.warning("settling message %s (%s) failed: %r", msg.subject, settle.value, error)


def _summary(error: ValidationError) -> str:
    """A one-line account of what is wrong with a job, naming the fields."""
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "message"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
