"""`adaptive-consistency`: waves until the Beta posterior (or a verified answer) settles it."""

from __future__ import annotations

import math

import pytest

from ponder.api.service_config import DeepConfConfig, StoppingRule
from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.adaptive_consistency import leader_is_majority_probability
from ponder.scheduler.strategies.base import Launch, ScoreMode, Wait
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned

AC = StrategyName.ADAPTIVE_CONSISTENCY


def beta_tail_by_integration(v1: int, v2: int, intervals: int = 4000) -> float:
    """P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1), by Simpson's rule on the density."""
    a, b = v1 + 1, v2 + 1
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)

    def density(x: float) -> float:
        if x <= 0.0 or x >= 1.0:
            return math.exp(log_norm) if (x == 0.0 and a == 1) or (x == 1.0 and b == 1) else 0.0
        return math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))

    step = 0.5 / intervals
    total = density(0.5) + density(1.0)
    for i in range(1, intervals):
        total += (4 if i % 2 else 2) * density(0.5 + i * step)
    return total * step / 3


@pytest.mark.parametrize(
    ("v1", "v2", "exact"),
    [
        (0, 0, 0.5),
        (1, 0, 0.75),
        (2, 0, 7 / 8),
        (4, 0, 31 / 32),
        (3, 1, 26 / 32),
        (7, 1, 502 / 512),
        (5, 5, 0.5),
        (10, 3, None),
        (20, 12, None),
    ],
)
def test_beta_stopping_probability_matches_reference(v1: int, v2: int, exact: float | None) -> None:
    probability = leader_is_majority_probability(v1, v2)
    if exact is not None:
        assert probability == pytest.approx(exact, abs=1e-12)
    assert probability == pytest.approx(beta_tail_by_integration(v1, v2), abs=1e-6)


def test_beta_stopping_probability_grows_with_agreement() -> None:
    values = [leader_is_majority_probability(v, 1) for v in range(1, 12)]
    assert values == sorted(values) and values[-1] > 0.99


def test_temperature_zero_stops_after_the_first_wave() -> None:
    query = planned(AC, temperature=0.0, wave_size=4, confidence=0.999)
    run = drive_query(query, in_order("23+48=71 #71"))
    assert run.launch_sizes == [1]  # every greedy sample is the same: one is enough
    assert run.finished and run.final is not None and run.final.answer == "71"


def test_temperature_zero_with_a_verifier_also_stops_after_the_first_wave() -> None:
    query = planned(AC, temperature=0.0, has_verifier=True)
    run = drive_query(query, in_order(Reply("#71", score=0.1)))
    assert run.launch_sizes == [1] and run.finished


def test_unanimous_first_wave_reaches_the_threshold() -> None:
    run = drive_query(planned(AC, wave_size=4, confidence=0.95), in_order(*["#42"] * 4))
    assert run.launch_sizes == [4]
    assert run.final is not None
    assert (run.final.answer, run.final.confidence) == ("42", pytest.approx(31 / 32))


def test_split_wave_launches_another_and_stops_when_confident() -> None:
    answers = ["#42", "#42", "#17", "#42"] + ["#42"] * 4
    run = drive_query(planned(AC, wave_size=4, confidence=0.95), in_order(*answers))
    assert run.launch_sizes == [4, 4]
    assert run.final is not None
    assert run.final.answer == "42"
    assert run.final.confidence == pytest.approx(leader_is_majority_probability(7, 1))
    assert run.final.votes == {"42": 7.0, "17": 1.0}


def test_decides_only_after_the_whole_wave() -> None:
    run = drive_query(planned(AC, wave_size=4), in_order(*(["#42"] * 3 + ["#17"]) + ["#42"] * 8))
    assert [type(d) for d in run.decisions[:4]] == [Wait, Wait, Wait, Launch]


def test_stops_at_max_branches_with_the_best_vote() -> None:
    answers = ["#1", "#2"] * 8
    run = drive_query(planned(AC, wave_size=4, max_branches=8), in_order(*answers))
    assert run.launched == 8
    assert run.finished and run.final is not None and run.final.answer == "1"
    assert run.final.confidence == pytest.approx(0.5)


def test_stops_when_the_budget_cannot_pay_for_another_wave() -> None:
    query = planned(AC, wave_size=2, budget_tokens=100, max_tokens_per_branch=40)
    run = drive_query(query, in_order(*[Reply(f"#{i}", tokens=30) for i in range(10)]))
    # wave 1: 2 x 40 reserved, 60 spent; the 40 left pay 2 branches of half the cap; then none
    assert run.launch_sizes == [2, 2]
    assert [r.max_tokens for r in run.requests] == [40, 20]
    assert run.spent_tokens == 100
    assert run.finished


