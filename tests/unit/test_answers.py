"""Answer extractors and normalisation (ponder.api.answers)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ponder.api.answers import extract_answer, normalize_answer, numeric_answer, split_steps
from ponder.api.service_config import ExtractorKind, StrategyDefaults

AUTO, BOXED, HASHES, COLON, ANSWER_IS, LAST_NUMBER = (
    ExtractorKind.AUTO,
    ExtractorKind.BOXED,
    ExtractorKind.HASHES,
    ExtractorKind.ANSWER_COLON,
    ExtractorKind.ANSWER_IS,
    ExtractorKind.LAST_NUMBER,
)


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        # \boxed{}: nested braces, the last box wins, unbalanced boxes are ignored
        (r"so the answer is \boxed{42}.", BOXED, "42"),
        (r"\boxed{\frac{1}{2}}", BOXED, r"\frac{1}{2}"),
        (r"first \boxed{1} then \boxed{ 2 }", BOXED, "2"),
        (r"\boxed{x^{2}+{y}}", BOXED, "x^{2}+{y}"),
        (r"\boxed{42", BOXED, None),
        (r"$\boxed{1,234}$", BOXED, "1234"),
        # GSM8K's ####, and our arithmetic task's #54
        ("Natalia sold 48+24=72 clips.\n#### 72", HASHES, "72"),
        ("#### 1,000\n", HASHES, "1000"),
        ("23+48=71 71-17=54 #54", HASHES, "54"),
        ("5-9=-4 #-4", HASHES, "-4"),
        ("no marker 54", HASHES, None),
        ("issue #12 then #13", HASHES, "13"),
        ("####\n", HASHES, None),
        # Answer: / Final Answer:
        ("Answer: 42", COLON, "42"),
        ("Reasoning...\nFinal Answer: Paris.", COLON, "Paris"),
        ("the final answer is: 7", COLON, "7"),
        (r"Final Answer: \boxed{12}", COLON, "12"),
        ("Answer:\n", COLON, None),
        # "the answer is N" / "answer: N": any case, the last phrase, a number only
        ("The answer is 7.", ANSWER_IS, "7"),
        ("the answer is 5. No wait, THE ANSWER IS 6", ANSWER_IS, "6"),
        ("The final answer is: **1,234**", ANSWER_IS, "1234"),
        ("answer: -3.0", ANSWER_IS, "-3"),
        ("My answer is $12$.", ANSWER_IS, "12"),
        ("The answer is seven.", ANSWER_IS, None),
        ("I answered 7", ANSWER_IS, None),
        ("3 + 4 = 7", ANSWER_IS, None),
        # the last number: thousands commas go, a trailing .0 goes, the sign stays
        ("14 + 28 = 36\n\nThis is a classic example", LAST_NUMBER, "36"),
        ("7", LAST_NUMBER, "7"),
        ("3 + 4 = 7.", LAST_NUMBER, "7"),
        ("It costs $1,234,567 in total", LAST_NUMBER, "1234567"),
        ("about 2.50 metres", LAST_NUMBER, "2.5"),
        ("5 - 9 = -4", LAST_NUMBER, "-4"),
        ("5-9=-4.0", LAST_NUMBER, "-4"),
        ("10-3", LAST_NUMBER, "3"),  # an operator, not a sign
        ("+8", LAST_NUMBER, "8"),
        ("1,2,3", LAST_NUMBER, "3"),  # a list, not thousands
        ("12 moles of H2O", LAST_NUMBER, "12"),  # no number inside a word
        ("no digits here", LAST_NUMBER, None),
        # AUTO: boxed, then hashes, then answer-colon; nothing -> None
        (r"Answer: 3 but \boxed{4}", AUTO, "4"),
        ("Answer: 3\n#### 5", AUTO, "5"),
        ("Answer: 3", AUTO, "3"),
        ("23+48=71 71-17=54 #54", AUTO, "54"),
        ("The answer is 7.", AUTO, "7"),  # answer-is, after the explicit markers
        ("The answer is 7.\n#### 8", AUTO, "8"),
        ("23+48=71 71-1", AUTO, None),  # a cut-off sum: never its last number
        ("just some text", AUTO, None),
        ("", AUTO, None),
    ],
)
def test_extract_answer_by_kind(text: str, kind: ExtractorKind, expected: str | None) -> None:
    assert extract_answer(text, kind) == expected


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("Result: 41 ... Result: 42", r"Result: (-?[0-9]+)", "42"),  # the last match
        ("so x = 1,000.", r"x = ([0-9,]+)", "1000"),  # normalised like every answer
        ("choice (B) wins", r"\(([A-D])\)", "B"),
        ("answer B", r"[A-D]\b", "B"),  # no group: the whole match
        ("Result: none", r"Result: ([0-9]+)", None),
        ("abc", r"[0-9]*", None),  # only empty matches
        ("x=1 y=", r"[a-z]=([0-9]*)", "1"),  # an empty group is no answer
    ],
)
def test_regex_extractor_reads_the_users_pattern(
    text: str, pattern: str, expected: str | None
) -> None:
    assert extract_answer(text, ExtractorKind.REGEX, pattern) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"extractor": "regex", "answer_pattern": "(unclosed"}, "is not a valid regular expr"),
        ({"extractor": "regex", "answer_pattern": "x" * 257}, "at most 256 characters"),
        ({"extractor": "regex"}, "extractor regex needs an answer_pattern"),
        ({"extractor": "auto", "answer_pattern": "([0-9]+)"}, "only it takes one"),
    ],
)
def test_service_config_refuses_a_bad_answer_pattern(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        StrategyDefaults.model_validate(settings)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 42 ", "42"),
        ("42.", "42"),
        ("42.0", "42"),
        ("+42", "42"),
        ("1,234", "1234"),
        ("1,234.50", "1234.5"),
        ("-0", "0"),
        ("0.250", "0.25"),
        ("007", "7"),
        ("$42$", "42"),
        (r"\text{Paris}", "Paris"),
        ("New   York.", "New York"),
        ("1,23", "1,23"),  # not a thousands separator: left as text
        ("3/4", "3/4"),
    ],
)
def test_normalize_answer_groups_equal_answers(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_equal_numbers_in_different_spellings_extract_equal() -> None:
    spellings = ["#### 1,234", r"\boxed{1234.0}", "Answer: +1234.", "#1234"]
    assert {extract_answer(text, AUTO) for text in spellings} == {"1234"}


@pytest.mark.parametrize(
    ("text", "delimiter", "expected"),
    [
        ("a=1\nb=2\n\n#3", "\n", ["a=1", "b=2", "#3"]),
        ("23+48=71 71-17=54 #54", " ", ["23+48=71", "71-17=54", "#54"]),
        ("", "\n", []),
        ("one step", "\n\n", ["one step"]),
    ],
)
def test_split_steps_drops_empty_steps(text: str, delimiter: str, expected: list[str]) -> None:
    assert split_steps(text, delimiter) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 54.", "54"),
        ("-0", "0"),
        ("1,234.50", "1234.5"),
        ("$42$", "42"),
        ("51 718+78=165", None),
        ("B", None),
        ("", None),
    ],
)
def test_numeric_answer_is_a_number_alone_or_none(raw: str, expected: str | None) -> None:
    assert numeric_answer(raw) == expected
