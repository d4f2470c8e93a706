"""The overthinking benchmark's arms and figures (bench/overthinking.py), without a stack."""

from __future__ import annotations

import argparse

import pytest

from bench.overthinking import (
    BRANCH_COUNTS,
    STYLES,
    ArmRow,
    Cut,
    arm_row,
    arms,
    bench_service,
    cuts,
    parse_args,
    parse_styles,
)
from bench.summary import QueryRecord
from models.smollm2.questions import BENCH_SEED, DEMO_SEED, word_questions
from ponder.api.service_config import EarlyExit, ExtractorKind


def record(correct: bool, tokens: int, after: int, probes: int = 0, exits: int = 0) -> QueryRecord:
    return QueryRecord(
        label="x",
        system="ponder",
        problem_index=0,
        question="q",
        truth=7,
        answer="7" if correct else "6",
        correct=correct,
        prompt_tokens=10,
        completion_tokens=tokens,
        latency_seconds=1.0,
        branches=4,
        tokens_after_answer=after,
        early_exits=exits,
        probe_tokens=probes,
    )


def test_every_branch_count_is_asked_without_and_with_the_early_exit_in_each_style() -> None:
    found = arms(["short", "explain"], max_tokens=64)
    specs = [arm.spec for arm in found]
    assert [spec.label for spec in specs[:6]] == [
        "short: greedy",
        "short: greedy +probe",
        "short: sc@4",
        "short: sc@4 +probe",
        "short: sc@8",
        "short: sc@8 +probe",
    ]
    assert [arm.style for arm in found] == ["short"] * 6 + ["explain"] * 6
    assert [arm.early_exit for arm in found] == [False, True] * 6
    assert [arm.branches for arm in found[:6]] == [1, 1, 4, 4, 8, 8]
    assert specs[0].temperature == 0.0 and specs[0].strategy == "single"
    # The arms differ only in the early exit: same deadline and cap everywhere.
    assert len({spec.options["deadline_ms"] for spec in specs}) == 1
    assert {spec.max_tokens for spec in specs} == {64}
    assert len(found) == 2 * 2 * len(BRANCH_COUNTS)


def test_styles_are_checked_on_the_command_line() -> None:
    assert parse_styles("explain, short") == ["explain", "short"]
    with pytest.raises(argparse.ArgumentTypeError, match="styles are short, explain"):
        parse_styles("long")
    assert parse_args([]).styles == list(STYLES)


def test_the_service_reads_last_numbers_and_probes_as_asked_but_never_by_default() -> None:
    config = bench_service(every=16, window=3)
    assert config.strategy.extractor == ExtractorKind.LAST_NUMBER
    assert config.strategy.early_exit.default == EarlyExit.NONE
    probe = config.strategy.early_exit.probe
    assert (probe.every_tokens, probe.window) == (16, 3)


def test_the_benchmark_questions_are_not_the_demos() -> None:
    bench = {q.question for q in word_questions(30, BENCH_SEED)}
    demo = {q.question for q in word_questions(24, DEMO_SEED)}
    assert not bench & demo


def test_an_arm_row_averages_per_query_and_counts_exits_per_branch() -> None:
    arm = arms(["explain"], max_tokens=64)[3]  # sc@4 +probe
    row = arm_row(arm, [record(True, 200, 40, 20, 2), record(False, 100, 10, 10, 0)])
    assert row.style == "explain"
    assert (row.branches, row.early_exit, row.queries) == (4, True, 2)
    assert row.accuracy == 0.5 and row.tokens_per_query == 150.0
    assert row.after_answer_per_query == 25.0 and row.probe_tokens_per_query == 15.0
    assert row.early_exit_share == 2 / 8


def row(
    branches: int, early: bool, accuracy: float, tokens: float, after: float, style: str = "short"
) -> ArmRow:
    return ArmRow("x", style, branches, early, 10, accuracy, tokens, after, 0.0, 0.0, 1.0, 0)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [row(4, False, 0.5, 200.0, 100.0), row(4, True, 0.5, 100.0, 10.0)],
            [Cut("short", 4, 0.5, 0.0, 0.5)],
        ),
        (
            [row(1, False, 0.5, 40.0, 4.0), row(1, True, 0.25, 50.0, 4.0)],
            [Cut("short", 1, -0.25, -0.25, 0.1)],
        ),
        (  # styles are compared apart
            [
                row(4, False, 0.5, 200.0, 100.0, "explain"),
                row(4, True, 0.5, 200.0, 10.0, "short"),
            ],
            [],
        ),
        ([row(8, False, 0.5, 200.0, 100.0)], []),  # no pair, no cut
    ],
)
def test_cuts_compare_each_branch_count_with_and_without(
    rows: list[ArmRow], expected: list[Cut]
) -> None:
    assert cuts(rows) == expected


@pytest.mark.parametrize(
    ("cut", "met"),
    [
        (Cut("short", 4, 0.45, 0.0, 0.5), True),
        (Cut("short", 4, 0.45, -0.01, 0.5), False),  # fewer tokens, but lower accuracy
        (Cut("short", 4, 0.2, 0.1, 0.5), False),  # better, but not 40% fewer tokens
    ],
)
def test_the_target_needs_the_cut_at_no_lower_accuracy(cut: Cut, met: bool) -> None:
    assert cut.meets_target is met