def test_a_wave_of_failures_is_not_a_vote() -> None:
    run = drive_query(planned(AC, wave_size=2), in_order(FAILED, FAILED, "#5", "#5", "#5", "#5"))
    assert run.launch_sizes[:2] == [2, 2]
    assert run.final is not None and run.final.answer == "5"


def test_verifier_mode_keeps_sampling_past_agreement_until_a_verified_answer() -> None:
    query = planned(AC, wave_size=4, has_verifier=True, max_branches=16)
    wave_1 = [Reply("#42", score=0.2)] * 4  # unanimous, but never verified
    wave_2 = [Reply("#42", score=0.3)] * 3 + [Reply("#17", score=0.995)]
    run = drive_query(query, in_order(*wave_1, *wave_2, *[Reply("#42")] * 8))
    assert all(r.score == ScoreMode.FINAL for r in run.requests)
    assert run.launch_sizes == [4, 4]
    assert run.final is not None and run.final.answer == "17"
    assert run.final.scores == [0.2] * 4 + [0.3] * 3 + [0.995]


def test_verifier_mode_votes_among_verified_answers() -> None:
    query = planned(AC, wave_size=4, has_verifier=True)
    wave = [
        Reply("#17", score=0.999),
        Reply("#42", score=0.995),
        Reply("#42", score=0.992),
        Reply("#17", score=0.1),
    ]
    run = drive_query(query, in_order(*wave))
    assert run.final is not None and run.final.answer == "42"
    assert run.final.votes == {"17": 1.0, "42": 2.0}


def test_verifier_mode_without_a_verified_answer_falls_back_to_majority() -> None:
    query = planned(AC, wave_size=4, has_verifier=True, max_branches=8)
    run = drive_query(query, in_order(*[Reply("#3", score=0.5)] * 5, *[Reply("#4", score=0.6)] * 3))
    assert run.launched == 8
    assert run.final is not None and run.final.answer == "3"


def test_late_waves_launch_fewer_branches_rather_than_starved_ones() -> None:
    query = planned(AC, wave_size=4, budget_tokens=200, max_tokens_per_branch=40)
    run = drive_query(query, in_order(*[Reply(f"#{i}", tokens=40) for i in range(10)]))
    # wave 1 spends 160; 40 left: two branches of half the cap, not four of 10 tokens
    assert [(r.n, r.max_tokens) for r in run.requests] == [(4, 40), (2, 20)]


def test_a_learned_verifiers_accept_score_decides_what_counts_as_verified() -> None:
    """0.75 is verified at `accept_score` 0.7 (a learned model's calibrated cut), not at the
    exact checker's default 0.99."""
    wave_1 = [Reply("#42", score=0.2)] * 3 + [Reply("#17", score=0.75)]
    rest = [Reply("#42", score=0.2)] * 12
    lenient = drive_query(
        planned(AC, wave_size=4, has_verifier=True, accept_score=0.7), in_order(*wave_1, *rest)
    )
    strict = drive_query(planned(AC, wave_size=4, has_verifier=True), in_order(*wave_1, *rest))
    assert lenient.launch_sizes == [4]
    assert lenient.final is not None and lenient.final.answer == "17"
    assert strict.launched == 16
    assert strict.final is not None and strict.final.answer == "42"


def test_an_unsettled_query_gives_up_at_its_share_of_the_cap_and_says_so() -> None:
    # Every answer differs: no wave settles the vote. Half of the 16-branch cap is 8 branches.
    scattered = [f"#{i}" for i in range(16)]
    run = drive_query(planned(AC, wave_size=2, max_branches=16, give_up=0.5), in_order(*scattered))
    assert run.launched == 8 and run.finished
    assert run.final is not None and run.final.gave_up


def test_giving_up_counts_the_budget_spent_too() -> None:
    # 100-token branches against a 1,000-token budget: 4 branches spend 40% of it.
    replies = [Reply(f"#{i}", tokens=100) for i in range(10)]
    query = planned(AC, wave_size=2, max_branches=10, budget_tokens=1000, give_up=0.4)
    run = drive_query(query, in_order(*replies))
    assert run.launched == 4 and run.final is not None and run.final.gave_up


def test_a_query_settled_before_its_give_up_share_has_not_given_up() -> None:
    run = drive_query(planned(AC, wave_size=4, give_up=0.5), in_order(*["#42"] * 4))
    assert run.final is not None and not run.final.gave_up


def test_at_give_up_one_an_unsettled_query_runs_to_its_cap_without_giving_up() -> None:
    scattered = [f"#{i}" for i in range(16)]
    run = drive_query(planned(AC, wave_size=2, max_branches=16, give_up=1.0), in_order(*scattered))
    assert run.launched == 16 and run.final is not None and not run.final.gave_up


