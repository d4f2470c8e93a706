"""`best-of-n` and `weighted-vote`: score every sample with the verifier, then pick.

Both launch `branches` samples at once with `ScoreMode.FINAL` and wait for all of them. A
sample's score is the verifier's; without a verifier it is exp(mean token logprob) (the samples
always ask for logprobs), so both strategies still rank sensibly on a service with no verifier.
"""

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
    ScoreMode,
    Shrinkable,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger
from ponder.scheduler.strategies.voting import (
    answer_distribution,
    ballot_of,
    ballots_of,
    branch_strength,
    vote_answer,
    weighted_vote,
)


class _ScoredSamples(Strategy):
    """Launch `branches` scored samples; answer once every one has finished."""

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.branches: list[ScoredBranch] = []

    def begin(self) -> list[BranchRequest]:
        request = self.ledger.launch(
            BranchRequest(
                n=self.query.branches,
                max_tokens=self.query.max_tokens_per_branch,
                tag="sample",
                score=ScoreMode.FINAL,
                logprobs=True,
            )
        )
        return [request] if request else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        self.branches.append(branch)
        if self.ledger.outstanding > 0:
            return Wait()
        answer = self.best_so_far()
        return Finish(answer) if answer else Wait()


class BestOfN(_ScoredSamples):
    """The single highest-scoring sample; among equal scores, the most common answer, then the
    first finished."""

    name = StrategyName.BEST_OF_N
    launch_mode = LaunchMode.AT_ONCE
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES})
    may_exit_early = True

    def best_so_far(self) -> FinalAnswer | None:
        voters = [b for b in self.branches if ballot_of(b) is not None]
        if not voters:
            return vote_answer(self.branches, None)
        counts = answer_distribution(ballots_of(voters))
        # `max` keeps the first of equal keys, i.e. the first finished; no `voters.index`
        # (which compared results pairwise: quadratic in the branches).
        best = max(voters, key=lambda b: (branch_strength(b), counts[b.answer or ""]))
        return FinalAnswer(
            text=best.full_text,
            answer=best.answer,
            confidence=branch_strength(best),
            votes={answer: float(count) for answer, count in counts.items()},
            scores=[b.score for b in self.branches if b.score is not None],
            finish_reason=best.result.finish_reason or "stop",
        )


class WeightedVote(_ScoredSamples):
    """The answer with the largest summed score over its samples (Li et al. 2023, "Making
    Language Models Better Reasoners with Step-Aware Verifier": verifier-weighted voting)."""

    name = StrategyName.WEIGHTED_VOTE
    launch_mode = LaunchMode.AT_ONCE
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES})
    may_exit_early = True

    def best_so_far(self) -> FinalAnswer | None:
        return vote_answer(self.branches, weighted_vote(ballots_of(self.branches)))
