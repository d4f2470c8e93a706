"""`self-consistency`: sample `branches` solutions at once, answer with the majority vote.

Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language Models"
(ICLR). Stops early, exactly rather than probabilistically, once the leading answer can no
longer be caught: when its votes exceed the runner-up's plus every branch still outstanding, no
order of the remaining results can change (or tie) the vote, so waiting would only spend tokens.
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
    Shrinkable,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger
from ponder.scheduler.strategies.voting import ballots_of, majority_vote, top_two, vote_answer


class SelfConsistency(Strategy):
    """Majority vote over `branches` samples; failed branches and branches without an answer
    do not vote."""

    name = StrategyName.SELF_CONSISTENCY
    launch_mode = LaunchMode.AT_ONCE
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES})
    may_exit_early = True

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
                logprobs=True,  # mean logprob breaks ties between equally voted answers
            )
        )
        return [request] if request else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        self.branches.append(branch)
        answer = self._answer()
        if answer is None:
            # Nothing completed yet; with nothing outstanding the runner asks best_so_far.
            return Wait()
        leader, runner_up = top_two(answer.votes)
        settled = leader > runner_up + self.ledger.outstanding
        return Finish(answer) if settled or self.ledger.outstanding == 0 else Wait()

    def best_so_far(self) -> FinalAnswer | None:
        return self._answer()

    def _answer(self) -> FinalAnswer | None:
        return vote_answer(self.branches, majority_vote(ballots_of(self.branches)))
