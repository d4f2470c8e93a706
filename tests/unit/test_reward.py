"""The reward models' input, labels and figures: pure functions, table tests."""

from __future__ import annotations

import json
import math
import random
import re
from itertools import islice
from pathlib import Path

import jinja2
import pytest

from models.arith.heldout import held_out_questions, training_stream
from models.arith.reward import (
    CHAT_TEMPLATE,
    SCORE_TEMPLATE,
    STEP_TAG_ID,
    auroc,
    calibration,
    labelled,
    reward_text,
    slipped_completion,
    solution_steps,
    step_labels,
)
from models.arith.task import generate_problems, parse_question
from models.arith.tokenizer import BOS, BOS_ID, VOCAB
from ponder.local import shipped
from ponder.scheduler.verifiers import solution_text

_STEP_SHAPE = re.compile(r"^-?\d+[+-]\d+=-?\d+$")
REWARD_MODELS = [shipped.OUTCOME_REWARD_MODEL_PATH, shipped.PROCESS_REWARD_MODEL_PATH]


@pytest.mark.parametrize(
    ("question", "completion", "labels", "outcome"),
    [
        ("23+48-17", "23+48=71 71-17=54 #54", [True, True, True], True),
        ("23+48-17", "23+48=71 71-17=53 #53", [True, False, False], False),
        ("23+48-17", "23+48=70 70-17=53 #54", [False, False, False], True),  # a lucky answer
        ("17-99+5", "17-99=-82 -82+5=-77 #-77", [True, True, True], True),  # negative steps
        ("17-99+5", "17-99=-82 #-82", [True, False], False),  # answers a step early
        ("41+36", "41+36=77 77+1=78 #78", [True, False, False], False),  # a step too many
        ("41+36", "41+36=77", [True], False),  # no answer
        ("41+36", "", [], False),
    ],
)
def test_labels_mark_each_right_prefix_and_the_answer(
    question: str, completion: str, labels: list[bool], outcome: bool
) -> None:
    problem = parse_question(question)
    assert problem is not None
    assert step_labels(problem, solution_steps(completion)) == labels
    example = labelled(problem, completion)
    assert list(example.step_labels) == labels
    assert example.outcome is outcome
    assert example.ids[0] == BOS_ID
    assert [example.ids[p] for p in example.tag_positions] == [STEP_TAG_ID] * len(labels)


def test_shipped_step_tag_is_the_newline_token() -> None:
    assert shipped.STEP_TAG_ID == STEP_TAG_ID


@pytest.mark.parametrize("steps", [["23+48=71", "71-17=54", "#54"], ["17-99=-82"], []])
def test_serving_templates_render_what_the_models_were_trained_on(steps: list[str]) -> None:
    """vLLM renders the scheduler's request (question, steps joined by newlines) with these
    templates; /score's tokenizer then adds <bos> itself, the chat path does not."""
    environment = jinja2.Environment()
    document = solution_text(None, steps) if steps else ""
    messages = [
        {"role": "query", "content": " 23+48-17 "},
        {"role": "document", "content": document},
    ]
    expected = reward_text("23+48-17", steps)
    assert environment.from_string(SCORE_TEMPLATE).render(messages=messages) == expected
    rendered = environment.from_string(CHAT_TEMPLATE).render(messages=messages, bos_token=BOS)
    assert rendered == BOS + expected


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),
        ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),  # ties count half
        ([0.1, 0.4, 0.35, 0.8], [False, False, True, True], 0.75),
        ([0.3, 0.7], [True, True], math.nan),  # one class only
    ],
)
def test_auroc(scores: list[float], labels: list[bool], expected: float) -> None:
    result = auroc(scores, labels)
    assert math.isnan(result) if math.isnan(expected) else result == pytest.approx(expected)


def test_calibration_bins_and_error() -> None:
    scores = [0.05, 0.15, 0.95, 0.95, 1.0]
    labels = [False, True, True, True, False]
    table, error = calibration(scores, labels)
    assert [(row.low, row.count) for row in table] == [(0.0, 1), (0.1, 1), (0.9, 3)]
    assert table[2].accuracy == pytest.approx(2 / 3)
    expected = (0.05 + 0.85 + 3 * abs((0.95 + 0.95 + 1.0) / 3 - 2 / 3)) / 5
    assert error == pytest.approx(expected)


@pytest.mark.parametrize("model_dir", REWARD_MODELS, ids=lambda path: path.name)
def test_reward_models_trained_on_no_held_out_problem(model_dir: Path) -> None:
    """Replay the problems a shipped reward model's samples came from: none is held out."""
    summary = json.loads((model_dir / "reward.json").read_text())
    settings = summary["settings"]
    problems = list(islice(training_stream(settings["stream_seed"]), settings["problems"]))
    assert len(problems) == summary["data"]["training_problems"]
    assert not {problem.question for problem in problems} & held_out_questions()
    assert summary["data"]["evaluation_set"].startswith("evaluation")


def test_a_slipped_solution_is_wrong_from_its_slip_on_and_reads_like_the_policy() -> None:
    rng = random.Random(3)
    for problem in generate_problems(11, 200):
        completion = slipped_completion(problem, rng)
        example = labelled(problem, completion)
        assert not example.outcome, completion
        first_wrong = example.step_labels.index(False)
        assert all(example.step_labels[:first_wrong])
        assert not any(example.step_labels[first_wrong:])
        assert all(_STEP_SHAPE.match(step) for step in solution_steps(completion)[:-1])


def test_prefix_labels_turn_false_at_the_first_wrong_character() -> None:
    problem = parse_question("17-99+5")
    assert problem is not None
    example = labelled(problem, "17-99=-82 -82+5=-76 #-76")
    body = "17-99=-82\n-82+5=-76\n#-76\n"
    first_wrong = body.index("6")
    assert example.prefix_labels == tuple(i < first_wrong for i in range(len(body)))
    assert example.ids[example.body_start] == VOCAB["1"]
