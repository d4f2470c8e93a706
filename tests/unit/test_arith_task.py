"""The arithmetic task: generator, answer extraction, step verifier, scoring and tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.arith.scoring import (
    Sample,
    majority_answer,
    pass_at_k,
    sampled_metrics,
    verified_answer,
)
from models.arith.task import (
    MAX_OPERAND,
    MAX_TERMS,
    MIN_OPERAND,
    MIN_TERMS,
    SOLUTION_TOKEN_CAP,
    Problem,
    check_steps,
    extract_answer,
    format_prompt,
    generate_problems,
    is_verified,
    parse_question,
    score_solution,
    split_steps,
    verify,
)
from models.arith.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    build_tokenizer,
    decode,
    encode,
    save_tokenizer,
)
from models.arith.train import IGNORE_INDEX, example_tensors
from models.arith.validation import left_padded
from models.arith.verifier_server import VerifyRequest, score_request

EXAMPLE = Problem(operands=(23, 48, 17), operators=("+", "-"))


def test_problem_renders_prompt_steps_and_answer() -> None:
    assert EXAMPLE.question == "23+48-17"
    assert EXAMPLE.prompt == "Q:23+48-17 A:"
    assert EXAMPLE.steps() == ["23+48=71", "71-17=54"]
    assert EXAMPLE.solution == "23+48=71 71-17=54 #54"
    assert EXAMPLE.answer == 54


def test_generator_is_seeded_and_stays_in_range() -> None:
    problems = generate_problems(seed=7, count=500)
    assert problems == generate_problems(seed=7, count=500)
    assert problems != generate_problems(seed=8, count=500)
    for problem in problems:
        assert MIN_TERMS <= len(problem.operands) <= MAX_TERMS
        assert all(MIN_OPERAND <= operand <= MAX_OPERAND for operand in problem.operands)
        assert is_verified(problem.question, problem.solution)
        assert len(problem.solution) + 1 <= SOLUTION_TOKEN_CAP  # one token a character, <eos>
    assert {len(problem.operands) for problem in problems} == set(range(MIN_TERMS, MAX_TERMS + 1))
    assert {op for problem in problems for op in problem.operators} == {"+", "-"}
    assert {MIN_OPERAND, MAX_OPERAND} <= {n for problem in problems for n in problem.operands}
    assert {label for problem in problems for label in problem.slices()} >= {
        "5 terms",
        "a one-digit operand",
        "goes negative",
    }


def test_the_longest_solution_fits_the_token_cap() -> None:
    # Every minus with the largest operand from the smallest start: the most characters.
    longest = Problem(
        operands=(MIN_OPERAND,) + (MAX_OPERAND,) * (MAX_TERMS - 1),
        operators=("-",) * (MAX_TERMS - 1),
    )
    assert longest.solution == "1-99=-98 -98-99=-197 -197-99=-296 -296-99=-395 #-395"
    assert len(longest.solution) + 1 <= SOLUTION_TOKEN_CAP
    assert is_verified(longest.question, longest.solution)


def test_slices_name_terms_operand_size_and_sign() -> None:
    assert EXAMPLE.slices() == ("3 terms", "two-digit operands", "never negative")
    assert Problem(operands=(17, 99, 5), operators=("-", "+")).slices() == (
        "3 terms",
        "a one-digit operand",
        "goes negative",
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("23+48-17", EXAMPLE),
        ("Q:23+48-17 A:", EXAMPLE),
        (" Q: 23 + 48 - 17 A: ", EXAMPLE),
        ("5+6", Problem(operands=(5, 6), operators=("+",))),
        ("23", None),
        ("-23+4", None),
        ("23*4", None),
        ("what is 2+2?", None),
    ],
)
def test_parse_question(question: str, expected: Problem | None) -> None:
    assert parse_question(question) == expected


def test_format_prompt_round_trips_through_parse() -> None:
    assert parse_question(format_prompt("23+48-17")) == EXAMPLE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23+48=71 71-17=54 #54", "54"),
        ("Q:23+48-17 A:23+48=71 71-17=54 #54", "54"),
        ("23+48=71 #70 #71", "71"),
        ("23+48=71 # 71", "71"),
        ("23+48=71 71-17=54", None),
        ("", None),
    ],
)
def test_extract_answer_takes_the_last_hash_number(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (["23+48=71", "71-17=54"], [True, True]),
        (["23+48=72", "72-17=55"], [False, False]),  # a wrong sum poisons the chain
        (["23+48=71", "71-17=55"], [True, False]),
        (["23-48=71", "71-17=54"], [False, True]),  # wrong operator
        (["23+47=70", "71-17=54"], [False, True]),  # operand not from the question
        (["71-17=54"], [False]),  # skipped a step
        (["23+48=71", "71-17=54", "54+0=54"], [True, True, False]),  # past the chain
        (["23+48=71", "garbage"], [True, False]),
        ([], []),
    ],
)
def test_check_steps(steps: list[str], expected: list[bool]) -> None:
    assert check_steps(EXAMPLE, steps) == expected


@pytest.mark.parametrize(
    ("steps", "answer", "expected"),
    [
        (["23+48=71", "71-17=54"], "54", 1.0),
        (["23+48=71", "71-17=54"], "#54", 1.0),
        (["23+48=71", "71-17=54"], "55", 2 / 3),
        (["23+48=71", "71-17=55"], "55", 1 / 3),
        (["23+48=71"], "54", 2 / 3),  # a missing step counts as wrong
        ([], "54", 1 / 3),
        (["23+48=71"], None, 1.0),  # partial: everything so far is right
        (["23+48=71", "71-17=55"], None, 0.5),
        (["23+48=72"], None, 0.0),
        ([], None, 0.0),
    ],
)
def test_score_solution(steps: list[str], answer: str | None, expected: float) -> None:
    assert score_solution(EXAMPLE, steps, answer) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23+48=71 71-17=54 #54", 1.0),
        ("Q:23+48-17 A:23+48=71 71-17=54 #54", 1.0),
        ("23+48=71 71-17=54", 1.0),  # no answer yet: a partial solution
        ("23+48=71 71-17=54 #55", 2 / 3),
        ("#54", 1 / 3),  # a right answer without the work
    ],
)
def test_verify_scores_model_output(text: str, expected: float) -> None:
    assert verify("Q:23+48-17 A:", text) == pytest.approx(expected)
    assert split_steps(text) == [token for token in split_steps(text) if "#" not in token]


def test_verify_rejects_a_question_that_is_not_a_chain() -> None:
    with pytest.raises(ValueError, match="not an arithmetic chain"):
        verify("hello", "1+1=2 #2")


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"question": "23+48-17", "answer": "54", "steps": ["23+48=71", "71-17=54"]}, 1.0),
        ({"question": "Q:23+48-17 A:", "answer": None, "steps": ["23+48=71"]}, 1.0),
        ({"question": "23+48-17", "answer": None, "steps": ["23+48=71 71-17=54 #54"]}, 1.0),
        ({"question": "23+48-17", "answer": None, "steps": ["23+48=71", "71-17=54", "#53"]}, 2 / 3),
        ({"question": "23+48-17", "answer": "54", "steps": ["23+48=70", "70-17=53"]}, 1 / 3),
    ],
)
def test_verifier_request_scoring(request_body: dict[str, object], expected: float) -> None:
    score = score_request(VerifyRequest.model_validate(request_body))
    assert score == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [(["3", "4", "4"], "4"), (["3", "4"], "3"), ([None, None], None), ([None, "5"], "5")],
)
def test_majority_answer(answers: list[str | None], expected: str | None) -> None:
    assert majority_answer(answers) == expected


def test_verified_answer_prefers_verified_samples_and_falls_back_to_majority() -> None:
    samples = [Sample("7", False), Sample("7", False), Sample("8", True)]
    assert verified_answer(samples) == "8"
    assert verified_answer([Sample("7", False), Sample("7", False), Sample("8", False)]) == "7"


@pytest.mark.parametrize(
    ("sample_count", "correct_count", "k", "expected"),
    [(16, 0, 4, 0.0), (16, 16, 1, 1.0), (16, 4, 1, 0.25), (4, 1, 2, 0.5), (16, 13, 4, 1.0)],
)
def test_pass_at_k(sample_count: int, correct_count: int, k: int, expected: float) -> None:
    assert pass_at_k(sample_count, correct_count, k) == pytest.approx(expected)


def test_sampled_metrics_on_a_hand_made_table() -> None:
    right, wrong = Sample("5", True), Sample("6", False)
    per_problem = [[right, wrong, wrong, wrong], [right, right, right, right]]
    metrics = sampled_metrics(per_problem, ["5", "5"], ks=(1, 4))
    assert metrics["sample@1"] == pytest.approx((0.25 + 1.0) / 2)
    assert metrics["pass@4"] == pytest.approx(1.0)
    assert metrics["majority@4"] == pytest.approx(0.5)
    assert metrics["verified@4"] == pytest.approx(1.0)
    assert metrics["majority@1"] == pytest.approx(metrics["sample@1"])


@pytest.mark.parametrize(
    "text", ["Q:23+48-17 A:", "Q:23+48-17 A:23+48=71 71-17=54 #54", "Wait, 2 + 2\nFinal Answer: 4"]
)
def test_tokenizer_adds_bos_and_round_trips_exactly(text: str) -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer.encode(text).ids
    assert ids == encode(text)
    assert ids[0] == BOS_ID
    assert len(ids) == len(text) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_saved_tokenizer_loads_in_transformers_with_bos(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "Q:23+48-17 A:23+48=71 71-17=54 #54"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == BOS_ID
    assert tokenizer.eos_token_id == EOS_ID
    assert tokenizer.decode([*ids, EOS_ID], skip_special_tokens=True) == text
    assert "".join(tokenizer.convert_ids_to_tokens(ids[1:])) == text


def test_decode_stops_at_eos_and_drops_special_tokens() -> None:
    ids = [*encode("12+3=15 #15"), EOS_ID, *encode("junk")[1:]]
    assert decode([PAD_ID, *ids]) == "12+3=15 #15"


def test_training_example_learns_only_the_completion_and_eos() -> None:
    input_ids, labels = example_tensors(EXAMPLE)
    prompt_length = len(EXAMPLE.prompt) + 1
    assert input_ids == [*encode(EXAMPLE.prompt + EXAMPLE.solution), EOS_ID]
    assert labels[:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert labels[prompt_length:] == input_ids[prompt_length:]


def test_validation_prompts_are_left_padded() -> None:
    input_ids, attention_mask = left_padded(["Q:1+2 A:", "Q:10+20+30 A:"])
    assert input_ids.shape == attention_mask.shape == (2, len("Q:10+20+30 A:") + 1)
    assert input_ids[0].tolist()[-9:] == encode("Q:1+2 A:")
    assert attention_mask[0].tolist() == [0] * 5 + [1] * 9
    assert attention_mask[1].tolist() == [1] * 14


@pytest.mark.parametrize(
    ("question", "text", "score"),
    [
        ("17-99", "17-99=-82 #-82", 1.0),  # a correct negative step, and answer
        ("17-99+5", "17-99=-82 -82+5=-77 #-77", 1.0),  # continuing from a negative value
        ("17-99-5", "17-99=-82 -82-5=-87 #-87", 1.0),
        ("17-99+90", "17-99=-82 -82+90=8 #8", 1.0),  # back above zero
        ("17-99", "17-99=82 #82", 0.0),  # the sign is part of the value
        ("17-99+5", "17-99=-82 82+5=87 #87", 1 / 3),  # the next step must start from -82
    ],
)
def test_negative_running_values_are_checked_like_any_other(
    question: str, text: str, score: float
) -> None:
    assert verify(question, text) == pytest.approx(score)
