"""The word-arithmetic questions asked of SmolLM2: seeded, distinct, and answered correctly."""

from __future__ import annotations

import re

import pytest

from models.smollm2.questions import (
    ANSWER_INSTRUCTION,
    BENCH_SEED,
    CHECK_INSTRUCTION,
    DEMO_SEED,
    EXPLAIN_INSTRUCTION,
    WordQuestion,
    word_questions,
)

_NUMBER = re.compile(r"\d+")


def worked_answer(question: str) -> int:
    """The answer recomputed from the question's wording, independently of the generator."""
    first, second = (int(number) for number in _NUMBER.findall(question))
    if "buys" in question:
        return first + second
    if "gives away" in question:
        return first - second
    if "in each box" in question:
        return first * second
    raise AssertionError(f"unknown template: {question}")


@pytest.mark.parametrize(
    ("count", "seed"),
    [(0, DEMO_SEED), (1, DEMO_SEED), (30, DEMO_SEED), (30, BENCH_SEED), (200, 7)],
)
def test_same_seed_gives_the_same_distinct_questions(count: int, seed: int) -> None:
    questions = word_questions(count, seed)
    assert questions == word_questions(count, seed)
    assert len(questions) == count
    assert len({question.question for question in questions}) == count


def test_a_shorter_set_is_the_start_of_a_longer_one() -> None:
    # `--short` asks the first few of the demo's questions.
    assert word_questions(5, DEMO_SEED) == word_questions(30, DEMO_SEED)[:5]


def test_demo_and_bench_seeds_ask_different_questions() -> None:
    assert DEMO_SEED != BENCH_SEED
    demo = {question.question for question in word_questions(30, DEMO_SEED)}
    bench = {question.question for question in word_questions(30, BENCH_SEED)}
    assert demo != bench
    assert len(demo & bench) < 3


def test_every_answer_is_what_the_question_says() -> None:
    for question in word_questions(300, DEMO_SEED):
        assert question.answer == worked_answer(question.question), question
        assert question.answer > 0, question


def test_a_set_has_every_operation() -> None:
    questions = [question.question for question in word_questions(3, BENCH_SEED)]
    assert any("buys" in text for text in questions)
    assert any("gives away" in text for text in questions)
    assert any("in each box" in text for text in questions)


def test_operands_stay_small_for_a_small_model() -> None:
    for question in word_questions(300, BENCH_SEED):
        assert all(int(number) <= 30 for number in _NUMBER.findall(question.question)), question
        assert question.answer <= 60, question


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            WordQuestion(
                "Tom has 12 apples and buys 7 more. How many apples does he have now?", 19
            ),
            "Tom has 12 apples and buys 7 more. How many apples does he have now? "
            "Answer with just the number.",
        ),
        (WordQuestion("How many?", 1), f"How many? {ANSWER_INSTRUCTION}"),
    ],
)
def test_prompt_is_the_question_then_the_instruction(question: WordQuestion, expected: str) -> None:
    assert question.prompt() == expected


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="count=-1"):
        word_questions(-1, DEMO_SEED)


def test_a_question_can_be_asked_with_another_instruction() -> None:
    question = word_questions(1, BENCH_SEED)[0]
    assert question.prompt(EXPLAIN_INSTRUCTION) == f"{question.question} Explain your answer."
    assert question.prompt(CHECK_INSTRUCTION) == (
        f"{question.question} Solve it step by step, then check your answer."
    )
    assert question.prompt() == f"{question.question} {ANSWER_INSTRUCTION}"
