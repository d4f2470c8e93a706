"""Simple word-arithmetic questions with known integer answers, for SmolLM2-135M-Instruct.

    word_questions(20, DEMO_SEED)[0].prompt()
    # "Tom has 12 apples and buys 7 more. How many apples does he have now? Answer with ..."

One story template per operation (add, subtract, multiply), filled from fixed lists of names,
objects and small operands: a 135M model gets a fair share of these right, so self-consistency
and early exits have something to win or lose. Pure and seeded: a seed always gives the same
questions, and a set never repeats one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

ANSWER_INSTRUCTION = "Answer with just the number."
"""Appended to every question by default; `prompt()` is the user message."""

EXPLAIN_INSTRUCTION = "Explain your answer."
"""The other style: the model states its answer, then talks on about it (the overthinking
benchmark asks every way)."""

CHECK_INSTRUCTION = "Solve it step by step, then check your answer."
"""The overthinking case users meet: asked to work the problem and then check it, the model
reaches an answer early and goes on "checking" for a hundred tokens or more, often arguing
itself out of a right answer, sometimes looping until `max_tokens`."""

DEMO_SEED = 20_250_613
"""The questions `make demo MODEL=smollm2` asks."""
BENCH_SEED = 20_250_614
"""The questions the overthinking benchmark asks (distinct from the demo's)."""

NAMES = ("Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Jack", "Emma", "Leo", "Sara")
OBJECTS = ("apples", "books", "pencils", "cookies", "marbles", "stickers", "cards", "balloons")

ADD_OPERANDS = (2, 20)
SUBTRACT_TOTAL = (8, 30)
MULTIPLY_GROUPS = (2, 6)
MULTIPLY_EACH = (2, 10)

MAX_ATTEMPTS_PER_QUESTION = 1000
"""Draws allowed per question before a set is declared too large for the templates."""


@dataclass(frozen=True)
class WordQuestion:
    """A short story problem and its integer answer."""

    question: str
    answer: int

    def prompt(self, instruction: str = ANSWER_INSTRUCTION) -> str:
        """The user message: the question and the instruction (by default, to answer with just
        the number)."""
        return f"{self.question} {instruction}"


def _pronoun(name: str) -> str:
    return "she" if name in ("Anna", "Lucy", "Mia", "Emma", "Sara") else "he"


def _add(rng: random.Random) -> WordQuestion:
    name, thing = rng.choice(NAMES), rng.choice(OBJECTS)
    have, more = rng.randint(*ADD_OPERANDS), rng.randint(*ADD_OPERANDS)
    question = (
        f"{name} has {have} {thing} and buys {more} more. "
        f"How many {thing} does {_pronoun(name)} have now?"
    )
    return WordQuestion(question, have + more)


def _subtract(rng: random.Random) -> WordQuestion:
    name, thing = rng.choice(NAMES), rng.choice(OBJECTS)
    have = rng.randint(*SUBTRACT_TOTAL)
    given = rng.randint(1, have - 1)
    question = (
        f"{name} has {have} {thing} and gives away {given}. "
        f"How many {thing} does {_pronoun(name)} have left?"
    )
    return WordQuestion(question, have - given)


def _multiply(rng: random.Random) -> WordQuestion:
    name, thing = rng.choice(NAMES), rng.choice(OBJECTS)
    groups, each = rng.randint(*MULTIPLY_GROUPS), rng.randint(*MULTIPLY_EACH)
    question = (
        f"{name} has {groups} boxes with {each} {thing} in each box. "
        f"How many {thing} does {_pronoun(name)} have in total?"
    )
    return WordQuestion(question, groups * each)


TEMPLATES: tuple[Callable[[random.Random], WordQuestion], ...] = (_add, _subtract, _multiply)
"""Drawn in turn, so every set of three or more has each operation."""


def word_questions(count: int, seed: int) -> list[WordQuestion]:
    """`count` distinct questions drawn with `seed` (the same list for the same arguments),
    cycling add, subtract, multiply. ValueError when `count` is negative or more than the
    templates can tell apart."""
    if count < 0:
        raise ValueError(f"count={count} must be >= 0")
    rng = random.Random(seed)
    questions: list[WordQuestion] = []
    seen: set[str] = set()
    attempts = 0
    while len(questions) < count:
        attempts += 1
        if attempts > MAX_ATTEMPTS_PER_QUESTION * max(1, count):
            raise ValueError(f"could not draw {count} distinct questions")
        candidate = TEMPLATES[len(questions) % len(TEMPLATES)](rng)
        if candidate.question in seen:
            continue
        seen.add(candidate.question)
        questions.append(candidate)
    return questions
