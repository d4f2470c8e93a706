"""`beam-search`: K continuations per beam up to the step delimiter, keep the top B by PRM score."""

from __future__ import annotations

from collections import defaultdict

from ponder.api.service_config import BeamConfig
from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.base import BranchRequest, PlannedQuery, ScoreMode
from tests.unit.recorded_branches import FAILED, Reply, Respond, drive_query, planned

BEAM = StrategyName.BEAM_SEARCH


def beam_query(**changes: object) -> PlannedQuery:
    beam = BeamConfig(width=2, expansions=2, step_delimiter=" ", max_steps=8)
    return planned(BEAM, **{"beam": beam, "max_branches": 64, **changes})


def tree(replies: dict[str, list[Reply]]) -> Respond:
    """Replies by the prefix a step continues, handed out in turn."""
    served: dict[str, int] = defaultdict(int)

    def respond(request: BranchRequest, _index: int) -> Reply:
        options = replies[request.continuation]
        reply = options[served[request.continuation] % len(options)]
        served[request.continuation] += 1
        return reply

    return respond


ARITHMETIC = {
    "": [
        Reply("23+48=71", score=0.9),
        Reply("23+48=70", score=0.2),
        Reply("23+48=72", score=0.3),
        Reply("23+48=69", score=0.8),
    ],
    "23+48=71 ": [Reply("71-17=54", score=0.95), Reply("71-17=55", score=0.4)],
    "23+48=69 ": [Reply("69-17=52", score=0.5), Reply("69-17=51", score=0.1)],
    "23+48=71 71-17=54 ": [Reply("#54", score=0.97), Reply("#54", score=0.96)],
    "23+48=69 69-17=52 ": [Reply("#52", score=0.6), Reply("#52", score=0.5)],
    "23+48=71 71-17=55 ": [Reply("#55", score=0.3)],
}


def test_beam_search_keeps_the_top_b_and_answers_with_the_best_finished_beam() -> None:
    run = drive_query(beam_query(), tree(ARITHMETIC))
    assert run.launch_sizes == [4, 4, 4]
    step_2 = [r for r in run.requests if r.tag.startswith("step-1/")]
    assert sorted(r.continuation for r in step_2) == ["23+48=69 ", "23+48=71 "]
    step_3 = [r for r in run.requests if r.tag.startswith("step-2/")]
    assert sorted(r.continuation for r in step_3) == ["23+48=69 69-17=52 ", "23+48=71 71-17=54 "]
    assert all(r.stop == (" ",) and r.score == ScoreMode.STEP for r in run.requests)
    assert run.finished and run.final is not None
    assert (run.final.text, run.final.answer) == ("23+48=71 71-17=54 #54", "54")
    assert run.final.confidence == 0.97
    assert run.final.votes == {"54": 2.0, "52": 2.0}


def test_beam_search_root_expands_into_b_times_k() -> None:
    run = drive_query(beam_query(), tree(ARITHMETIC))
    assert [(r.n, r.continuation) for r in run.begun] == [(4, "")]


def test_beam_search_stops_at_max_steps_with_the_best_partial_beam() -> None:
    beam = BeamConfig(width=2, expansions=2, step_delimiter=" ", max_steps=2)
    run = drive_query(beam_query(beam=beam), tree(ARITHMETIC))
    assert run.launch_sizes == [4, 4]
    assert run.final is not None
    assert (run.final.text, run.final.answer) == ("23+48=71 71-17=54", None)


def test_beam_search_expands_only_what_the_branch_cap_allows_best_beams_first() -> None:
    run = drive_query(beam_query(max_branches=6), tree(ARITHMETIC))
    assert run.launch_sizes == [4, 2]
    assert run.requests[1].continuation == "23+48=71 "
    assert run.launched == 6


def test_beam_search_shares_the_budget_per_step_and_never_exceeds_it() -> None:
    run = drive_query(
        beam_query(budget_tokens=100, max_tokens_per_branch=50),
        tree(
            {k: [Reply(r.text, tokens=8, score=r.score) for r in v] for k, v in ARITHMETIC.items()}
        ),
    )
    assert run.requests[0].max_tokens == 25  # 100 tokens over 4 root branches
    assert run.spent_tokens <= 100
    assert run.final is not None


def test_an_empty_step_finishes_the_beam() -> None:
    replies = {
        "": [Reply("x=1", score=0.9), Reply("", score=0.99)],
        "x=1 ": [Reply("", score=0.7)],
    }
    query = beam_query(beam=BeamConfig(width=1, expansions=2, step_delimiter=" ", max_steps=4))
    run = drive_query(query, tree(replies))
    assert run.launch_sizes == [2, 2]
    assert run.final is not None
    assert (run.final.text, run.final.answer) == ("x=1", None)


def test_a_step_cut_by_max_tokens_continues_mid_step() -> None:
    replies = {
        "": [Reply("23+48=7", tokens=10, finish_reason="length", score=0.5)],
        "23+48=7": [Reply("1 #71", score=0.9)],
    }
    query = beam_query(beam=BeamConfig(width=1, expansions=1, step_delimiter=" ", max_steps=4))
    run = drive_query(query, tree(replies))
    assert run.requests[1].continuation == "23+48=7"
    assert run.final is not None and run.final.answer == "71"


def test_beam_search_without_verifier_ranks_steps_by_logprob() -> None:
    replies = {
        "": [Reply("a=1", mean_logprob=-3.0), Reply("a=2", mean_logprob=-0.1)],
        "a=2 ": [Reply("#2")],
        "a=1 ": [Reply("#1")],
    }
    query = beam_query(beam=BeamConfig(width=1, expansions=2, step_delimiter=" ", max_steps=4))
    run = drive_query(query, tree(replies))
    assert run.requests[1].continuation == "a=2 "
    assert run.final is not None and run.final.answer == "2"


def test_a_failed_step_is_retried_from_the_same_beams() -> None:
    calls = iter([FAILED, FAILED, Reply("#3", score=0.9), Reply("#3", score=0.8)])
    query = beam_query(beam=BeamConfig(width=1, expansions=2, step_delimiter=" ", max_steps=4))
    run = drive_query(query, lambda request, index: next(calls))
    assert run.launch_sizes == [2, 2]
    assert run.final is not None and run.final.answer == "3"


def test_query_stop_strings_ride_along_with_the_delimiter() -> None:
    run = drive_query(beam_query(stop=("Q:", " ")), tree(ARITHMETIC))
    assert run.begun[0].stop == (" ", "Q:")
