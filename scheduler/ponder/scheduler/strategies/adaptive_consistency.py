"""`adaptive-consistency`: sample in waves; stop once the vote is settled with enough confidence.

Stopping rule (no verifier): Aggarwal et al. 2023, "Let's Sample Step by Step:
Adaptive-Consistency for Efficient Reasoning and Coding with LLMs" (EMNLP), the Beta criterion.
With v1 votes for the leading answer and v2 for the runner-up, the share p1 / (p1 + p2) of the
two answers' true probabilities has the posterior Beta(v1 + 1, v2 + 1) under a uniform prior,
and the leading answer is the true majority with probability

    P(p1 > p2 | v1, v2) = 1 - I_{1/2}(v1 + 1, v2 + 1)
                        = sum_{j=0}^{v1} C(v1 + v2 + 1, j) / 2^(v1 + v2 + 1)

(the regularised incomplete Beta function at 1/2 for integer parameters is a binomial tail).
After each wave (every branch of it finished) we stop when this reaches `query.confidence`.

The stopping rule is selectable (`query.stopping_rule`, `spec.strategy.stoppingRule`,
`ponder.stopping_rule`); without one it is `verifier` when the service has a verifier, else
`beta` (above):

- `verifier`: stop as soon as a wave holds a verified answer (verifier score >= the service's
  `accept_score`, 0.99 unless set), and answer with the vote among verified branches (plain
  vote when none is verified). On a small model that is often confidently wrong, agreement
  says little and a verified answer says much, so agreement alone never stops it.
- `window`: Early-Stopping Self-Consistency (Li et al. 2024, "Escape Sky-high Cost", ICLR):
  stop once every branch of the last wave (the window) completed with the same answer; a wave
  of one never agrees with itself. The answer is the vote over every wave.
- `confidence`: the workers measure each branch's confidence as deep-conf does
  (`query.deep_conf`: token confidence, window), every completed branch votes weighted by it,
  and the search stops once the leader holds `deep_conf.consensus` of the weight.

Giving up: a query still unsettled once it has spent `query.give_up` of its branch cap or token
budget (`spec.strategy.giveUpPercent`) answers with its best so far, marked `gave_up`: on the
shipped model most queries that no wave settles by then are ones none will (the issue that
asked for it measured 91% of the tokens at the defaults going to queries run to the cap).

At temperature 0 every sample is the same greedy decode: the first wave is one branch and the
search stops after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from math import comb

from ponder.api.service_config import StoppingRule
from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.base import (
    BranchRequest,
    Decision,
    FinalAnswer,
    Finish,
    Launch,
    LaunchMode,
    PlannedQuery,
    ScoredBranch,
    ScoreMode,
    Shrinkable,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger, given_up
from ponder.scheduler.strategies.voting import (
    VoteResult,
    ballots_of,
    confident_ballots,
    majority_vote,
    top_two,
    verified_vote,
    vote_answer,
    weighted_vote,
)


def leader_is_majority_probability(leader_votes: int, runner_up_votes: int) -> float:
    """P(p1 > p2 | v1, v2) under Beta(v1 + 1, v2 + 1) (Aggarwal et al. 2023), exactly."""
    if leader_votes < 0 or runner_up_votes < 0:
        raise ValueError("vote counts must be non-negative")
    trials = leader_votes + runner_up_votes + 1
    tail = sum(comb(trials, j) for j in range(leader_votes + 1))
    return float(Fraction(tail, 2**trials))


def window_agrees(wave: Sequence[ScoredBranch]) -> bool:
    """ESC's rule: every branch of the wave completed with one and the same answer, and the
    wave has two branches at least."""
    answers = {branch.answer for branch in wave}
    return (
        len(wave) >= 2
        and all(b.completed for b in wave)
        and len(answers) == 1
        and (None not in answers)
    )


def has_verified(branches: Sequence[ScoredBranch], accept_score: float) -> bool:
    """Some completed branch with an answer scored `accept_score` or more."""
    return any(
        b.completed and b.answer is not None and b.score is not None and b.score >= accept_score
        for b in branches
    )


def rule_of(query: PlannedQuery) -> StoppingRule:
    """The query's stopping rule: its own, else verifier with a verifier and beta without."""
    if query.stopping_rule is not None:
        return query.stopping_rule
    return StoppingRule.VERIFIER if query.has_verifier else StoppingRule.BETA


