"""Answer extractors and normalisation (ponder.scheduler.extract)."""

from __future__ import annotations

import pytest

from ponder.api.service_config import ExtractorKind
from ponder.scheduler.extract import extract_answer, normalize_answer, split_steps

AUTO, BOXED, HASHES, COLON = (
    ExtractorKind.AUTO,
    ExtractorKind.BOXED,
    ExtractorKind.HASHES,
    ExtractorKind.ANSWER_COLON,
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
        # AUTO: boxed, then hashes, then answer-colon; nothing -> None
        (r"Answer: 3 but \boxed{4}", AUTO, "4"),
        ("Answer: 3\n#### 5", AUTO, "5"),
        ("Answer: 3", AUTO, "3"),
        ("23+48=71 71-17=54 #54", AUTO, "54"),
        ("just some text", AUTO, None),
        ("", AUTO, None),
    ],
)
def test_extract_answer_by_kind(text: str, kind: ExtractorKind, expected: str | None) -> None:
    assert extract_answer(text, kind) == expected


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
