"""Multi-step +/- arithmetic with worked steps: the task the shipped model is trained on.

A problem is a chain such as ``23+48-17``; its prompt is ``Q:23+48-17 A:`` and its worked
solution ``23+48=71 71-17=54 #54``: one ``a±b=c`` step per operator, each starting from the
previous result, then the final answer after ``#``. Chains have 2 to 5 operands from 1 to 99 and
either operator anywhere, so running values and answers may be negative
(``17-99=-82 -82+5=-77 #-77``): a leading ``-`` of a step is the sign of its running value.

Everything here is pure: the generator is seeded, and the checks are used both by evaluation and
by the HTTP step verifier (``models.arith.verifier_server``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PROMPT_PREFIX = "Q:"
ANSWER_PREFIX = " A:"
ANSWER_MARK = "#"
STEP_SEPARATOR = " "

MIN_TERMS = 2
MAX_TERMS = 5
MIN_OPERAND = 1
MAX_OPERAND = 99
# Enough tokens (one per character, plus <eos>) for the longest solution the task admits,
# ``1-99=-98 -98-99=-197 -197-99=-296 -296-99=-395 #-395`` (55 characters).
SOLUTION_TOKEN_CAP = 64

_QUESTION = re.compile(r"^\s*(?:Q:)?\s*(\d+(?:\s*[+-]\s*\d+)+)\s*(?:A:)?\s*$")
_TERM = re.compile(r"([+-]?)\s*(\d+)")
_STEP = re.compile(r"^(-?\d+)([+-])(\d+)=(-?\d+)$")  # a running value may be negative
_FINAL = re.compile(r"#\s*(-?\d+)")
_INTEGER = re.compile(r"^\s*#?\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class Problem:
    """A chain ``operands[0] operators[0] operands[1] ...`` evaluated left to right."""

    operands: tuple[int, ...]
    operators: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.operands) != len(self.operators) + 1 or not self.operators:
            raise ValueError("a problem needs at least two operands and one operator between each")
        if any(op not in "+-" for op in self.operators):
            raise ValueError(f"operators must be + or -, got {self.operators}")

    @property
    def question(self) -> str:
        """``23+48-17``."""
        parts = [str(self.operands[0])]
        for operator, operand in zip(self.operators, self.operands[1:], strict=True):
            parts.append(f"{operator}{operand}")
        return "".join(parts)

    @property
    def prompt(self) -> str:
        """What the model is given: ``Q:23+48-17 A:``."""
        return format_prompt(self.question)

    def running_values(self) -> list[int]:
        """The value after each step (the last one is the answer)."""
        value = self.operands[0]
        values = []
        for operator, operand in zip(self.operators, self.operands[1:], strict=True):
            value = value + operand if operator == "+" else value - operand
            values.append(value)
        return values

    @property
    def answer(self) -> int:
        return self.running_values()[-1]

    def steps(self) -> list[str]:
        """The worked steps ``["23+48=71", "71-17=54"]``."""
        lefts = [self.operands[0], *self.running_values()[:-1]]
        return [
            f"{left}{operator}{operand}={result}"
            for left, operator, operand, result in zip(
                lefts, self.operators, self.operands[1:], self.running_values(), strict=True
            )
        ]

    def slices(self) -> tuple[str, ...]:
        """The evaluation slices this problem belongs to: its term count, whether an operand is
        a single digit, whether a running value goes below zero."""
        return (
            f"{len(self.operands)} terms",
            "a one-digit operand" if min(self.operands) < 10 else "two-digit operands",
            "goes negative" if min(self.running_values()) < 0 else "never negative",
        )

    @property
    def solution(self) -> str:
        """The completion the model should write: ``23+48=71 71-17=54 #54``."""
        return STEP_SEPARATOR.join([*self.steps(), f"{ANSWER_MARK}{self.answer}"])


def format_prompt(question: str) -> str:
    """``23+48-17`` → ``Q:23+48-17 A:`` (the model's prompt)."""
    return f"{PROMPT_PREFIX}{question.strip()}{ANSWER_PREFIX}"


