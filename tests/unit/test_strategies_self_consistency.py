"""`self-consistency`: majority vote over branches launched at once, exact early stop."""

from __future__ import annotations

import pytest

from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies import make_strategy
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned, scored

SC = StrategyName.SELF_CONSISTENCY


@pytest.mark.parametrize(
    ("branches", "answers", "consumed", "winner", "confidence"),
    [
        # 42,42,17 leaves 1 outstanding: 2 votes could still be tied -> wait for the 4th
        (4, ["42", "42", "17", "42"], 4, "42", 0.75),
        # 5 votes for 42 with 3 outstanding: 5 > 0 + 3, nothing can catch up
        (8, ["42"] * 8, 5, "42", 1.0),
        # 4 of 8 agree and 4 remain: a tie is still possible -> keep waiting
        (8, ["42", "42", "42", "42", "17", "17", "17", "17"], 8, "42", 0.5),
        (8, ["42", "17", "42", "42", "42", "42", "17", "17"], 6, "42", 5 / 6),
        (1, ["7"], 1, "7", 1.0),
    ],
)
def test_self_consistency_stops_once_the_vote_cannot_change(
    branches: int, answers: list[str], consumed: int, winner: str, confidence: float
) -> None:
    query = planned(SC, branches=branches, max_branches=branches)
    run = drive_query(query, in_order(*(f"steps #{a}" for a in answers)))
    assert run.launch_sizes == [branches]
    assert run.finished
    assert len(run.branches) == consumed
    assert run.final is not None
    assert (run.final.answer, run.final.confidence) == (winner, pytest.approx(confidence))


def test_self_consistency_failed_branches_do_not_vote() -> None:
    run = drive_query(planned(SC), in_order("#42", FAILED, "#17", "#17"))
    assert run.final is not None
    assert run.final.answer == "17"
    assert run.final.votes == {"42": 1.0, "17": 2.0}


def test_self_consistency_tie_goes_to_higher_logprob() -> None:
    run = drive_query(
        planned(SC, branches=2, max_branches=2),
        in_order(Reply("#1", mean_logprob=-3.0), Reply("#2", mean_logprob=-0.5)),
    )
    assert run.begun[0].logprobs
    assert run.final is not None and run.final.answer == "2"


def test_self_consistency_tie_without_evidence_goes_to_first_seen() -> None:
    run = drive_query(planned(SC, branches=2, max_branches=2), in_order("#1", "#2"))
    assert run.final is not None and run.final.answer == "1"


def test_self_consistency_with_no_answer_falls_back_to_a_completed_text() -> None:
    run = drive_query(planned(SC, branches=2, max_branches=2), in_order("hmm", "well"))
    assert run.finished and run.final is not None
    assert (run.final.text, run.final.answer, run.final.confidence) == ("hmm", None, None)


def test_self_consistency_all_failed_has_no_answer() -> None:
    run = drive_query(planned(SC, branches=2, max_branches=2), in_order(FAILED, FAILED))
    assert not run.finished and run.final is None


def test_self_consistency_splits_the_budget_over_its_branches() -> None:
    run = drive_query(
        planned(SC, branches=4, budget_tokens=200, max_tokens_per_branch=100),
        in_order(*[Reply("#3", tokens=80)] * 4),
    )
    assert [(r.n, r.max_tokens) for r in run.begun] == [(4, 50)]
    assert run.spent_tokens <= 200


def test_self_consistency_best_so_far_at_the_deadline() -> None:
    query = planned(SC, branches=8, max_branches=8)
    strategy = make_strategy(query)
    (request,) = strategy.begin()
    assert strategy.best_so_far() is None
    strategy.on_branch(scored(request, Reply("#17")))
    strategy.on_branch(scored(request, Reply("#42")))
    strategy.on_branch(scored(request, Reply("#42")))
    answer = strategy.best_so_far()
    assert answer is not None
    assert (answer.answer, answer.votes) == ("42", {"17": 1.0, "42": 2.0})
