"""How a job ended decides what its scheduler hears and what JetStream is told (pure).

| outcome      | results published | message             | why                                    |
| ------------ | ----------------- | ------------------- | -------------------------------------- |
| completed    | COMPLETED         | ack                 |                                        |
| cancelled    | CANCELLED partial | ack                 | the scheduler no longer wants it       |
| expired      | EXPIRED partial   | ack                 | worthless after its deadline           |
| failed       | FAILED + error    | ack                 | vLLM refused the job (4xx) or a bug:   |
|              |                   |                     | another try would fail the same way;   |
|              |                   |                     | `rejected` when vLLM found the request |
|              |                   |                     | itself invalid (400: over the context) |
| retried      | none              | nak after a delay   | vLLM unreachable, 5xx, busy: another   |
|              |                   |                     | worker may succeed; after MaxDeliver   |
|              |                   |                     | tries the advisory turns it into FAILED|
| handed_back  | none              | nak at once         | draining: another worker takes it now  |
| orphaned     | none              | ack                 | its scheduler is gone: nobody would    |
|              |                   |                     | read the results (worker liveness)     |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ponder.api.wire import BranchStatus
from ponder.workers.engine_errors import EngineRejected, EngineUnavailable
from ponder.workers.metrics import JobOutcome


class AbortReason(StrEnum):
    """Why the worker stopped a job before the engine finished it."""

    CANCELLED = "cancelled"  # a cancel message named it
    DRAINING = "draining"  # the worker is shutting down and the grace period ended
    ORPHANED = "orphaned"  # the job's scheduler is gone


class Settle(StrEnum):
    """What the worker tells JetStream about the job's message."""

    ACK = "ack"
    NAK_NOW = "nak_now"
    NAK_LATER = "nak_later"


@dataclass(frozen=True)
class Disposition:
    status: BranchStatus | None  # the status of every branch result, None: publish nothing
    settle: Settle


DISPOSITIONS: dict[JobOutcome, Disposition] = {
    JobOutcome.COMPLETED: Disposition(BranchStatus.COMPLETED, Settle.ACK),
    JobOutcome.CANCELLED: Disposition(BranchStatus.CANCELLED, Settle.ACK),
    JobOutcome.EXPIRED: Disposition(BranchStatus.EXPIRED, Settle.ACK),
    JobOutcome.FAILED: Disposition(BranchStatus.FAILED, Settle.ACK),
    JobOutcome.RETRIED: Disposition(None, Settle.NAK_LATER),
    JobOutcome.HANDED_BACK: Disposition(None, Settle.NAK_NOW),
    JobOutcome.ORPHANED: Disposition(None, Settle.ACK),
}


def outcome_of(
    *,
    finished: bool,
    abort_reason: AbortReason | None,
    past_deadline: bool,
    error: BaseException | None,
) -> JobOutcome:
    """The outcome of a job whose engine call ended.

    `finished`: the engine returned normally; then the output is complete whatever else
    happened meanwhile. Otherwise the first that applies: a drain hands the job back, a cancel
    cancels it, a gone scheduler orphans it, a passed deadline expires it, an unavailable
    engine retries it, anything else fails it.
    """
    if finished:
        return JobOutcome.COMPLETED
    if abort_reason is AbortReason.DRAINING:
        return JobOutcome.HANDED_BACK
    if abort_reason is AbortReason.CANCELLED:
        return JobOutcome.CANCELLED
    if abort_reason is AbortReason.ORPHANED:
        return JobOutcome.ORPHANED
    if past_deadline:
        return JobOutcome.EXPIRED
    if isinstance(error, EngineUnavailable):
        return JobOutcome.RETRIED
    return JobOutcome.FAILED


def rejection_of(outcome: JobOutcome, error: BaseException | None) -> str | None:
    """The engine's message when a FAILED job is the request's own fault, else None.

    That is vLLM answering 400 (a prompt longer than the model's context, sampling it cannot
    do): its results are marked `rejected`, and a query whose every branch was rejected is the
    user's 400. Any other refusal (404: the served model name is wrong) is the service's fault.
    """
    if outcome is JobOutcome.FAILED and isinstance(error, EngineRejected) and error.status == 400:
        return error.reason
    return None
