"""`deep-conf`: confidence-filtered, confidence-weighted votes; online, a warm-up threshold stops
unconfident branches and consensus stops the query."""

from __future__ import annotations

import pytest

from ponder.api.service_config import DeepConfConfig, DeepConfMode
from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchStatus
from ponder.scheduler.strategies.deep_conf import confidence_threshold
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned

DC = StrategyName.DEEP_CONF
OFFLINE = DeepConfConfig(mode=DeepConfMode.OFFLINE, keep_percent=50)


def online(keep_percent: int = 10, consensus: float = 0.95) -> DeepConfConfig:
    return DeepConfConfig(keep_percent=keep_percent, consensus=consensus)


def r(answer: str, confidence: float, tokens: int = 10) -> Reply:
    return Reply(f"#{answer}", tokens=tokens, confidence=confidence)


@pytest.mark.parametrize(
    ("confidences", "keep_percent", "threshold"),
    [
        ([], 10, None),
        ([0.5], 10, 0.5),
        ([0.1, 0.9, 0.5, 0.7], 10, 0.9),  # at least one kept: the most confident
        ([0.1, 0.9, 0.5, 0.7], 50, 0.7),
        ([0.1, 0.9, 0.5, 0.7], 60, 0.5),  # 2.4 rounds up to 3 kept
        ([0.1, 0.9, 0.5, 0.7], 100, 0.1),
        ([3.0, 2.0, 2.0, 1.0], 50, 2.0),  # top-k confidences are not bounded by 1
    ],
)
def test_threshold_is_what_the_kept_share_reaches(
    confidences: list[float], keep_percent: int, threshold: float | None
) -> None:
    assert confidence_threshold(confidences, keep_percent) == threshold


def test_offline_votes_among_the_most_confident_weighted_by_confidence() -> None:
    # Three low-confidence 7s outvote two confident 42s in a plain vote; kept are the top half
    # (the two 42s and one 7), and 42 carries the weight.
    replies = [r("7", 0.2), r("42", 0.9), r("7", 0.3), r("42", 0.8), r("7", 0.85), FAILED]
    query = planned(DC, branches=6, max_branches=6, wave_size=6, deep_conf=OFFLINE)
    run = drive_query(query, in_order(*replies))
    assert run.launch_sizes == [6]
    assert all(
        request.confidence and request.confidence_stop_below is None for request in run.requests
    )
    assert run.final is not None and run.final.answer == "42"
    assert run.final.votes == {"42": pytest.approx(1.7), "7": pytest.approx(0.85)}
    assert run.final.confidence == pytest.approx(1.7 / 2.55)


def test_offline_with_every_branch_kept_is_a_confidence_weighted_vote() -> None:
    config = DeepConfConfig(mode=DeepConfMode.OFFLINE, keep_percent=100)
    query = planned(DC, branches=3, max_branches=3, wave_size=3, deep_conf=config)
    run = drive_query(query, in_order(r("1", 0.2), r("1", 0.2), r("2", 0.5)))
    assert run.final is not None and run.final.answer == "2"


def test_online_warmup_sets_the_threshold_for_later_waves() -> None:
    warmup = [r("5", 0.65), r("9", 0.7), r("5", 0.3), r("9", 0.6)]
    later = [r("9", 0.8), r("5", 0.2), r("9", 0.75), r("3", 0.1)]
    query = planned(DC, wave_size=4, max_branches=8, deep_conf=online(keep_percent=50))
    run = drive_query(query, in_order(*warmup, *later))
    first, second = run.requests
    assert first.confidence and first.confidence_stop_below is None
    assert second.confidence_stop_below == pytest.approx(0.65)  # the top half of the warm-up
    stopped = [b for b in run.branches if b.result.low_confidence]
    assert len(stopped) == 2 and all(b.result.status is BranchStatus.CANCELLED for b in stopped)
    assert all(b.result.completion_tokens == 5 for b in stopped)  # cut part-way
    assert run.final is not None and run.final.answer == "9"
    assert run.final.votes == {  # the kept half of the warm-up, and no stopped branch
        "5": pytest.approx(0.65),
        "9": pytest.approx(0.7 + 0.8 + 0.75),
    }