class AdaptiveConsistency(Strategy):
    """Waves of `wave_size` samples until the stopping rule holds, `max_branches` are spent or
    the token budget cannot pay for another wave."""

    name = StrategyName.ADAPTIVE_CONSISTENCY
    launch_mode = LaunchMode.WAVES
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES, Shrinkable.WAVES})
    may_exit_early = True

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.branches: list[ScoredBranch] = []
        self.waves = 0
        self.greedy = query.temperature == 0
        self.rule = rule_of(query)

    def begin(self) -> list[BranchRequest]:
        wave = self._next_wave()
        return [wave] if wave else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        self.branches.append(branch)
        if self.ledger.outstanding > 0:
            return Wait()  # decide only once the whole wave is in
        answer = self._answer()
        if answer is not None and self._settled(answer):
            return Finish(answer)
        gave_up = given_up(answer, self.ledger, self.query.give_up)
        if gave_up is not None:
            return Finish(gave_up)
        wave = self._next_wave()
        if wave is not None:
            return Launch((wave,))
        return Finish(answer) if answer else Wait()

    def best_so_far(self) -> FinalAnswer | None:
        return self._answer()

    def _next_wave(self) -> BranchRequest | None:
        if self.greedy and any(b.completed for b in self.branches):
            return None  # another greedy decode would repeat this one
        wave = self.ledger.launch(
            BranchRequest(
                n=1 if self.greedy else self.query.wave_size,
                max_tokens=self.query.max_tokens_per_branch,
                tag=f"wave-{self.waves}",
                score=ScoreMode.FINAL if self.rule is StoppingRule.VERIFIER else ScoreMode.NONE,
                logprobs=True,  # mean logprob breaks ties between equally voted answers
                confidence=self.rule is StoppingRule.CONFIDENCE,
            ),
            # Late in the budget, fewer branches that can finish beat many cut short.
            min_tokens=self.query.max_tokens_per_branch // 2,
        )
        if wave is not None:
            self.waves += 1
        return wave

    def _vote(self) -> VoteResult | None:
        ballots = ballots_of(self.branches)
        if self.rule is StoppingRule.VERIFIER:
            return verified_vote(ballots, self.query.accept_score)
        if self.rule is StoppingRule.CONFIDENCE:
            weighted = confident_ballots(self.branches, threshold=0.0)
            return weighted_vote(weighted) if weighted else majority_vote(ballots)
        return majority_vote(ballots)

    def _answer(self) -> FinalAnswer | None:
        vote = self._vote()
        if vote is None:
            return vote_answer(self.branches, None)
        if self.rule is StoppingRule.CONFIDENCE:
            return vote_answer(self.branches, vote)  # the leader's share of the weight
        leader, runner_up = top_two(vote.votes)
        confidence = leader_is_majority_probability(int(leader), int(runner_up))
        return vote_answer(self.branches, vote, confidence)

    def _settled(self, answer: FinalAnswer) -> bool:
        if self.greedy:
            return True
        if self.rule is StoppingRule.VERIFIER:
            return has_verified(self.branches, self.query.accept_score)
        if self.rule is StoppingRule.WINDOW:
            last = f"wave-{self.waves - 1}"
            return window_agrees([b for b in self.branches if b.request.tag == last])
        if self.rule is StoppingRule.CONFIDENCE:
            return (answer.confidence or 0.0) >= self.query.deep_conf.consensus
        return answer.confidence is not None and answer.confidence >= self.query.confidence
