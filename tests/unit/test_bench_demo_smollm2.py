"""`make demo MODEL=smollm2`: its arms fit SmolLM2's service; the demo picks the model's plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.demo import arith_plan, demo_parser, smollm2_plan
from bench.demo_smollm2 import (
    DEFAULT_QUESTIONS,
    SHORT_QUESTIONS,
    SLO_TARGET_MS,
    smollm2_config,
    smollm2_specs,
)
from bench.stack import REPO_ROOT
from models.smollm2.questions import DEMO_SEED, word_questions
from ponder.api.service_config import ExtractorKind, VerifierKind


@pytest.mark.parametrize("short", [True, False])
def test_every_arm_fits_the_services_limits(short: bool) -> None:
    config = smollm2_config()
    allowed = {member.value for member in config.strategy.allowed}
    for spec in smollm2_specs(short):
        assert spec.strategy in allowed, spec
        for key in ("branches", "max_branches"):
            assert spec.options.get(key, 1) <= config.strategy.max_branches, spec
        assert spec.max_tokens <= config.budget.max_tokens_per_branch, spec


def test_arms_are_greedy_then_votes_of_four_and_eight_then_adaptive_then_early_exit() -> None:
    specs = smollm2_specs(short=False)
    assert [spec.label for spec in specs] == [
        "single (greedy)",
        "self-consistency@4",
        "self-consistency@8",
        "adaptive-consistency",
        "self-consistency@8 +answer-probe",
    ]
    assert specs[-1].options == {"branches": 8, "early_exit": "answer-probe"}
    assert specs[0].temperature == 0.0
    assert [spec.options.get("branches") for spec in specs[1:3]] == [4, 8]
    assert all(spec.max_tokens < specs[0].max_tokens for spec in smollm2_specs(short=True))


def test_service_reads_the_last_number_without_a_verifier() -> None:
    config = smollm2_config()
    assert config.strategy.extractor is ExtractorKind.LAST_NUMBER
    assert config.strategy.verifier.kind is VerifierKind.NONE
    # The measured temperature: at the service's usual 0.8 the vote falls below greedy.
    assert config.strategy.temperature < 0.8
    assert config.slo.target_latency_ms == SLO_TARGET_MS <= config.slo.max_deadline_ms


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        (["--model", "smollm2"], DEFAULT_QUESTIONS),
        (["--model", "smollm2", "--short"], SHORT_QUESTIONS),
        (["--model", "smollm2", "--problems", "7"], 7),
    ],
)
def test_smollm2_plan_asks_the_demo_questions_under_its_own_out_dir(
    argv: list[str], count: int, tmp_path: Path
) -> None:
    args = demo_parser().parse_args([*argv, "--model-dir", str(tmp_path)])
    plan = smollm2_plan(args)
    assert list(plan.questions) == word_questions(count, DEMO_SEED)
    assert plan.out_dir == REPO_ROOT / "out" / "demo-smollm2"
    assert plan.facts["settings"]["model_dir"] == str(tmp_path)
    assert "SmolLM2-135M-Instruct" in plan.title


def test_the_arithmetic_demo_stays_the_default_under_out_demo() -> None:
    args = demo_parser().parse_args([])
    assert args.model == "arith"
    plan = arith_plan(args)
    assert plan.out_dir == REPO_ROOT / "out" / "demo"
    assert plan.title.startswith("Ponder demo: 100 held-out problems")


def test_an_unknown_model_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo_parser().parse_args(["--model", "gpt"])
    assert "invalid choice: 'gpt'" in capsys.readouterr().err