def test_online_stops_at_consensus_without_another_wave() -> None:
    query = planned(DC, wave_size=4, max_branches=16, deep_conf=online(keep_percent=50))
    run = drive_query(query, in_order(r("8", 0.9), r("8", 0.8), r("3", 0.1), r("4", 0.2)))
    # Kept: 0.9 and 0.8, both 8: the leader holds all the weight.
    assert run.launch_sizes == [4] and run.finished
    assert run.final is not None and (run.final.answer, run.final.confidence) == ("8", 1.0)


def test_online_stops_mid_wave_once_consensus_is_reached() -> None:
    warmup = [r("2", 0.9), r("6", 0.85), r("2", 0.1), r("6", 0.1)]
    later = [r("2", 0.95), r("2", 0.95), r("2", 0.95), r("2", 0.95), r("2", 0.95)]
    query = planned(
        DC, wave_size=4, max_branches=16, deep_conf=online(keep_percent=50, consensus=0.75)
    )
    run = drive_query(query, in_order(*warmup, *later))
    # Weight 2: 0.9 + 0.95 = 1.85 of 2.7 (0.69), then 2.8 of 3.65 (0.77): it stops at once.
    assert run.finished and len(run.branches) == 6 and run.launched == 8
    assert run.final is not None and run.final.answer == "2"


def test_online_without_consensus_runs_to_max_branches_and_answers_the_weighted_leader() -> None:
    replies = [r(str(i % 3), 0.5 + 0.01 * i) for i in range(12)]
    query = planned(DC, wave_size=4, max_branches=12, deep_conf=online(keep_percent=100))
    run = drive_query(query, in_order(*replies))
    assert run.launch_sizes == [4, 4, 4] and run.launched == 12
    assert run.final is not None and run.final.answer is not None


def test_temperature_zero_runs_one_branch() -> None:
    query = planned(DC, temperature=0.0, deep_conf=online())
    run = drive_query(query, in_order(r("71", 0.4)))
    assert run.launch_sizes == [1] and run.final is not None and run.final.answer == "71"


def test_a_warmup_without_confidence_falls_back_to_a_plain_vote() -> None:
    # Confidence None: the branches generated nothing with a logprob; a vote still answers.
    replies = [Reply("#4"), Reply("#4"), Reply("#5"), FAILED] + [Reply("#4")] * 12
    query = planned(DC, wave_size=4, max_branches=4, deep_conf=online())
    run = drive_query(query, in_order(*replies))
    assert run.final is not None and run.final.answer == "4"


def test_budget_bounds_the_waves() -> None:
    replies = [r(str(i % 4), 0.5, tokens=100) for i in range(16)]
    query = planned(
        DC,
        wave_size=4,
        max_branches=16,
        budget_tokens=800,
        max_tokens_per_branch=100,
        deep_conf=online(keep_percent=100),
    )
    run = drive_query(query, in_order(*replies))
    assert run.launched <= 8  # 800 tokens pay for 8 branches of 100


def test_a_warmup_with_nothing_completed_is_followed_by_another_warmup() -> None:
    replies = [FAILED] * 4 + [r("6", 0.5), r("6", 0.7), r("1", 0.6), r("2", 0.4)]
    replies += [r("6", 0.9)] * 4
    query = planned(DC, wave_size=4, max_branches=12, deep_conf=online(keep_percent=50))
    run = drive_query(query, in_order(*replies))
    assert [request.confidence_stop_below for request in run.requests] == [None, None, 0.6]
    assert run.final is not None and run.final.answer == "6"


def test_online_without_consensus_gives_up_at_its_share_and_says_so() -> None:
    replies = [r(str(i), 0.5) for i in range(16)]
    query = planned(
        DC, wave_size=4, max_branches=16, give_up=0.5, deep_conf=online(keep_percent=100)
    )
    run = drive_query(query, in_order(*replies))
    assert run.launch_sizes == [4, 4] and run.final is not None and run.final.gave_up
