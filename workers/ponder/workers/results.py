"""Turn a job and what it generated into the `BranchResults` message its scheduler receives
(pure): one message per job, one `BranchResult` per branch inside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob, BranchResult, BranchResults, BranchStatus
from ponder.workers.generation import ChoiceOutput, Generation
from ponder.workers.settling import reader_of, settled_tokens


def branch_results(
    job: BranchJob,
    generation: Generation,
    status: BranchStatus,
    *,
    worker_id: str,
    generation_seconds: float = 0.0,
    error: str | None = None,
    rejected: bool = False,
) -> BranchResults:
    """The job's results message: one result per branch of `job`, in `branch_ids` order.

    Tokens are reported whatever the status, so the scheduler's `usage` counts what cancelled
    and expired branches spent (answer probes included); the prompt's tokens ride on the first
    branch only. With an answer reading, each result says where its answer settled. A branch
    that had finished before its job was stopped is COMPLETED whatever stopped the rest; one the
    worker stopped for low confidence is CANCELLED, however the job ended. With a confidence
    watch, each result carries the branch's confidence. The mean logprob is reported only when
    the job asked for it: a confidence watch asks vLLM for logprobs too, and a mean nobody asked
    for would weigh the branch's vote.
    """
    results = []
    for index, (branch_id, choice) in enumerate(
        zip(job.branch_ids, generation.choices, strict=True)
    ):
        results.append(
            BranchResult(
                query_id=job.query_id,
                job_id=job.job_id,
                branch_id=branch_id,
                status=_branch_status(status, choice),
                text=choice.text,
                finish_reason=choice.finish_reason,
                prompt_tokens=generation.prompt_tokens if index == 0 else 0,
                completion_tokens=choice.total_tokens,
                mean_logprob=choice.mean_logprob if job.sampling.logprobs else None,
                error=error,
                rejected=rejected,
                worker_id=worker_id,
                generation_seconds=generation_seconds,
                answer_tokens=_answer_tokens(job, choice),
                probes=choice.probes,
                probe_tokens=choice.probe_tokens,
                early_exit=choice.early_exit,
                confidence=choice.confidence.lowest if choice.confidence is not None else None,
                low_confidence=choice.low_confidence,
            )
        )
    return BranchResults(query_id=job.query_id, job_id=job.job_id, results=results)


def _branch_status(job_status: BranchStatus, choice: ChoiceOutput) -> BranchStatus:
    """A cancel or deadline stops what is still generating, not what has ended; a branch
    stopped for low confidence was cancelled by the worker, even in a completed job. An engine
    failure fails them all."""
    if job_status is BranchStatus.FAILED:
        return job_status
    if choice.low_confidence:
        return BranchStatus.CANCELLED
    if job_status in _STOPPED and choice.finish_reason is not None:
        return BranchStatus.COMPLETED
    return job_status


_STOPPED = frozenset({BranchStatus.CANCELLED, BranchStatus.EXPIRED})


def _answer_tokens(job: BranchJob, choice: ChoiceOutput) -> int | None:
    if job.answer is None:
        return None
    return settled_tokens(choice.text, choice.checkpoints, reader_of(job.answer))


@dataclass(frozen=True)
class JobIdentity:
    """Enough of a job to tell its scheduler that its branches failed."""

    query_id: str
    job_id: str
    branch_ids: tuple[str, ...]
    reply_subject: str


def salvage_identity(payload: bytes, subjects: ServiceSubjects) -> JobIdentity | None:
    """The identity fields of a job that failed validation, when they are all present and sane.

    Lets the worker answer a malformed job with FAILED results at once instead of leaving its
    scheduler waiting for the deadline. None when the payload is not even that much of a job.
    """
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    query_id, job_id = data.get("query_id"), data.get("job_id")
    branch_ids, reply_subject = data.get("branch_ids"), data.get("reply_subject")
    if not (isinstance(query_id, str) and query_id and isinstance(job_id, str) and job_id):
        return None
    if not (isinstance(reply_subject, str) and subjects.is_results_inbox(reply_subject)):
        return None
    if not (isinstance(branch_ids, list) and 0 < len(branch_ids) <= 256):
        return None
    if not all(isinstance(branch_id, str) and branch_id for branch_id in branch_ids):
        return None
    return JobIdentity(query_id, job_id, tuple(branch_ids), reply_subject)


def failed_results(
    identity: JobIdentity | BranchJob, error: str, *, worker_id: str
) -> BranchResults:
    """FAILED results without output for every branch of a job that never ran."""
    branch_ids: Sequence[str] = identity.branch_ids
    results = [
        BranchResult(
            query_id=identity.query_id,
            job_id=identity.job_id,
            branch_id=branch_id,
            status=BranchStatus.FAILED,
            error=error,
            worker_id=worker_id,
        )
        for branch_id in branch_ids
    ]
    return BranchResults(query_id=identity.query_id, job_id=identity.job_id, results=results)
