"""`budget-forcing` (s1): append Wait below the thinking minimum, force the answer at the cap."""

from __future__ import annotations

from ponder.api.service_config import BudgetForcingConfig, ExtractorKind
from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.base import PlannedQuery
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned

BF = StrategyName.BUDGET_FORCING


def forcing_query(min_thinking: int = 50, max_waits: int = 2, **changes: object) -> PlannedQuery:
    config = BudgetForcingConfig(
        min_thinking_tokens=min_thinking,
        wait_token="Wait",
        answer_prompt="Final Answer:",
        max_waits=max_waits,
    )
    return planned(BF, **{"budget_forcing": config, "max_tokens_per_branch": 100, **changes})


def test_stopping_below_the_minimum_appends_wait_and_continues() -> None:
    replies = [Reply("23+48=71 #71", tokens=10), Reply(" 71-17=54 #54", tokens=45)]
    run = drive_query(forcing_query(), in_order(*replies))
    first, second = run.requests
    assert (first.n, first.continuation, first.max_tokens) == (1, "", 100)
    assert second.continuation == "23+48=71 #71\nWait"
    assert second.max_tokens == 90  # the thinking cap counts the whole chain
    assert run.finished and run.final is not None
    assert run.final.answer == "54"
    assert run.final.text == "23+48=71 #71\nWait 71-17=54 #54"


def test_waits_stop_after_max_waits() -> None:
    replies = [Reply("#1", tokens=5), Reply(" #2", tokens=5), Reply(" #3", tokens=5), Reply("x")]
    run = drive_query(forcing_query(min_thinking=90, max_waits=2), in_order(*replies))
    assert [r.continuation.count("Wait") for r in run.requests] == [0, 1, 2]
    assert run.final is not None and run.final.answer == "3"


def test_thinking_cap_forces_the_final_answer() -> None:
    replies = [Reply(" ".join(["23+48=71 71-17=54"] * 20), tokens=500), Reply(" 54\n", tokens=2)]
    run = drive_query(forcing_query(min_thinking=0), in_order(*replies))
    think, force = run.requests
    assert think.max_tokens == 100
    assert force.continuation.endswith("\nFinal Answer:")
    assert force.continuation.startswith("23+48=71")
    assert force.max_tokens == 32
    assert run.finished and run.final is not None
    assert run.final.answer == "54"
    assert run.spent_tokens == 102


def test_wait_then_cap_forces_the_answer_within_the_thinking_cap() -> None:
    replies = [Reply("a=1", tokens=60), Reply(" b=2 " * 50, tokens=500), Reply(" 7", tokens=1)]
    run = drive_query(forcing_query(min_thinking=200), in_order(*replies))
    assert [r.max_tokens for r in run.requests] == [100, 40, 32]
    assert "Wait" in run.requests[1].continuation
    assert run.final is not None and run.final.answer == "7"


def test_a_chain_that_stops_without_an_answer_is_forced_to_answer() -> None:
    replies = [Reply("thinking about it", tokens=60), Reply(" 12.0", tokens=3)]
    run = drive_query(forcing_query(min_thinking=50), in_order(*replies))
    assert run.requests[1].continuation == "thinking about it\nFinal Answer:"
    assert run.final is not None and run.final.answer == "12"


def test_forced_answer_without_a_pattern_takes_the_first_line() -> None:
    config = BudgetForcingConfig(answer_prompt="So the result is", min_thinking_tokens=0)
    query = planned(BF, budget_forcing=config, max_tokens_per_branch=10)
    run = drive_query(query, in_order(Reply("long", tokens=99), Reply(" 54.\nmore", tokens=4)))
    assert run.final is not None and run.final.answer == "54"


def test_a_forced_answer_that_is_no_answer_falls_back_to_the_chains() -> None:
    # What followed the prompt is neither read by the extractor nor a number alone (measured on
    # the arithmetic model: "51 718+78=165 ###5"): the chain's own answer stands.
    config = BudgetForcingConfig(answer_prompt="So the result is", min_thinking_tokens=0)
    query = planned(BF, budget_forcing=config, max_tokens_per_branch=10)
    replies = [Reply("23+48=71 #71", tokens=99), Reply(" 51 718+78=165 ###5", tokens=8)]
    run = drive_query(query, in_order(*replies))
    assert run.final is not None and run.final.answer == "71"


def test_a_forced_answer_that_is_no_answer_after_no_answer_has_none() -> None:
    config = BudgetForcingConfig(answer_prompt="So the result is", min_thinking_tokens=0)
    query = planned(BF, budget_forcing=config, max_tokens_per_branch=10)
    run = drive_query(query, in_order(Reply("long", tokens=99), Reply(" maybe 5 or 6", tokens=4)))
    assert run.final is not None and run.final.answer is None


def test_the_forced_answer_is_kept_in_reserve_within_a_tight_budget() -> None:
    query = forcing_query(min_thinking=0, budget_tokens=60)
    run = drive_query(query, in_order(Reply("x" * 400, tokens=400), Reply(" 3", tokens=100)))
    assert [r.max_tokens for r in run.requests] == [30, 30]
    assert run.spent_tokens == 60
    assert run.final is not None and run.final.answer == "3"


def test_a_failed_think_is_retried_and_counts_its_tokens() -> None:
    run = drive_query(forcing_query(min_thinking=0), in_order(FAILED, Reply("#8", tokens=10)))
    assert len(run.requests) == 2
    assert run.final is not None and run.final.answer == "8"


def test_nothing_completed_gives_no_answer() -> None:
    run = drive_query(forcing_query(max_branches=1), in_order(FAILED))
    assert run.final is None


def test_an_answer_only_before_the_wait_is_not_the_last_word() -> None:
    replies = [Reply("#71", tokens=10), Reply(" on second thought", tokens=45), Reply(" 54")]
    run = drive_query(forcing_query(min_thinking=50), in_order(*replies))
    assert [r.tag.split("-")[0] for r in run.requests] == ["think", "think", "answer"]
    assert run.final is not None and run.final.answer == "54"


def test_a_forced_answer_that_writes_nothing_keeps_the_answer_the_chain_gave() -> None:
    # SmolLM2's chat turns often end right after "Final Answer:" (one token, the end of turn).
    replies = [
        Reply("3 + 4 = 7", tokens=8),
        Reply(", that's a joke.", tokens=7),
        Reply("", tokens=1),
    ]
    query = forcing_query(min_thinking=90, max_waits=1, extractor=ExtractorKind.LAST_NUMBER)
    run = drive_query(query, in_order(*replies))
    assert [r.tag.split("-")[0] for r in run.requests] == ["think", "think", "answer"]
    assert run.final is not None
    assert run.final.text == "3 + 4 = 7\nWait, that's a joke.\nFinal Answer:"
    assert (run.final.answer, run.final.votes) == ("7", {"7": 1.0})


def test_a_forced_answer_that_writes_nothing_after_no_answer_has_none() -> None:
    replies = [Reply("let me think", tokens=60), Reply("", tokens=1)]
    run = drive_query(forcing_query(min_thinking=50), in_order(*replies))
    assert run.final is not None
    assert (run.final.answer, run.final.votes) == (None, {})
