"""No problem that is scored was trained on: the held-out sets and the shipped training stream."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from bench import demo, slo, tts_efficiency
from models.arith.heldout import (
    DEMO,
    EVALUATION,
    HELD_OUT_SETS,
    SLO,
    TTS,
    VALIDATION,
    held_out_questions,
    training_stream,
    without_held_out,
)
from models.arith.task import iter_problems
from models.arith.tokenizer import decode
from models.arith.train import IGNORE_INDEX, batches

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "arith" / "ponder-arith"


def shipped_stream() -> tuple[int, int]:
    """The shipped model's training stream: its seed and how many problems training drew."""
    training = json.loads((SHIPPED_MODEL / "training.json").read_text())
    return int(training["stream_seed"]), int(training["problems_drawn"])


def test_the_shipped_training_stream_holds_no_held_out_problem() -> None:
    seed, drawn = shipped_stream()
    assert drawn >= 10_000  # the replay covers a real training run
    trained = {problem.question for problem in islice(training_stream(seed), drawn)}
    overlap = trained & held_out_questions()
    assert not overlap, (
        f"{len(overlap)} held-out problems were trained on, e.g. {sorted(overlap)[:3]}"
    )


def test_without_the_skip_the_stream_would_have_met_held_out_problems() -> None:
    # The check above can fail: the raw stream repeats two-term problems (there are only
    # 2 x 99 x 99 of them), so as many draws as training made meet held-out ones.
    seed, drawn = shipped_stream()
    raw = {problem.question for problem in islice(iter_problems(seed), drawn)}
    assert len(raw & held_out_questions()) > 10


def test_training_batches_are_the_filtered_stream() -> None:
    input_ids, _, labels = next(batches(seed=1, batch_size=32))
    expected = list(islice(training_stream(1), 32))
    for row, problem in enumerate(expected):
        text = decode(input_ids[row].tolist())
        assert text.startswith(problem.prompt + problem.solution)
        assert (labels[row] != IGNORE_INDEX).sum() == len(problem.solution) + 1  # and <eos>


def test_without_held_out_drops_exactly_the_held_out() -> None:
    mixed = [*EVALUATION.problems(5), *islice(iter_problems(123), 50)]
    kept = list(without_held_out(mixed))
    assert all(problem.question not in held_out_questions() for problem in kept)
    assert len(kept) <= len(mixed) - 5


def test_sets_hand_out_prefixes_and_refuse_more_than_they_hold() -> None:
    assert DEMO.problems(8) == DEMO.problems()[:8]
    with pytest.raises(ValueError, match="held-out demo set has 400 problems; asked for 401"):
        DEMO.problems(401)
    with pytest.raises(ValueError, match="asked for 0"):
        TTS.problems(0)
    assert len({held_out.seed for held_out in HELD_OUT_SETS}) == len(HELD_OUT_SETS)
    assert VALIDATION in HELD_OUT_SETS


def test_benchmarks_draw_their_problems_from_the_held_out_sets() -> None:
    assert DEMO.size >= demo.DEFAULT_PROBLEMS and DEMO.size >= demo.SHORT_PROBLEMS
    assert TTS.size >= tts_efficiency.DEFAULT_PROBLEMS
    assert SLO.size >= slo.MAX_REQUESTS_PER_STEP
    for module in (demo, slo, tts_efficiency):
        assert not hasattr(module, "generate_problems"), f"{module.__name__} draws its own set"
