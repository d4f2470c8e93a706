"""`single`: one branch, answered as it is (greedy when the query's temperature is 0)."""

from __future__ import annotations

from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.base import (
    BranchRequest,
    Decision,
    FinalAnswer,
    Finish,
    LaunchMode,
    PlannedQuery,
    ScoredBranch,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger


class Single(Strategy):
    """Launch one branch; its text is the answer. A branch that did not complete leaves
    nothing to answer with (the runner answers 504)."""

    name = StrategyName.SINGLE
    launch_mode = LaunchMode.AT_ONCE
    single_branch = True
    needs_verifier = False
    may_shrink = frozenset()
    may_exit_early = True

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.branch: ScoredBranch | None = None

    def begin(self) -> list[BranchRequest]:
        request = self.ledger.launch(
            BranchRequest(
                n=1,
                max_tokens=self.query.max_tokens_per_branch,
                tag="single",
                streams_answer=True,
            )
        )
        return [request] if request else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        self.branch = branch
        answer = self.best_so_far()
        return Finish(answer) if answer else Wait()

    def best_so_far(self) -> FinalAnswer | None:
        if self.branch is None or not self.branch.completed:
            return None
        return FinalAnswer(
            text=self.branch.full_text,
            answer=self.branch.answer,
            votes={self.branch.answer: 1.0} if self.branch.answer is not None else {},
            scores=[self.branch.score] if self.branch.score is not None else [],
            finish_reason=self.branch.result.finish_reason or "stop",
        )
