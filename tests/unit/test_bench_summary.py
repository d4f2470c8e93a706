"""The benchmarks' arithmetic: records from responses, summaries, and the comparisons reported."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.clients import metric_total
from bench.summary import (
    QueryRecord,
    Summary,
    branches_saved,
    compare_at_equal_tokens,
    efficiency_ratio,
    peer_record,
    percentile,
    ponder_record,
    summarise,
    summarise_by_label,
    vote_share,
)
from models.arith.task import Problem

PROBLEM = Problem(operands=(23, 48, 17), operators=("+", "-"))  # 23+48-17 = 54


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([3.0], 0.5, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        ([0.0, 10.0], 0.95, 9.5),
    ],
)
def test_percentile_interpolates_between_ranks(
    values: list[float], fraction: float, expected: float
) -> None:
    assert percentile(values, fraction) == pytest.approx(expected)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 0.5))


@pytest.mark.parametrize(
    ("ponder", "saved"),
    [
        # adaptive search stopped after one wave of 4 out of 16 allowed
        (
            {
                "strategy": "adaptive-consistency",
                "branches_launched": 4,
                "branches_cancelled": 0,
                "plan": {"max_branches": 16},
            },
            12,
        ),
        # self-consistency stopped once the vote could not change: 3 branches cancelled
        (
            {
                "strategy": "self-consistency",
                "branches_launched": 8,
                "branches_cancelled": 3,
                "plan": {"max_branches": 8},
            },
            3,
        ),
        # cancelled by the deadline: nothing was saved, the answer was cut short
        (
            {
                "strategy": "self-consistency",
                "branches_launched": 8,
                "branches_cancelled": 3,
                "deadline_exceeded": True,
                "plan": {"max_branches": 8},
            },
            0,
        ),
        # beam search's cap is not an early stop
        (
            {
                "strategy": "beam-search",
                "branches_launched": 20,
                "branches_cancelled": 0,
                "plan": {"max_branches": 32},
            },
            0,
        ),
    ],
)
def test_branches_saved_counts_unlaunched_and_cancelled_branches(
    ponder: dict[str, Any], saved: int
) -> None:
    assert branches_saved(ponder) == saved


@pytest.mark.parametrize(
    ("votes", "answer", "share"),
    [({"54": 3.0, "44": 1.0}, "54", 0.75), ({"54": 3.0}, "44", 0.0), ({}, "54", None)],
)
def test_vote_share_is_the_answers_part_of_the_vote(
    votes: dict[str, float], answer: str, share: float | None
) -> None:
    assert vote_share(votes, answer) == share


def ponder_body(answer: str | None, branch_answers: list[str | None]) -> dict[str, Any]:
    return {
        "choices": [{"text": "23+48=71 71-17=54 #54", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 15, "completion_tokens": 88, "total_tokens": 103},
        "ponder": {
            "strategy": "self-consistency",
            "answer": answer,
            "branches_launched": 4,
            "branches_cancelled": 0,
            "votes": {"54": 3.0, "44": 1.0},
            "deadline_exceeded": False,
            "plan": {"max_branches": 4, "shrunk": True},
            "branches": [{"status": "completed", "answer": a} for a in branch_answers],
        },
    }


def test_ponder_record_reads_answer_usage_and_branches() -> None:
    record = ponder_record(
        "sc@4", 0, PROBLEM, ponder_body("54", ["54", "54", "44", "54"]), latency_seconds=0.5
    )
    assert record.correct
    assert record.truth == 54
    assert (record.prompt_tokens, record.completion_tokens) == (15, 88)
    assert record.branches == 4
    assert record.agreement == 0.75
    assert record.any_branch_correct is True
    assert record.branch_accuracy == 0.75
    assert record.shrunk


def test_ponder_record_falls_back_to_the_text_when_no_answer_was_chosen() -> None:
    record = ponder_record("sc@4", 0, PROBLEM, ponder_body(None, []), latency_seconds=0.5)
    assert record.answer == "54"
    assert record.correct
    assert record.any_branch_correct is None


def test_peer_record_extracts_the_answer_from_the_chat_message() -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": "23+48=71 71-17=44 #44"}}],
        "usage": {"completion_tokens": 120},
    }
    record = peer_record("optillm bon", "optillm", 1, PROBLEM, body, 2.0, branches=4)
    assert record.answer == "44"
    assert not record.correct
    assert record.completion_tokens == 120
    assert record.prompt_tokens == 0


def record(label: str, correct: bool, tokens: int, latency: float, error: str | None = None):
    return QueryRecord(
        label=label,
        system="ponder",
        problem_index=0,
        question="23+48-17",
        truth=54,
        answer="54" if correct else None,
        correct=correct,
        prompt_tokens=10,
        completion_tokens=tokens,
        latency_seconds=latency,
        error=error,
    )


def test_summarise_counts_errors_as_wrong_answers() -> None:
    summary = summarise(
        [
            record("sc", True, 20, 1.0),
            record("sc", True, 30, 2.0),
            record("sc", False, 0, 9.0, error="HTTP 504: deadline"),
            record("sc", False, 50, 3.0),
        ]
    )
    assert summary.queries == 4
    assert summary.accuracy == 0.5
    assert summary.errors == 1
    assert summary.mean_completion_tokens == 25.0
    assert summary.mean_total_tokens == 35.0
    assert summary.p50_latency_seconds == 2.5


def test_summarise_by_label_keeps_first_seen_order() -> None:
    records = [record("b", True, 1, 1.0), record("a", True, 1, 1.0), record("b", False, 1, 1.0)]
    labels = [summary.label for summary in summarise_by_label(records)]
    assert labels == ["b", "a"]


def row(label: str, accuracy: float, tokens: float, measured: float | None = None) -> Summary:
    return Summary(
        label=label,
        system="ponder",
        queries=10,
        accuracy=accuracy,
        mean_completion_tokens=tokens,
        mean_total_tokens=tokens,
        mean_branches=1.0,
        p50_latency_seconds=1.0,
        p95_latency_seconds=1.0,
        mean_branches_saved=0.0,
        errors=0,
        measured_completion_tokens=measured,
    )


def test_efficiency_ratio_takes_the_cheapest_candidate_as_accurate_as_the_reference() -> None:
    reference = row("sc@16", 0.55, 400.0)
    cheap_but_worse = row("adaptive@0.80", 0.50, 50.0)
    as_good = row("adaptive@0.95", 0.55, 120.0)
    better = row("adaptive+verifier", 0.80, 80.0)
    result = efficiency_ratio(reference, [cheap_but_worse, as_good, better])
    assert result.candidate is better
    assert result.ratio == pytest.approx(0.2)


def test_efficiency_ratio_without_a_candidate_reaching_the_reference_names_the_best() -> None:
    result = efficiency_ratio(row("sc@16", 0.9, 400.0), [row("a", 0.5, 50.0), row("b", 0.6, 90.0)])
    assert result.ratio is None
    assert result.best_candidate is not None and result.best_candidate.label == "b"


def test_measured_tokens_take_precedence_over_reported_usage() -> None:
    assert row("peer", 0.5, 10.0, measured=40.0).generated_tokens == 40.0
    assert row("ponder", 0.5, 10.0).generated_tokens == 10.0


def test_peer_is_compared_with_the_best_ponder_strategy_that_is_no_more_expensive() -> None:
    ponder = [row("single", 0.5, 20.0), row("bon@4", 0.8, 90.0), row("bon@16", 0.85, 400.0)]
    peers = [row("optillm bon", 0.45, 100.0), row("optillm sc", 0.4, 10.0)]
    first, second = compare_at_equal_tokens(peers, ponder)
    assert first.ponder is not None and first.ponder.label == "bon@4"
    assert first.ponder_wins
    assert second.ponder is None
    assert not second.ponder_wins


EXPOSITION = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="ponder-arith"} 1234.0
vllm:generation_tokens_created{engine="0",model_name="ponder-arith"} 1.7e9
vllm:prompt_tokens_total{engine="0",model_name="ponder-arith"} 99.0
vllm:num_requests_running{engine="0",model_name="ponder-arith"} 3.0
vllm:num_requests_running{engine="1",model_name="ponder-arith"} 2.0
"""


def test_metric_total_sums_a_metric_over_its_labels() -> None:
    assert metric_total(EXPOSITION, "vllm:generation_tokens_total") == 1234.0
    assert metric_total(EXPOSITION, "vllm:prompt_tokens_total") == 99.0
    assert metric_total(EXPOSITION, "vllm:num_requests_running") == 5.0
    with pytest.raises(ValueError, match="no vllm:missing"):
        metric_total(EXPOSITION, "vllm:missing")
