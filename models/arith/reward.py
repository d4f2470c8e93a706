"""Learned reward models for the arithmetic task: what they read, what they learn, how they score.

Both models read one text per solution, the question and the steps as the scheduler's
reward-model verifiers send them (the steps of a completion, split at the task's step
separator, joined by newlines) in the format the policy was trained on, with a newline closing
every step:

    <bos>Q:23+48-17 A:23+48=71\\n71-17=54\\n#54\\n

- The **outcome** reward model (ORM) scores the whole solution at its last token: the
  probability that the final answer is right.
- The **process** reward model (PRM) scores every step at the newline that closes it: the
  probability that this step and every step before it are right (a correct prefix). Its
  solution score is the lowest step score.

Labels come from the exact checker (`check_steps`, the true answer) at training time only; at
inference the models see the question and the solution, nothing else. vLLM serves each as a
pooling model (`LlamaForSequenceClassification`, one label, sigmoid): the ORM on `/score` with
`SCORE_TEMPLATE` (query = question, document = solution), the PRM on `/pooling` with
`CHAT_TEMPLATE` and step pooling at `STEP_TAG`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from models.arith.task import (
    ANSWER_MARK,
    ANSWER_PREFIX,
    PROMPT_PREFIX,
    STEP_SEPARATOR,
    Problem,
    check_steps,
    completion_of,
    extract_answer,
    parse_answer,
)
from models.arith.tokenizer import BOS_ID, VOCAB, encode

STEP_TAG = "\n"
STEP_TAG_ID = VOCAB[STEP_TAG]

# vLLM's /score renders `[{"role": "query", ...}, {"role": "document", ...}]` and tokenizes the
# result with the tokenizer's post-processor (which adds <bos>); its chat path (/pooling with
# `messages`) adds no special tokens, hence the explicit <bos> there. Both give `reward_text`.
_BODY = (
    "Q:{{ messages[0]['content'] | trim }} A:"
    "{% for step in (messages[1]['content'] | trim).split('\\n') %}"
    "{% if step | trim %}{{ step | trim }}{{ '\\n' }}{% endif %}{% endfor %}"
)
SCORE_TEMPLATE = _BODY
CHAT_TEMPLATE = "{{ bos_token }}" + _BODY


def solution_steps(completion: str) -> list[str]:
    """The steps of a completion as the models receive them: split at the step separator (as
    the scheduler splits them), then at newlines (as the serving templates split them)."""
    return [
        step.strip()
        for chunk in completion.split(STEP_SEPARATOR)
        for step in chunk.split(STEP_TAG)
        if step.strip()
    ]


def reward_text(question: str, steps: Sequence[str]) -> str:
    """What both models read (without <bos>): the prompt, then each step and a newline."""
    body = "".join(f"{step}{STEP_TAG}" for step in steps)
    return f"{PROMPT_PREFIX}{question.strip()}{ANSWER_PREFIX}{body}"


@dataclass(frozen=True)
class Labelled:
    """One sampled solution, tokenized, with its exact-checker labels (training only)."""

    ids: tuple[int, ...]
    tag_positions: tuple[int, ...]  # the index in `ids` of each step's closing newline
    step_labels: tuple[bool, ...]  # per step: it and every step before it are right
    outcome: bool  # the final answer is right
    body_start: int  # the index in `ids` of the solution's first character
    prefix_labels: tuple[bool, ...]  # per solution character: the text so far begins the
    # right solution (dense supervision for the step labels: where it first went wrong)


def step_labels(problem: Problem, steps: Sequence[str]) -> list[bool]:
    """Per step, whether the solution is still right after it.

    A computation step is right when it and every one before it check out (`check_steps`); the
    answer step (`#n`) is right when n is the true answer and every step before it is right.
    """
    labels: list[bool] = []
    prefix_right = True
    computations = [step for step in steps if not step.startswith(ANSWER_MARK)]
    flags = iter(check_steps(problem, computations))
    for step in steps:
        if step.startswith(ANSWER_MARK):
            right = parse_answer(step) == problem.answer
        else:
            right = next(flags)
        prefix_right = prefix_right and right
        labels.append(prefix_right)
    return labels


def labelled(problem: Problem, completion: str) -> Labelled:
    """The training example of one sampled completion of `problem`."""
    steps = solution_steps(completion_of(completion))
    text = reward_text(problem.question, steps)
    ids = encode(text)
    positions = tuple(index for index, token in enumerate(ids) if token == STEP_TAG_ID)
    assert ids[0] == BOS_ID and len(positions) == len(steps)
    prompt = reward_text(problem.question, [])
    right = reward_text(problem.question, solution_steps(problem.solution))
    return Labelled(
        ids=tuple(ids),
        tag_positions=positions,
        step_labels=tuple(step_labels(problem, steps)),
        outcome=parse_answer(extract_answer(completion)) == problem.answer,
        body_start=len(prompt) + 1,
        prefix_labels=tuple(
            right.startswith(text[: end + 1]) for end in range(len(prompt), len(text))
        ),
    )


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative (ties
    count half). NaN when either class is empty."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: pair[0])
    rank_sum = 0.0
    index = 0
    while index < len(ranked):
        end = index
        while end + 1 < len(ranked) and ranked[end + 1][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1  # ranks are 1-based; ties share their mean rank
        rank_sum += mean_rank * sum(1 for _, label in ranked[index : end + 1] if label)
        index = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass(frozen=True)
class CalibrationBin:
    """Predictions whose score fell in [low, high): how many, their mean score, how many right."""

    low: float
    high: float
    count: int
    mean_score: float
    accuracy: float


def calibration(
    scores: Sequence[float], labels: Sequence[bool], bins: int = 10
) -> tuple[list[CalibrationBin], float]:
    """Equal-width reliability bins over [0, 1] and the expected calibration error (the
    count-weighted mean gap between a bin's mean score and its share of positives)."""
    members: list[list[int]] = [[] for _ in range(bins)]
    for index, score in enumerate(scores):
        members[min(bins - 1, int(score * bins))].append(index)
    table: list[CalibrationBin] = []
    error = 0.0
    for number, rows in enumerate(members):
        if not rows:
            continue
        mean_score = sum(scores[row] for row in rows) / len(rows)
        accuracy = sum(labels[row] for row in rows) / len(rows)
        table.append(
            CalibrationBin(number / bins, (number + 1) / bins, len(rows), mean_score, accuracy)
        )
        error += len(rows) / len(scores) * abs(mean_score - accuracy)
    return table, error


def _slip(value: int, rng: random.Random) -> int:
    """A wrong value near `value`, as an arithmetic slip makes it: off by one or ten, one digit
    changed, or the sign lost."""
    for _ in range(16):
        kind = rng.randrange(4)
        if kind == 0:
            wrong = value + rng.choice((-1, 1))
        elif kind == 1:
            wrong = value + rng.choice((-10, 10))
        elif kind == 2:
            digits = list(str(abs(value)))
            place = rng.randrange(len(digits))
            digits[place] = rng.choice([d for d in "0123456789" if d != digits[place]])
            wrong = int("".join(digits)) * (-1 if value < 0 else 1)
        else:
            wrong = -value
        if wrong != value:
            return wrong
    return value + 1


def slipped_completion(problem: Problem, rng: random.Random) -> str:
    """A solution to `problem` in the policy's format with one slip, like the policy's own
    mistakes: a wrong result at a random step, carried on (later steps start from the wrong
    value and compute right from it), or a step too few. Training data for the reward models
    beside the policy's samples: an endless, exactly labelled supply of near misses."""
    lefts = [problem.operands[0]]
    results: list[int] = []
    slip_at = rng.randrange(len(problem.operators))
    for index, (operator, operand) in enumerate(
        zip(problem.operators, problem.operands[1:], strict=True)
    ):
        left = lefts[-1]
        result = left + operand if operator == "+" else left - operand
        if index == slip_at:
            result = _slip(result, rng)
        results.append(result)
        lefts.append(result)
    steps = [
        f"{left}{operator}{operand}={result}"
        for left, operator, operand, result in zip(
            lefts[:-1], problem.operators, problem.operands[1:], results, strict=True
        )
    ]
    if len(steps) > 1 and rng.random() < 0.2:
        steps = steps[: rng.randrange(1, len(steps))]  # stops a step early
        results = results[: len(steps)]
    return STEP_SEPARATOR.join([*steps, f"{ANSWER_MARK}{results[-1]}"])
