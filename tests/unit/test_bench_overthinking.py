"""The overthinking benchmark's arms and figures (bench/overthinking.py), without a stack."""

from __future__ import annotations

import argparse

import pytest

from bench import demo_smollm2
from bench.overthinking import (
    BRANCH_COUNTS,
    DEADLINE_MS,
    DEFAULT_QUESTIONS,
    STYLE_MAX_TOKENS,
    STYLES,
    ArmRow,
    Cut,
    arm_row,
    arms,
    bench_service,
    cuts,
    parse_args,
    parse_styles,
    style_caps,
)
from bench.summary import QueryRecord
from models.smollm2.questions import (
    BENCH_SEED,
    CHECK_INSTRUCTION,
    DEMO_SEED,
    EXPLAIN_INSTRUCTION,
    word_questions,
)
from models.smollm2.service import MAX_MODEL_LEN, MAX_TOKENS_PER_BRANCH
from ponder.api.service_config import EarlyExit, ExtractorKind


def record(
    correct: bool,
    tokens: int,
    after: int,
    probe_tokens: int = 0,
    exits: int = 0,
    probes: int = 0,
    capped: int = 0,
    shrunk: bool = False,
    late: bool = False,
) -> QueryRecord:
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
        probe_tokens=probe_tokens,
        probes=probes,
        capped_branches=capped,
        shrunk=shrunk,
        deadline_exceeded=late,
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


def test_the_check_style_gets_its_own_longer_cap_unless_one_cap_is_asked_for_all() -> None:
    found = arms(["short", "check"])
    assert {arm.spec.max_tokens for arm in found if arm.style == "short"} == {192}
    assert {arm.spec.max_tokens for arm in found if arm.style == "check"} == {512}
    assert {arm.spec.max_tokens for arm in arms(["short", "check"], max_tokens=64)} == {64}
    assert style_caps(["check", "explain"], None) == {"check": 512, "explain": 192}
    assert style_caps(["check"], 300) == {"check": 300}
    assert set(STYLE_MAX_TOKENS) == set(STYLES)


def test_every_style_asks_its_own_instruction() -> None:
    assert STYLES["explain"] == EXPLAIN_INSTRUCTION and STYLES["check"] == CHECK_INSTRUCTION
    assert len(set(STYLES.values())) == len(STYLES)


def test_styles_are_checked_on_the_command_line() -> None:
    assert parse_styles("explain, short") == ["explain", "short"]
    assert parse_styles("check") == ["check"]
    with pytest.raises(argparse.ArgumentTypeError, match="styles are short, explain, check"):
        parse_styles("long")
    assert parse_args([]).styles == ["short", "explain", "check"]
    assert parse_args([]).max_tokens is None
    assert parse_args([]).vllm_url is None
    assert parse_args(["--vllm-url", "http://127.0.0.1:8000"]).vllm_url == "http://127.0.0.1:8000"


def test_the_service_reads_last_numbers_and_probes_as_asked_but_never_by_default() -> None:
    config = bench_service(every=16, window=3, max_tokens=192, probe_tokens=5)
    assert config.strategy.extractor == ExtractorKind.LAST_NUMBER
    assert config.strategy.early_exit.default == EarlyExit.NONE
    probe = config.strategy.early_exit.probe
    assert (probe.every_tokens, probe.window, probe.probe_tokens) == (16, 3, 5)


@pytest.mark.parametrize(
    ("max_tokens", "admitted"),
    [(192, MAX_TOKENS_PER_BRANCH), (512, 512), (MAX_TOKENS_PER_BRANCH, MAX_TOKENS_PER_BRANCH)],
)
def test_the_service_admits_the_longest_styles_cap(max_tokens: int, admitted: int) -> None:
    config = bench_service(every=32, window=2, max_tokens=max_tokens)
    assert config.budget.max_tokens_per_branch == admitted


def test_the_service_admits_the_benchmarks_deadline_so_no_arm_is_cut_by_speed() -> None:
    config = bench_service(every=32, window=2, max_tokens=512)
    assert {arm.spec.options["deadline_ms"] for arm in arms(list(STYLES))} == {DEADLINE_MS}
    assert config.slo.max_deadline_ms >= DEADLINE_MS


def test_the_check_styles_cap_fits_the_context_with_a_prompt_and_a_probe() -> None:
    prompt_and_probe = 128  # a question in the chat template is about 70 tokens, a probe 8 more
    assert max(STYLE_MAX_TOKENS.values()) + prompt_and_probe <= MAX_MODEL_LEN


def test_the_benchmark_questions_are_not_the_demos_in_any_style() -> None:
    asked = word_questions(DEFAULT_QUESTIONS, BENCH_SEED)
    demo = word_questions(demo_smollm2.DEFAULT_QUESTIONS, DEMO_SEED)
    assert not {q.question for q in asked} & {q.question for q in demo}
    # Every style asks those questions, none of them a prompt the demo sends.
    prompts = {q.prompt(instruction) for q in asked for instruction in STYLES.values()}
    assert len(prompts) == len(asked) * len(STYLES)
    assert not prompts & {q.prompt() for q in demo}


def test_an_arm_row_averages_per_query_and_counts_exits_per_branch() -> None:
    arm = arms(["explain"], max_tokens=64)[3]  # sc@4 +probe
    row = arm_row(
        arm,
        [record(True, 200, 40, 20, 2, probes=4, capped=1), record(False, 100, 10, 10, 0, 2)],
    )
    assert row.style == "explain"
    assert (row.branches, row.early_exit, row.queries) == (4, True, 2)
    assert row.accuracy == 0.5 and row.tokens_per_query == 150.0
    assert row.after_answer_per_query == 25.0 and row.probe_tokens_per_query == 15.0
    assert row.tokens_per_probe == 30 / 6
    assert row.early_exit_share == 2 / 8 and row.capped_share == 1 / 8
    assert row.cut_short == 0


def test_an_arm_row_counts_queries_shrunk_or_answered_at_their_deadline() -> None:
    records = [record(True, 40, 4, shrunk=True), record(True, 40, 4, late=True), record(True, 4, 0)]
    assert arm_row(arms(["short"])[0], records).cut_short == 2


def test_an_arm_without_probes_reads_zero_tokens_per_probe() -> None:
    row = arm_row(arms(["short"])[0], [record(True, 40, 4)])
    assert (row.tokens_per_probe, row.probe_tokens_per_query, row.capped_share) == (0.0, 0.0, 0.0)


def row(
    branches: int, early: bool, accuracy: float, tokens: float, after: float, style: str = "short"
) -> ArmRow:
    return ArmRow(
        "x", style, branches, early, 10, accuracy, tokens, after, 0.0, 0.0, 0.0, 0.0, 1.0, 0
    )


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
