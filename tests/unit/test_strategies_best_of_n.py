"""`best-of-n` (highest score) and `weighted-vote` (summed scores per answer)."""

from __future__ import annotations

import math

import pytest

from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.base import ScoreMode, Wait
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned

BON, WV = StrategyName.BEST_OF_N, StrategyName.WEIGHTED_VOTE


@pytest.mark.parametrize(
    ("scored_answers", "winner", "text"),
    [
        ([("42", 0.3), ("17", 0.9), ("42", 0.5), ("8", 0.1)], "17", "#17"),
        # equal top scores: the more common answer
        ([("1", 0.8), ("2", 0.8), ("2", 0.1), ("3", 0.2)], "2", "#2"),
        # equal scores and counts: the first finished
        ([("1", 0.5), ("2", 0.5), ("3", 0.1), ("4", 0.1)], "1", "#1"),
    ],
)
def test_best_of_n_picks_the_highest_score(
    scored_answers: list[tuple[str, float]], winner: str, text: str
) -> None:
    replies = [Reply(f"#{answer}", score=score) for answer, score in scored_answers]
    run = drive_query(planned(BON, branches=4, max_branches=4), in_order(*replies))
    assert [(r.n, r.score) for r in run.begun] == [(4, ScoreMode.FINAL)]
    assert run.finished and run.final is not None
    assert (run.final.answer, run.final.text) == (winner, text)
    assert run.final.confidence == max(score for _, score in scored_answers)
    assert run.final.scores == [score for _, score in scored_answers]


def test_best_of_n_waits_for_every_branch() -> None:
    replies = [Reply("#1", score=1.0), Reply("#2", score=0.1), Reply("#3", score=0.1)]
    run = drive_query(planned(BON, branches=3, max_branches=3), in_order(*replies))
    assert [type(d) for d in run.decisions[:2]] == [Wait, Wait]
    assert len(run.branches) == 3


def test_best_of_n_without_verifier_ranks_by_logprob() -> None:
    replies = [Reply("#1", mean_logprob=-2.0), Reply("#2", mean_logprob=-0.2)]
    run = drive_query(planned(BON, branches=2, max_branches=2), in_order(*replies))
    assert run.begun[0].logprobs
    assert run.final is not None and run.final.answer == "2"
    assert run.final.confidence == pytest.approx(math.exp(-0.2))


def test_best_of_n_ignores_failed_and_unanswered_branches() -> None:
    replies = [FAILED, Reply("no answer", score=1.0), Reply("#5", score=0.2)]
    run = drive_query(planned(BON, branches=3, max_branches=3), in_order(*replies))
    assert run.final is not None and run.final.answer == "5"


def test_weighted_vote_sums_scores_per_answer() -> None:
    replies = [
        Reply("#42", score=0.3),
        Reply("#17", score=0.9),
        Reply("#42", score=0.3),
        Reply("#17", score=0.8),
        Reply("#42", score=0.3),
    ]
    run = drive_query(planned(WV, branches=5, max_branches=5), in_order(*replies))
    assert run.final is not None
    assert run.final.answer == "17"  # 1.7 beats 0.9 although 42 has more votes
    assert run.final.votes == {"42": pytest.approx(0.9), "17": pytest.approx(1.7)}
    assert run.final.text == "#17"


def test_weighted_vote_tie_goes_to_the_more_common_answer() -> None:
    replies = [Reply("#1", score=0.6), Reply("#2", score=0.3), Reply("#2", score=0.3)]
    run = drive_query(planned(WV, branches=3, max_branches=3), in_order(*replies))
    assert run.final is not None and run.final.answer == "2"


def test_all_failed_gives_no_answer() -> None:
    for name in (BON, WV):
        run = drive_query(planned(name, branches=2, max_branches=2), in_order(FAILED, FAILED))
        assert run.final is None


def test_best_of_n_over_256_tied_branches_picks_the_first_finished() -> None:
    # All 256 samples score the same and every answer is unique: the first finished wins.
    replies = [Reply(f"#{index}", score=0.5) for index in range(256)]
    run = drive_query(planned(BON, branches=256, max_branches=256), in_order(*replies))
    assert run.final is not None and run.final.answer == "0"
    assert len(run.final.votes) == 256