def parse_question(question: str) -> Problem | None:
    """A problem from ``23+48-17`` or its prompt ``Q:23+48-17 A:``; None if it is not one."""
    match = _QUESTION.match(question)
    if not match:
        return None
    terms = _TERM.findall(match.group(1))
    operands = tuple(int(digits) for _, digits in terms)
    operators = tuple(sign for sign, _ in terms[1:])
    if terms[0][0] or any(not op for op in operators):
        return None
    return Problem(operands=operands, operators=operators)


def generate_problem(rng: random.Random) -> Problem:
    """One random chain: 2 to 5 terms, operands 1 to 99, each operator + or - with equal odds."""
    term_count = rng.randint(MIN_TERMS, MAX_TERMS)
    operands = tuple(rng.randint(MIN_OPERAND, MAX_OPERAND) for _ in range(term_count))
    operators = tuple(rng.choice("+-") for _ in range(term_count - 1))
    return Problem(operands=operands, operators=operators)


def generate_problems(seed: int, count: int) -> list[Problem]:
    """``count`` problems from a generator seeded with ``seed`` (same seed, same list)."""
    rng = random.Random(seed)
    return [generate_problem(rng) for _ in range(count)]


def iter_problems(seed: int) -> Iterator[Problem]:
    """An endless seeded stream of problems (training draws from it through
    ``models.arith.heldout.training_stream``, which skips every held-out problem)."""
    rng = random.Random(seed)
    while True:
        yield generate_problem(rng)


def completion_of(text: str) -> str:
    """The part after ``A:`` when the prompt is included, else the text itself."""
    _, marker, after = text.rpartition("A:")
    return after if marker else text


def extract_answer(text: str) -> str | None:
    """The final answer after the last ``#`` (``"54"``), or None if the text has none."""
    matches = _FINAL.findall(text)
    return matches[-1] if matches else None


def split_steps(text: str) -> list[str]:
    """The ``a±b=c`` step tokens of a completion (or of a full prompt + completion)."""
    return [
        token
        for token in completion_of(text).split()
        if token and not token.startswith(ANSWER_MARK)
    ]


def check_steps(problem: Problem, steps: Sequence[str]) -> list[bool]:
    """One flag per given step: is it ``left op operand = result`` for that position, right?

    Step i must start from the true value after step i-1 (the first operand for i=0), use the
    question's i-th operator and operand, and compute correctly. Steps past the chain's length
    are wrong.
    """
    lefts = [problem.operands[0], *problem.running_values()[:-1]]
    flags = []
    for index, step in enumerate(steps):
        match = _STEP.match(step.strip())
        if match is None or index >= len(problem.operators):
            flags.append(False)
            continue
        left, operator, operand, result = match.groups()
        expected_result = problem.running_values()[index]
        flags.append(
            int(left) == lefts[index]
            and operator == problem.operators[index]
            and int(operand) == problem.operands[index + 1]
            and int(result) == expected_result
        )
    return flags


def parse_answer(answer: str | None) -> int | None:
    """``"54"``, ``"#54"`` or ``" 54 "`` → 54; None for anything else."""
    if answer is None:
        return None
    match = _INTEGER.match(answer)
    return int(match.group(1)) if match else None


def score_solution(problem: Problem, steps: Sequence[str], answer: str | None) -> float:
    """Step-verifier score in [0, 1].

    Without an answer (a partial solution, as beam search scores it): the fraction of the given
    steps that are right, 1.0 when every step so far is right, 0.0 for no steps. With an answer:
    (right steps + right answer) / (steps the chain needs, or more if more were written, + 1), so
    1.0 only when every step and the final answer are right.
    """
    flags = check_steps(problem, steps)
    if answer is None:
        return sum(flags) / len(flags) if flags else 0.0
    answer_right = parse_answer(answer) == problem.answer
    step_count = max(len(flags), len(problem.operators))
    return (sum(flags) + answer_right) / (step_count + 1)


def verify(question: str, text: str) -> float:
    """Score a model output ``text`` (completion, or prompt + completion) for ``question``.

    Raises ValueError if ``question`` is not a +/- chain.
    """
    problem = parse_question(question)
    if problem is None:
        raise ValueError(f"not an arithmetic chain: {question!r}")
    return score_solution(problem, split_steps(text), extract_answer(completion_of(text)))


def is_verified(question: str, text: str) -> bool:
    """Every step and the final answer check out."""
    return verify(question, text) == 1.0
