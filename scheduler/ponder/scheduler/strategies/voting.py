"""Votes over extracted answers: majority, weighted, verifier-filtered, and the distribution.

Pure helpers shared by the voting strategies. A ballot is one completed branch with an answer;
failed, cancelled and expired branches and branches without an answer never vote.
Ties are broken deterministically: more votes, then more total evidence (verifier score, else
exp(mean logprob)), then the answer seen first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ponder.scheduler.strategies.base import FinalAnswer, ScoredBranch

VERIFIED_SCORE = 0.99
"""A verifier score at or above this counts as "verified" (adaptive stopping, filtered votes,
refine's pass)."""


@dataclass(frozen=True)
class Ballot:
    """One vote: an answer and the evidence behind it."""

    answer: str
    score: float | None = None  # verifier score in [0, 1]
    mean_logprob: float | None = None

    @property
    def strength(self) -> float:
        """Evidence for tie-breaks and weighted votes: the verifier score, else exp(mean
        logprob), else 0."""
        return _strength(self.score, self.mean_logprob)


@dataclass(frozen=True)
class VoteResult:
    """The winner of a vote and the tally behind it."""

    winner: str
    votes: dict[str, float]  # answer -> votes (or summed weight), in first-seen order
    confidence: float  # the winner's share of all votes (or of all weight)


def ballot_of(branch: ScoredBranch) -> Ballot | None:
    """The branch's ballot, or None when it did not complete or yielded no answer."""
    if not branch.completed or branch.answer is None:
        return None
    return Ballot(branch.answer, branch.score, branch.result.mean_logprob)


def ballots_of(branches: Iterable[ScoredBranch]) -> list[Ballot]:
    return [ballot for ballot in map(ballot_of, branches) if ballot is not None]


def answer_distribution(ballots: Sequence[Ballot]) -> dict[str, int]:
    """Votes per answer, in first-seen order."""
    counts: dict[str, int] = {}
    for ballot in ballots:
        counts[ballot.answer] = counts.get(ballot.answer, 0) + 1
    return counts


def majority_vote(ballots: Sequence[Ballot]) -> VoteResult | None:
    """The most common answer (Wang et al. 2023, self-consistency); None without ballots."""
    counts = answer_distribution(ballots)
    if not counts:
        return None
    evidence = _evidence(ballots)
    # `max` keeps the first of equal keys, and `counts` is in first-seen order.
    winner = max(counts, key=lambda answer: (counts[answer], evidence[answer]))
    return VoteResult(
        winner=winner,
        votes={answer: float(count) for answer, count in counts.items()},
        confidence=counts[winner] / len(ballots),
    )


def weighted_vote(ballots: Sequence[Ballot]) -> VoteResult | None:
    """The answer with the largest summed strength ("weighted majority", Li et al. 2023);
    ties go to the more common answer, then to the first seen. None without ballots."""
    counts = answer_distribution(ballots)
    if not counts:
        return None
    evidence = _evidence(ballots)
    # `max` keeps the first of equal keys, and `counts` is in first-seen order.
    winner = max(counts, key=lambda answer: (evidence[answer], counts[answer]))
    total = sum(evidence.values())
    return VoteResult(
        winner=winner,
        votes=evidence,
        confidence=evidence[winner] / total if total > 0 else counts[winner] / len(ballots),
    )


def confident_ballots(branches: Sequence[ScoredBranch], threshold: float | None) -> list[Ballot]:
    """Ballots of the completed branches with an answer whose confidence reaches `threshold`,
    each weighted by its confidence."""
    if threshold is None:
        return []
    return [
        Ballot(branch.answer, score=branch.result.confidence)
        for branch in branches
        if branch.completed
        and branch.answer is not None
        and branch.result.confidence is not None
        and branch.result.confidence >= threshold
    ]


def verified_vote(
    ballots: Sequence[Ballot], threshold: float = VERIFIED_SCORE
) -> VoteResult | None:
    """Majority vote among ballots whose verifier score reaches `threshold`; a plain majority
    vote over all ballots when none does."""
    verified = [b for b in ballots if b.score is not None and b.score >= threshold]
    return majority_vote(verified) if verified else majority_vote(ballots)


def top_two(votes: dict[str, float]) -> tuple[float, float]:
    """Votes of the leading answer and of the runner-up (0 when there is none)."""
    ranked = [*sorted(votes.values(), reverse=True), 0.0, 0.0]
    return ranked[0], ranked[1]


def representative(branches: Sequence[ScoredBranch], answer: str | None) -> ScoredBranch | None:
    """The completed branch that best stands for `answer` (any completed branch when None):
    the strongest, the first among equals."""
    candidates = [b for b in branches if b.completed and (answer is None or b.answer == answer)]
    if not candidates:
        return None
    return max(candidates, key=branch_strength)  # the first of equals: `max` keeps it


def vote_answer(
    branches: Sequence[ScoredBranch], vote: VoteResult | None, confidence: float | None = None
) -> FinalAnswer | None:
    """The FinalAnswer for a vote: the winner's best branch as text, the tally as evidence.

    Without a vote (no branch yielded an answer) it falls back to the strongest completed
    branch with `answer=None`; None when nothing completed.
    """
    chosen = representative(branches, vote.winner if vote else None)
    if chosen is None:
        return None
    return FinalAnswer(
        text=chosen.full_text,
        answer=vote.winner if vote else None,
        confidence=(vote.confidence if confidence is None else confidence) if vote else None,
        votes=vote.votes if vote else {},
        scores=[b.score for b in branches if b.score is not None],
        finish_reason=chosen.result.finish_reason or "stop",
    )


def branch_strength(branch: ScoredBranch) -> float:
    """A branch's evidence, as `Ballot.strength` defines it."""
    return _strength(branch.score, branch.result.mean_logprob)


def _strength(score: float | None, mean_logprob: float | None) -> float:
    if score is not None:
        return score
    if mean_logprob is not None:
        return math.exp(mean_logprob)
    return 0.0


def _evidence(ballots: Sequence[Ballot]) -> dict[str, float]:
    evidence: dict[str, float] = {}
    for ballot in ballots:
        evidence[ballot.answer] = evidence.get(ballot.answer, 0.0) + ballot.strength
    return evidence