# --- selectable stopping rules ----------------------------------------------------------------

W = StoppingRule.WINDOW
C = StoppingRule.CONFIDENCE


@pytest.mark.parametrize(
    ("answers", "sizes", "final"),
    [
        # A unanimous first window stops at once.
        (["#42"] * 4, [4], "42"),
        # 3 of 4 agree: Beta at 0.95 is not reached either, the second window is unanimous.
        (["#42", "#42", "#17", "#42"] + ["#42"] * 4, [4, 4], "42"),
        # The second window agrees on another answer: it stops there and the vote over both
        # windows answers (5 against 3).
        (["#42", "#42", "#42", "#17"] + ["#17"] * 4, [4, 4], "17"),
        # A branch without an answer breaks the window's agreement.
        (["#42", "#42", "no", "#42"] + ["#42"] * 4, [4, 4], "42"),
    ],
)
def test_window_rule_stops_once_a_whole_wave_agrees(
    answers: list[str], sizes: list[int], final: str
) -> None:
    run = drive_query(planned(AC, wave_size=4, stopping_rule=W), in_order(*answers))
    assert run.launch_sizes == sizes
    assert run.final is not None and run.final.answer == final


def test_window_rule_stops_where_beta_would_not() -> None:
    """Two agreeing branches settle a window of two; Beta at 0.95 needs four in a row."""
    answers = ["#42"] * 8
    window = drive_query(planned(AC, wave_size=2, stopping_rule=W), in_order(*answers))
    beta = drive_query(
        planned(AC, wave_size=2, stopping_rule=StoppingRule.BETA), in_order(*answers)
    )
    assert window.launch_sizes == [2] and beta.launch_sizes == [2, 2]


def test_window_rule_never_settles_on_a_wave_of_one() -> None:
    run = drive_query(
        planned(AC, wave_size=1, max_branches=3, stopping_rule=W), in_order(*["#42"] * 3)
    )
    assert run.launch_sizes == [1, 1, 1]


def test_window_rule_with_a_failed_branch_in_the_wave_goes_on() -> None:
    run = drive_query(
        planned(AC, wave_size=2, stopping_rule=W), in_order("#42", FAILED, "#42", "#42")
    )
    assert run.launch_sizes == [2, 2]


def c(answer: str, confidence: float) -> Reply:
    return Reply(answer, confidence=confidence)


def test_confidence_rule_asks_the_workers_for_confidence_and_weights_the_vote() -> None:
    # 2 votes of weak confidence against 2 of strong: the strong answer leads by weight.
    wave = [c("#42", 0.1), c("#42", 0.1), c("#17", 0.9), c("#17", 0.9)]
    query = planned(AC, wave_size=4, max_branches=4, stopping_rule=C)
    run = drive_query(query, in_order(*wave))
    assert all(r.confidence and r.confidence_stop_below is None for r in run.requests)
    assert run.final is not None and run.final.answer == "17"
    assert run.final.confidence == pytest.approx(1.8 / 2.0)


@pytest.mark.parametrize(
    ("consensus", "sizes"),
    [
        (0.85, [4]),  # the leader holds 1.8 / 2.0 = 0.9 of the weight after one wave
        (0.95, [4, 4]),  # not yet: the second, unanimous wave lifts it to 5.4 / 5.6
    ],
)
def test_confidence_rule_stops_at_the_deep_conf_consensus(
    consensus: float, sizes: list[int]
) -> None:
    wave_1 = [c("#42", 0.1), c("#42", 0.1), c("#17", 0.9), c("#17", 0.9)]
    wave_2 = [c("#17", 0.9)] * 4
    query = planned(AC, wave_size=4, stopping_rule=C, deep_conf=DeepConfConfig(consensus=consensus))
    run = drive_query(query, in_order(*wave_1, *wave_2, *wave_2))
    assert run.launch_sizes == sizes
    assert run.final is not None and run.final.answer == "17"


def test_confidence_rule_without_confidences_falls_back_to_a_plain_vote() -> None:
    run = drive_query(
        planned(AC, wave_size=4, max_branches=4, stopping_rule=C),
        in_order("#42", "#42", "#42", "#17"),
    )
    assert run.final is not None and run.final.answer == "42"


def test_an_explicit_beta_rule_ignores_the_services_verifier() -> None:
    query = planned(AC, wave_size=4, has_verifier=True, stopping_rule=StoppingRule.BETA)
    run = drive_query(query, in_order(*[Reply("#42", score=0.1)] * 4))
    assert all(r.score is ScoreMode.NONE for r in run.requests)  # nothing to score
    assert run.launch_sizes == [4]  # the unanimous vote settles it; no verified answer needed
