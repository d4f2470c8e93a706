"""Vote helpers and the branch ledger the strategies share."""

from __future__ import annotations

import math

import pytest

from ponder.api.wire import BranchStatus
from ponder.scheduler.strategies.base import BranchRequest
from ponder.scheduler.strategies.ledger import BranchLedger
from ponder.scheduler.strategies.voting import (
    Ballot,
    answer_distribution,
    ballots_of,
    majority_vote,
    top_two,
    verified_vote,
    weighted_vote,
)
from tests.unit.recorded_branches import FAILED, Reply, scored


def ballots(*answers: str, scores: list[float] | None = None) -> list[Ballot]:
    return [Ballot(answer, scores[i] if scores else None) for i, answer in enumerate(answers)]


@pytest.mark.parametrize(
    ("answers", "winner", "confidence"),
    [
        (["42", "42", "17", "42"], "42", 0.75),
        (["17", "42", "42"], "42", 2 / 3),
        (["7"], "7", 1.0),
        (["1", "2", "3"], "1", 1 / 3),  # a three-way tie without evidence: the first seen
        (["2", "1", "1", "2"], "2", 0.5),
    ],
)
def test_majority_vote_picks_most_common_then_first_seen(
    answers: list[str], winner: str, confidence: float
) -> None:
    vote = majority_vote(ballots(*answers))
    assert vote is not None
    assert (vote.winner, vote.confidence) == (winner, pytest.approx(confidence))
    assert vote.votes == {a: float(c) for a, c in answer_distribution(ballots(*answers)).items()}


def test_majority_tie_goes_to_the_answer_with_more_evidence() -> None:
    vote = majority_vote(ballots("1", "2", "1", "2", scores=[0.1, 0.9, 0.2, 0.3]))
    assert vote is not None and vote.winner == "2"


def test_majority_tie_breaks_on_mean_logprob_without_scores() -> None:
    tied = [Ballot("1", None, -2.0), Ballot("2", None, -0.1)]
    vote = majority_vote(tied)
    assert vote is not None and vote.winner == "2"


def test_no_ballots_no_vote() -> None:
    assert majority_vote([]) is None
    assert weighted_vote([]) is None
    assert verified_vote([]) is None


def test_weighted_vote_sums_scores_per_answer() -> None:
    # "17" has fewer votes but more total score: 0.9 + 0.8 > 0.3 + 0.3 + 0.3
    vote = weighted_vote(ballots("42", "42", "17", "42", "17", scores=[0.3, 0.3, 0.9, 0.3, 0.8]))
    assert vote is not None
    assert vote.winner == "17"
    assert vote.votes == {"42": pytest.approx(0.9), "17": pytest.approx(1.7)}
    assert vote.confidence == pytest.approx(1.7 / 2.6)


def test_verified_vote_counts_only_verified_ballots() -> None:
    vote = verified_vote(ballots("42", "42", "42", "17", scores=[0.1, 0.2, 0.3, 0.995]))
    assert vote is not None and vote.winner == "17"


def test_verified_vote_falls_back_to_plain_majority() -> None:
    vote = verified_vote(ballots("42", "42", "17", scores=[0.1, 0.2, 0.3]))
    assert vote is not None and vote.winner == "42"


@pytest.mark.parametrize(
    ("votes", "expected"),
    [({}, (0.0, 0.0)), ({"a": 3.0}, (3.0, 0.0)), ({"a": 1.0, "b": 4.0, "c": 2.0}, (4.0, 2.0))],
)
def test_top_two(votes: dict[str, float], expected: tuple[float, float]) -> None:
    assert top_two(votes) == expected


def test_failed_branches_and_branches_without_answer_do_not_vote() -> None:
    request = BranchRequest(n=4, max_tokens=50)
    branches = [
        scored(request, Reply("#42")),
        scored(request, FAILED),
        scored(request, Reply("#17", status=BranchStatus.CANCELLED)),
        scored(request, Reply("no answer here")),
    ]
    assert [b.answer for b in ballots_of(branches)] == ["42"]


def test_ballot_strength_prefers_verifier_score_then_logprob() -> None:
    assert Ballot("1", 0.4, -0.1).strength == 0.4
    assert Ballot("1", None, -1.0).strength == pytest.approx(math.exp(-1.0))
    assert Ballot("1").strength == 0.0


def test_ledger_shrinks_launches_to_budget_and_cap() -> None:
    ledger = BranchLedger(budget_tokens=1000, max_branches=6)
    first = ledger.launch(BranchRequest(n=4, max_tokens=400))
    assert first is not None and (first.n, first.max_tokens) == (4, 250)
    assert ledger.available_tokens == 0
    ledger.settle(scored(first, Reply("#1", tokens=20)))
    ledger.settle(scored(first, Reply("#1", tokens=30)))
    # 2 outstanding still reserve 500; 50 spent; 450 left, but only 2 branches under the cap
    assert (ledger.available_tokens, ledger.branches_left, ledger.outstanding) == (450, 2, 2)
    second = ledger.launch(BranchRequest(n=5, max_tokens=400))
    assert second is not None and (second.n, second.max_tokens) == (2, 225)
    assert ledger.launch(BranchRequest(n=1, max_tokens=10)) is None


def test_ledger_prefers_fewer_branches_over_too_short_ones() -> None:
    ledger = BranchLedger(budget_tokens=100, max_branches=50)
    request = ledger.launch(BranchRequest(n=10, max_tokens=40), min_tokens=40)
    assert request is not None and (request.n, request.max_tokens) == (2, 40)


def test_ledger_refuses_a_booking_over_budget() -> None:
    ledger = BranchLedger(budget_tokens=100, max_branches=50)
    with pytest.raises(ValueError, match="exceeds what is left"):
        ledger.book(BranchRequest(n=3, max_tokens=40))
