"""What happened to one query: the runner fills a `QueryOutcome`, the HTTP edge renders it.

Pure data, apart from the runner (which does the I/O) so that `response.py` and the metrics
code can read an outcome without importing NATS or HTTP clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.api.wire import BranchStatus
from ponder.scheduler.planner import Plan
from ponder.scheduler.strategies import STRATEGIES, StrategyRegistry
from ponder.scheduler.strategies.base import FinalAnswer, LaunchMode, ScoredBranch


class NoAnswerReason:
    """Why a query ended without an answer; `response.py` maps each to an HTTP status."""

    DEADLINE = "deadline"  # nothing answerable before the deadline (HTTP 504)
    FAILED = "failed"  # every branch ended without an answer (HTTP 502)
    UNAVAILABLE = "unavailable"  # jobs could not be queued (HTTP 503)
    REJECTED = "rejected"  # the engine found the request invalid on every branch (HTTP 400)
    TOO_LARGE = "too_large"  # a job would be larger than the queue takes (HTTP 413)


@dataclass
class QueryOutcome:
    """What happened to one query; the HTTP edge renders it (response.py)."""

    plan: Plan
    answer: FinalAnswer | None
    branches: list[ScoredBranch] = field(default_factory=list)  # results, in arrival order
    launched: int = 0
    unreported: int = 0  # cancelled at the end, and no result within the usage settle time
    waves: int = 0
    deadline_exceeded: bool = False
    finished_by_strategy: bool = False
    latency_seconds: float = 0.0
    no_answer_reason: str | None = None
    no_answer_detail: str = ""

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of every branch result received."""
        return sum(branch.result.prompt_tokens for branch in self.branches)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens of every branch result received."""
        return sum(branch.result.completion_tokens for branch in self.branches)

    def count(self, *statuses: BranchStatus) -> int:
        """Branch results received with one of `statuses`."""
        return sum(1 for branch in self.branches if branch.result.status in statuses)


def stopped_early(outcome: QueryOutcome) -> bool:
    """The strategy answered before its branch cap had completed: an adaptive query that was
    certain early, a vote decided before its last branch. Not a deadline or a failure."""
    return (
        outcome.finished_by_strategy
        and outcome.answer is not None
        and not outcome.deadline_exceeded
        and outcome.count(BranchStatus.COMPLETED) < outcome.plan.query.max_branches
    )


def branches_saved(outcome: QueryOutcome, strategies: StrategyRegistry = STRATEGIES) -> int:
    """Branches left unlaunched because the strategy finished early; only a strategy that
    launches in waves stops short of `max_branches` by design, so any other saves none."""
    query = outcome.plan.query
    if not outcome.finished_by_strategy:
        return 0
    if strategies[query.strategy].launch_mode is not LaunchMode.WAVES:
        return 0
    return max(0, query.max_branches - outcome.launched)


def engine_rejection(outcome: QueryOutcome) -> str | None:
    """The engine's message when it rejected every branch result received as an invalid
    request (e.g. a prompt longer than the model's context), else None.

    One completed or otherwise failed branch means the request itself can be served, so the
    query is no client error.
    """
    results = [branch.result for branch in outcome.branches]
    if not results or not all(result.rejected for result in results):
        return None
    return next((result.error for result in results if result.error), "rejected by the engine")


def why_no_answer(
    outcome: QueryOutcome, dispatch_error: str | None, *, too_large: bool = False
) -> tuple[str, str]:
    """(reason, detail for the client) of a query that ended without an answer;
    `dispatch_error`: why a launch was not queued (`too_large`: its jobs were over the queue's
    message size), if one was not. Never the branches' own errors, which are for the log."""
    # First: a request the engine cannot serve stays invalid however long it waits.
    rejection = engine_rejection(outcome)
    if rejection is not None:
        return NoAnswerReason.REJECTED, rejection
    plan = outcome.plan
    if outcome.deadline_exceeded:
        return (
            NoAnswerReason.DEADLINE,
            f"no branch finished within ponder.deadline_ms={plan.deadline_ms}"
            + cold_start_note(plan.hold_ms),
        )
    if dispatch_error is not None and too_large:
        return NoAnswerReason.TOO_LARGE, dispatch_error
    if dispatch_error is not None and not outcome.count(BranchStatus.COMPLETED):
        return NoAnswerReason.UNAVAILABLE, dispatch_error
    failed = outcome.count(BranchStatus.FAILED)
    return (
        NoAnswerReason.FAILED,
        f"none of {outcome.launched} branches produced an answer ({failed} failed)",
    )


def cold_start_note(hold_ms: int) -> str:
    """What a deadline message adds for a query that found no worker and waited for one."""
    if not hold_ms:
        return ""
    return f" and the cold-start hold of {hold_ms} ms (spec.autoscaling.scaleToZero.holdSeconds)"
