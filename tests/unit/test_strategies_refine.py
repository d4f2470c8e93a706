"""`refine`: draft -> critique -> revise until the verifier passes or the budget ends."""

from __future__ import annotations

from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.base import BranchRequest, ScoreMode
from ponder.scheduler.strategies.refine import critique_prompt, revise_prompt
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned

REFINE = StrategyName.REFINE


def phases(requests: list[BranchRequest]) -> list[str]:
    return [r.tag for r in requests]


def test_refine_stops_when_the_verifier_passes() -> None:
    replies = [
        Reply("23+48=70 70-17=53 #53", score=0.2),  # draft
        Reply("48+23 is 71, not 70"),  # critique
        Reply("23+48=71 71-17=54 #54", score=0.995),  # revision passes
        Reply("never asked"),
    ]
    run = drive_query(planned(REFINE, has_verifier=True), in_order(*replies))
    assert phases(run.requests) == ["draft-0", "critique-0", "revise-1"]
    assert run.finished and run.final is not None
    assert (run.final.answer, run.final.confidence) == ("54", 0.995)
    assert run.final.scores == [0.2, 0.995]


def test_refine_passing_draft_needs_no_revision() -> None:
    run = drive_query(planned(REFINE, has_verifier=True), in_order(Reply("#54", score=1.0)))
    assert phases(run.requests) == ["draft-0"]
    assert run.final is not None and run.final.answer == "54"


def test_refine_builds_critique_and_revision_prompts_from_the_question() -> None:
    replies = [Reply("#53", score=0.1), Reply("wrong sum"), Reply("#54", score=1.0)]
    query = planned(REFINE, has_verifier=True, question="What is 23+48-17?")
    run = drive_query(query, in_order(*replies))
    draft, critique, revise = run.requests
    assert (draft.prompt_override, draft.score) == (None, ScoreMode.FINAL)
    assert critique.prompt_override == critique_prompt("What is 23+48-17?", "#53")
    assert critique.score == ScoreMode.NONE
    assert revise.prompt_override == revise_prompt("What is 23+48-17?", "#53", "wrong sum")
    assert revise.score == ScoreMode.FINAL
    assert "What is 23+48-17?" in revise.prompt_override and "wrong sum" in revise.prompt_override


def test_refine_keeps_revising_until_the_budget_ends_and_answers_with_the_best() -> None:
    replies = [
        Reply("#50", score=0.1, tokens=20),
        Reply("critique", tokens=20),
        Reply("#54", score=0.7, tokens=20),
        Reply("critique", tokens=20),
        Reply("#51", score=0.3, tokens=20),
        Reply("unused", tokens=20),
    ]
    query = planned(REFINE, has_verifier=True, budget_tokens=100, max_tokens_per_branch=20)
    run = drive_query(query, in_order(*replies))
    assert phases(run.requests) == ["draft-0", "critique-0", "revise-1", "critique-1", "revise-2"]
    assert run.spent_tokens == 100
    assert run.final is not None and run.final.answer == "54"


def test_refine_without_verifier_runs_one_round() -> None:
    replies = [Reply("#53"), Reply("check the sum"), Reply("#54"), Reply("never asked")]
    run = drive_query(planned(REFINE, has_verifier=False), in_order(*replies))
    assert phases(run.requests) == ["draft-0", "critique-0", "revise-1"]
    assert all(r.score == ScoreMode.NONE for r in run.requests)
    assert run.final is not None and run.final.answer == "54"


def test_refine_retries_a_failed_turn() -> None:
    replies = [FAILED, Reply("#53"), FAILED, Reply("critique"), Reply("#54")]
    run = drive_query(planned(REFINE), in_order(*replies))
    assert phases(run.requests) == ["draft-0", "draft-0", "critique-0", "critique-0", "revise-1"]
    assert run.final is not None and run.final.answer == "54"


def test_refine_respects_max_branches() -> None:
    replies = [Reply(f"#{i}", score=0.1) if i % 2 == 0 else Reply("c") for i in range(20)]
    run = drive_query(planned(REFINE, has_verifier=True, max_branches=4), in_order(*replies))
    assert run.launched == 4
    assert run.final is not None and run.final.answer == "2"  # equal scores: the latest


def test_refine_passes_at_the_services_accept_score() -> None:
    replies = [Reply("#54", score=0.8), Reply("never asked")]
    run = drive_query(planned(REFINE, has_verifier=True, accept_score=0.7), in_order(*replies))
    assert phases(run.requests) == ["draft-0"]
    assert run.final is not None and run.final.answer == "54"
