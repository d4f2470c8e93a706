"""The JetStream stream and consumer of one ReasoningService, shared by every component.

The operator creates them on reconcile and deletes them in its finalizer; `make demo`, tests and
`python -m ponder.workers --ensure-stream` create them for local runs. Everyone derives them from
the same two pure functions, so the settings below are the only place they are decided.

Units: the pool's *slots* are counted in branches (one vLLM sequence each); JetStream counts
*messages*, and one message is one `BranchJob` of 1..k branches.
"""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from ponder.api.priority import PRIORITY_ORDER, Priority
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects

DUPLICATE_WINDOW_SECONDS = 120.0
"""How long JetStream remembers a `Nats-Msg-Id` (the job id) to drop a re-published job."""

MAX_AGE_SECONDS = 24 * 3600.0
"""Jobs and dead letters older than this are dropped."""

MAX_BYTES = 1 << 30
"""Stream size cap (1 GiB); past it new jobs are refused, not old ones dropped."""

MAX_MSG_BYTES = 1 << 20
"""Largest job (1 MiB): a prompt plus sampling parameters, with room for long contexts."""

MIN_MAX_WAITING = 512
"""Pull requests the consumer keeps waiting (nats-server's default)."""


def stream_config(
    subjects: ServiceSubjects,
    *,
    duplicate_window_seconds: float = DUPLICATE_WINDOW_SECONDS,
    max_age_seconds: float = MAX_AGE_SECONDS,
    max_bytes: int = MAX_BYTES,
    replicas: int = 1,
) -> StreamConfig:
    """The stream `PONDER_<NS>_<NAME>` holding the service's jobs and dead letters, kept on
    `replicas` servers of a JetStream cluster (`ServiceConfig.stream_replicas`)."""
    if duplicate_window_seconds > max_age_seconds:
        raise ValueError(
            f"duplicate_window_seconds={duplicate_window_seconds} exceeds "
            f"max_age_seconds={max_age_seconds}"
        )
    return StreamConfig(
        name=subjects.stream,
        description=f"Ponder branch jobs of {subjects.namespace}/{subjects.name}",
        subjects=subjects.stream_subjects,
        # Work queue: a job is removed once a worker acks it, so the stream *is* the queue and
        # its pending count is the queue depth the autoscaler reads. Dead letters on the same
        # stream have no consumer, so they are kept (until max_age) for an operator to inspect.
        retention=RetentionPolicy.WORK_QUEUE,
        # File storage: queued jobs survive a nats-server restart.
        storage=StorageType.FILE,
        # R3 on a three-node cluster: every write is acknowledged by a quorum (2 of 3), so a
        # job the scheduler got a PubAck for survives the loss of any one server, the stream's
        # leader included; the consumers inherit the stream's replicas.
        num_replicas=replicas,
        # The scheduler publishes with `Nats-Msg-Id: job_id`; a publish retried after a lost
        # PubAck inside this window is dropped by the server instead of running twice. Two
        # minutes covers any client retry loop with room to spare.
        duplicate_window=duplicate_window_seconds,
        # Jobs carry deadlines of at most minutes; a day bounds what a stuck pool accumulates
        # and how long dead letters are kept.
        max_age=max_age_seconds,
        max_bytes=max_bytes,
        max_msg_size=MAX_MSG_BYTES,
        # Backpressure, not data loss: a full queue refuses new jobs (the scheduler sees the
        # publish error and answers 503) instead of silently dropping the oldest queued jobs.
        discard=DiscardPolicy.NEW,
    )


def consumer_config(
    config: ServiceConfig, max_workers: int, priority: Priority = Priority.STANDARD
) -> ConsumerConfig:
    """The durable pull consumer of one priority class's jobs that every worker of the pool
    shares: `workers` (Standard), `workers-critical`, `workers-sheddable`.

    `max_workers` is the most worker pods the pool may run (the autoscaler's upper bound).
    """
    if max_workers < 1:
        raise ValueError(f"max_workers={max_workers} must be at least 1")
    subjects = ServiceSubjects(config.namespace, config.name)
    pool_slots = config.slots_per_worker * max_workers
    consumer = subjects.consumer_of(priority)
    return ConsumerConfig(
        name=consumer,
        durable_name=consumer,
        description=f"Ponder workers, {priority.value} jobs (pull, one slot per branch)",
        # One consumer per class, over subjects that do not overlap (a work-queue stream
        # requires it); workers ask Critical's first (docs/architecture.md, "Priority classes").
        filter_subject=subjects.jobs_of(priority),
        deliver_policy=DeliverPolicy.ALL,
        replay_policy=ReplayPolicy.INSTANT,
        # Explicit acks: a job leaves the queue only after its worker published the results.
        # A worker that dies mid-job never acks, so the job is redelivered to another worker.
        ack_policy=AckPolicy.EXPLICIT,
        # How long a silent worker keeps a job; workers send in-progress acks well inside it
        # during long generations, so only a dead or wedged worker loses its jobs.
        ack_wait=config.job_ack_wait_seconds,
        # Bounded (JetStream's default is forever): a job that kills or fails every worker it
        # touches stops after this many tries. Workers turn the MaxDeliver advisory into
        # FAILED branch results and a dead letter (ponder.workers.advisories).
        max_deliver=config.job_max_deliver,
        # In *jobs*, the unit JetStream counts. Every job holds at least one slot (branch), so
        # no more than `slots_per_worker * max_workers` jobs can be running in the whole pool;
        # at that bound the server stops handing out jobs that no worker could start, and a
        # pool with free slots is never held back by it. Each worker fetches no more than its
        # own free slots (ponder.workers.slots). Per class: any class may fill the pool.
        max_ack_pending=pool_slots,
        # Every worker keeps at most one pull request open.
        max_waiting=max(MIN_MAX_WAITING, 2 * max_workers),
    )


async def ensure_stream(
    js: JetStreamContext, subjects: ServiceSubjects, config: ServiceConfig, max_workers: int
) -> None:
    """Create the stream and the workers' consumers (one per priority class), or update them
    to these settings.

    Idempotent: safe to call on every reconcile and from several processes at once.
    """
    wanted = stream_config(subjects, replicas=config.stream_replicas)
    try:
        await js.stream_info(subjects.stream)
    except NotFoundError:
        await js.add_stream(wanted)
    else:
        await js.update_stream(wanted)
    # CONSUMER.CREATE with an existing name updates the editable fields (ack wait, max
    # deliver, max ack pending) and succeeds unchanged when they already match.
    for priority in PRIORITY_ORDER:
        await js.add_consumer(subjects.stream, consumer_config(config, max_workers, priority))


async def delete_stream(js: JetStreamContext, subjects: ServiceSubjects) -> None:
    """Delete the stream with its consumer, queued jobs and dead letters; absent is fine."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(subjects.stream)
