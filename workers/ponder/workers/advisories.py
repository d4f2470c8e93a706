"""Turn JetStream's MaxDeliver advisory into FAILED branches and a dead letter.

When a job has been delivered `job_max_deliver` times without an ack (its workers died, or its
engine was down every time), the consumer stops delivering it and publishes an advisory; the
message itself stays on the work-queue stream forever. One worker of the pool (a queue group)
takes each advisory: it tells the job's scheduler that the branches failed, keeps the job as a
dead letter and deletes it from the stream. If no worker is running when the advisory fires, the
job stays on the stream until an operator looks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from ponder.api.priority import PRIORITY_ORDER
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob
from ponder.workers import deadletters
from ponder.workers.metrics import DeadLetterReason, JobOutcome, WorkerMetrics
from ponder.workers.results import failed_results, salvage_identity

log = logging.getLogger(__name__)

QUEUE_GROUP = "ponder-workers"


@dataclass(frozen=True)
class MaxDeliveries:
    """The parts of `io.nats.jetstream.advisory.v1.max_deliver` the worker uses."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


def parse_advisory(data: bytes) -> MaxDeliveries | None:
    """The advisory in `data`, or None when it is not a max-deliveries advisory."""
    try:
        advisory = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(advisory, dict):
        return None
    if advisory.get("type") != "io.nats.jetstream.advisory.v1.max_deliver":
        return None
    stream, consumer = advisory.get("stream"), advisory.get("consumer")
    stream_seq, deliveries = advisory.get("stream_seq"), advisory.get("deliveries")
    if not (isinstance(stream, str) and isinstance(consumer, str)):
        return None
    if not (isinstance(stream_seq, int) and isinstance(deliveries, int)):
        return None
    return MaxDeliveries(stream, consumer, stream_seq, deliveries)


class MaxDeliveriesHandler:
    """Handles the service's MaxDeliver advisories (one worker of the pool per advisory)."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        js: JetStreamContext,
        subjects: ServiceSubjects,
        worker_id: str,
        metrics: WorkerMetrics,
    ) -> None:
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.worker_id = worker_id
        self.metrics = metrics

    async def subscribe(self) -> list[Subscription]:
        """Hear the advisories of every priority class's consumer."""
        return [
            await self.nc.subscribe(
                self.subjects.max_deliveries_advisory(priority),
                queue=QUEUE_GROUP,
                cb=self.on_advisory,
            )
            for priority in PRIORITY_ORDER
        ]

    async def on_advisory(self, msg: Msg) -> None:
        advisory = parse_advisory(msg.data)
        if advisory is None or advisory.stream != self.subjects.stream:
            log.warning("ignoring advisory %r", msg.data[:200])
            return
        try:
            await self._fail_job(advisory)
        except Exception:
            log.exception("handling max deliveries of message %d failed", advisory.stream_seq)

    async def _fail_job(self, advisory: MaxDeliveries) -> None:
        try:
            stored = await self.js.get_msg(self.subjects.stream, advisory.stream_seq)
        except NotFoundError:
            return  # already handled (or acked at the last moment)
        payload = stored.data or b""
        reason = f"max deliveries reached ({advisory.deliveries} attempts)"
        log.warning("job at stream sequence %d: %s", advisory.stream_seq, reason)
        try:
            job: BranchJob | None = BranchJob.model_validate_json(payload)
        except ValidationError:
            job = None
        if job is not None and not self.subjects.is_results_inbox(job.reply_subject):
            job = None  # a forged reply subject: tell nobody
        identity = job if job is not None else salvage_identity(payload, self.subjects)
        if identity is not None:
            results = failed_results(identity, reason, worker_id=self.worker_id)
            await self.nc.publish(identity.reply_subject, results.model_dump_json().encode())
            # Flushed before the job is deleted below: a rare path, so the round trip is cheap.
            await self.nc.flush()
        letter = deadletters.dead_letter(
            reason, stored.subject or self.subjects.jobs, payload, self.worker_id
        )
        await deadletters.keep(self.js, self.subjects, letter, advisory.stream_seq)
        # Deleted last: if anything above fails, the job is still on the stream to look at.
        await self.js.delete_msg(self.subjects.stream, advisory.stream_seq)
        self.metrics.count_job(JobOutcome.MAX_DELIVERIES)
        self.metrics.count_deadletter(DeadLetterReason.MAX_DELIVERIES)
