"""`deep-conf`: vote with the branches the model itself is most confident in, and stop the
unconfident ones as they generate (DeepConf: Fu et al. 2025, "Deep Think with Confidence",
arXiv 2508.15260).

No verifier: a branch's confidence is what its own tokens say. The worker measures it while
the branch generates (`ponder.api.wire.ConfidenceWatch`): each token's confidence (by default
the sampled token's logprob; DeepConf's own is minus the mean logprob of the top k), a group's
the mean over a sliding window, exp'ed for the sampled token, and a branch's the lowest of its
groups ("lowest group confidence"). Settings: `ponder.api.service_config.DeepConfConfig`.

Offline: `branches` at once; the `keep_percent` most confident completed branches vote, each
weighted by its confidence.

Online: a warm-up wave of `branches` runs to the end; the confidence the `keep_percent` most
confident of them reach becomes the threshold, and only they vote (a warm-up in which no branch
completed sets none, and the next wave is another warm-up). Every later branch runs
with that threshold: the worker stops it, and vLLM frees its sequence, as soon as one of its
windows falls below it (`low_confidence`), so it never votes; one that completes votes. After
each finished branch the query stops once the weighted vote's leader holds `consensus` of the
weight; otherwise waves of `branches` follow up to `max_branches` and the budget, or until
`query.give_up` of them is spent without consensus: then it answers, marked `gave_up`.

At temperature 0 every branch is the same greedy decode: one branch, and it answers.
"""

from __future__ import annotations

import math

from ponder.api.service_config import DeepConfMode
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
    Shrinkable,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger, given_up
from ponder.scheduler.strategies.voting import (
    ballots_of,
    confident_ballots,
    majority_vote,
    vote_answer,
    weighted_vote,
)


def confidence_threshold(confidences: list[float], keep_percent: int) -> float | None:
    """The confidence the `keep_percent` most confident of `confidences` reach (at least one
    is kept); None without any."""
    if not confidences:
        return None
    ranked = sorted(confidences, reverse=True)
    keep = max(1, math.ceil(len(ranked) * keep_percent / 100))
    return ranked[keep - 1]  # keep_percent <= 100: never past the last


class DeepConf(Strategy):
    """Confidence-filtered, confidence-weighted voting; online, low-confidence branches stop
    early and the query stops at consensus."""

    name = StrategyName.DEEP_CONF
    launch_mode = LaunchMode.WAVES
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES, Shrinkable.WAVES})
    may_exit_early = True

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.settings = query.deep_conf
        self.online = self.settings.mode is DeepConfMode.ONLINE
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.branches: list[ScoredBranch] = []
        self.threshold: float | None = None  # set once the warm-up (or offline wave) is in
        self.waves = 0
        self.greedy = query.temperature == 0

    def begin(self) -> list[BranchRequest]:
        wave = self._wave(self.query.branches if not self.greedy else 1, stop_below=None)
        return [wave] if wave else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        self.branches.append(branch)
        if self.threshold is None:
            if self.ledger.outstanding > 0:
                return Wait()  # the threshold needs the whole first wave
            self.threshold = confidence_threshold(self._confidences(), self.settings.keep_percent)
            if not self.online or self.greedy:
                return self._finish_or_wait()
        answer = self._answer()
        if answer is not None and (answer.confidence or 0.0) >= self.settings.consensus:
            return Finish(answer)
        if self.ledger.outstanding > 0:
            return Wait()
        gave_up = given_up(answer, self.ledger, self.query.give_up)
        if gave_up is not None:
            return Finish(gave_up)
        wave = self._wave(self.query.wave_size, stop_below=self.threshold)
        return Launch((wave,)) if wave else self._finish_or_wait()

    def best_so_far(self) -> FinalAnswer | None:
        return self._answer()

    def _wave(self, n: int, stop_below: float | None) -> BranchRequest | None:
        wave = self.ledger.launch(
            BranchRequest(
                n=n,
                max_tokens=self.query.max_tokens_per_branch,
                tag=f"wave-{self.waves}",
                confidence=True,
                confidence_stop_below=stop_below,
            ),
            # Late in the budget, fewer branches that can finish beat many cut short.
            min_tokens=self.query.max_tokens_per_branch // 2,
        )
        if wave is not None:
            self.waves += 1
        return wave

    def _confidences(self) -> list[float]:
        """The completed warm-up branches' confidences (those launched without a threshold),
        answers or not: the threshold is about how confident the model's traces are on this
        query."""
        return [
            b.result.confidence
            for b in self.branches
            if b.request.confidence_stop_below is None
            and b.completed
            and b.result.confidence is not None
        ]

    def _answer(self) -> FinalAnswer | None:
        """The weighted vote of the confident branches; a plain vote over every completed
        branch while there is none (a deadline before the warm-up was in, say)."""
        ballots = confident_ballots(self.branches, self.threshold)
        if ballots:
            return vote_answer(self.branches, weighted_vote(ballots))
        return vote_answer(self.branches, majority_vote(ballots_of(self.branches)))

    def _finish_or_wait(self) -> Decision:
        answer = self._answer()
        return Finish(answer) if answer else Wait()
