"""Recorded branch results for strategy table tests, and a driver that plays them back.

`drive(strategy, respond)` does what the runner does, minus the I/O: it launches what the
strategy asks for, answers each branch with the recorded `Reply` (tokens capped at the
request's `max_tokens`, as vLLM would), extracts the answer from `continuation + text`, and
feeds the branches back in launch order until the strategy finishes or nothing is outstanding.
On the way it checks what must always hold: spent plus reserved tokens stay within the budget,
and no more than `max_branches` branches are launched.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ponder.api.answers import extract_answer
from ponder.api.service_config import BeamConfig, BudgetForcingConfig, ExtractorKind
from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchResult, BranchStatus, Endpoint
from ponder.scheduler.strategies import make_strategy
from ponder.scheduler.strategies.base import (
    BranchRequest,
    Decision,
    FinalAnswer,
    Finish,
    Launch,
    PlannedQuery,
    ScoredBranch,
    ScoreMode,
    Strategy,
)


def planned(
    strategy: StrategyName = StrategyName.SELF_CONSISTENCY, **changes: object
) -> PlannedQuery:
    """A planned query with small, explicit defaults; `changes` override fields."""
    query = PlannedQuery(
        query_id="q1",
        strategy=strategy,
        endpoint=Endpoint.COMPLETIONS,
        question="Q:23+48-17",
        prompt="Q:23+48-17 A:",
        messages=None,
        branches=4,
        max_branches=16,
        budget_tokens=10_000,
        max_tokens_per_branch=100,
        temperature=0.8,
        top_p=1.0,
        stop=(),
        seed=None,
        confidence=0.95,
        extractor=ExtractorKind.AUTO,
        has_verifier=False,
        beam=BeamConfig(),
        budget_forcing=BudgetForcingConfig(),
        wave_size=4,
    )
    return replace(query, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reply:
    """What the engine (and the verifier) answered for one branch."""

    text: str
    tokens: int = 10
    status: BranchStatus = BranchStatus.COMPLETED
    finish_reason: str = "stop"
    score: float | None = None  # the verifier's, handed over only when the request asks
    mean_logprob: float | None = None
    confidence: float | None = None  # lowest group confidence, only when the request asks


FAILED = Reply("", tokens=0, status=BranchStatus.FAILED, finish_reason="error")

_ids = itertools.count()


def scored(
    request: BranchRequest,
    reply: Reply,
    extractor: ExtractorKind = ExtractorKind.AUTO,
) -> ScoredBranch:
    """The ScoredBranch the runner would hand over for `reply` to `request`."""
    tokens = min(reply.tokens, request.max_tokens)
    finish_reason: str | None = (
        "length" if reply.tokens > request.max_tokens else reply.finish_reason
    )
    status, text = reply.status, reply.text
    confidence = reply.confidence if request.confidence else None
    stop_below = request.confidence_stop_below
    low_confidence = confidence is not None and stop_below is not None and confidence < stop_below
    if low_confidence:
        # The worker stops it part-way, as soon as a window falls below the threshold.
        status, text, tokens, finish_reason = BranchStatus.CANCELLED, text[:2], tokens // 2, None
    number = next(_ids)
    result = BranchResult(
        query_id="q1",
        job_id=f"job-{number}",
        branch_id=f"branch-{number}",
        status=status,
        text=text,
        finish_reason=finish_reason,
        completion_tokens=tokens,
        mean_logprob=reply.mean_logprob,
        confidence=confidence,
        low_confidence=low_confidence,
    )
    answer = extract_answer(request.continuation + text, extractor)
    score = reply.score if request.score != ScoreMode.NONE else None
    return ScoredBranch(request=request, result=result, answer=answer, score=score)


Respond = Callable[[BranchRequest, int], Reply]
"""The recorded reply for a branch of `request`, `index` counting launched branches from 0."""


def in_order(*replies: Reply | str) -> Respond:
    """Replies handed out in launch order (strings are completed replies of 10 tokens)."""
    recorded = [Reply(r) if isinstance(r, str) else r for r in replies]

    def respond(_request: BranchRequest, index: int) -> Reply:
        return recorded[index]

    return respond


@dataclass
class Run:
    """What happened when a strategy was driven to its end."""

    strategy: Strategy
    requests: list[BranchRequest] = field(default_factory=list)  # as launched, in order
    branches: list[ScoredBranch] = field(default_factory=list)  # as handed back, in order
    decisions: list[Decision] = field(default_factory=list)
    final: FinalAnswer | None = None
    finished: bool = False  # by a Finish decision (else by best_so_far with nothing left)
    begun: list[BranchRequest] = field(default_factory=list)  # what begin() returned

    @property
    def launched(self) -> int:
        return sum(r.n for r in self.requests)

    @property
    def spent_tokens(self) -> int:
        return sum(b.result.completion_tokens for b in self.branches)

    @property
    def launch_sizes(self) -> list[int]:
        """Branches per Launch decision (begin() counts as the first)."""
        sizes = [sum(r.n for r in self.begun)]
        sizes += [sum(r.n for r in d.requests) for d in self.decisions if isinstance(d, Launch)]
        return sizes


def drive(strategy: Strategy, respond: Respond, max_branches_seen: int = 10_000) -> Run:
    """Play `strategy` against recorded replies, checking the budget and branch cap throughout."""
    query = strategy.query
    run = Run(strategy=strategy)
    outstanding: deque[BranchRequest] = deque()
    reserved = 0

    def launch(requests: Sequence[BranchRequest]) -> None:
        nonlocal reserved
        for request in requests:
            assert request.n >= 1 and request.max_tokens >= 1, request
            run.requests.append(request)
            outstanding.extend([request] * request.n)
            reserved += request.n * request.max_tokens
        assert run.launched <= query.max_branches, "launched past max_branches"
        assert run.spent_tokens + reserved <= query.budget_tokens, "budget overcommitted"

    first = strategy.begin()
    run.begun = list(first)
    launch(first)
    while outstanding:
        assert len(run.branches) < max_branches_seen
        request = outstanding.popleft()
        reserved -= request.max_tokens
        branch = scored(request, respond(request, len(run.branches)), query.extractor)
        run.branches.append(branch)
        assert run.spent_tokens + reserved <= query.budget_tokens, "budget exceeded"
        decision = strategy.on_branch(branch)
        run.decisions.append(decision)
        if isinstance(decision, Finish):
            run.final, run.finished = decision.answer, True
            return run
        if isinstance(decision, Launch):
            launch(decision.requests)
    run.final = strategy.best_so_far()
    return run


def drive_query(query: PlannedQuery, respond: Respond) -> Run:
    """`drive` a fresh strategy for `query` (chosen by `make_strategy`)."""
    return drive(make_strategy(query), respond)
