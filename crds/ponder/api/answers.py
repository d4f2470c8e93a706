"""Answer extractors: pull the final answer out of a branch's text, normalised for voting.

Pure functions, shared by both halves of the data plane. The scheduler's runner calls
`extract_answer(branch.full_text, query.extractor, query.answer_pattern)` for every finished
branch; strategies vote on the normalised strings, so `"1,234."`, `"+1234"` and `"1234.0"` all
count as the same answer `"1234"`. Workers read answers with the same functions while a branch
generates: to find where its answer settled (tokens after the answer) and to read an answer
probe (`ponder.workers.probing`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from ponder.api.service_config import ExtractorKind

_BOXED_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
# GSM8K's "#### 42" (anything up to the end of the line) ...
_FOUR_HASHES = re.compile(r"####[ \t]*([^\n]*?)[ \t]*$", re.MULTILINE)
# ... and the short "#54" our arithmetic task ends with: a single '#' followed by a number.
_HASH_NUMBER = re.compile(r"(?<![#\w])#[ \t]*([+-]?(?:\d[\d,]*)?\.?\d+)")
_ANSWER_COLON = re.compile(r"(?i)\b(?:final[ \t]+)?answer[ \t]*(?:is[ \t]*)?:[ \t]*([^\n]*)")
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm)\{(.*)\}$", re.DOTALL)
# A number in prose: its sign only when the sign is not an operator ("10-3" ends in 3, "= -3" in
# -3), thousands groups or plain digits, a decimal part; never the tail of a word ("H2O", "x1").
_PROSE_NUMBER = (
    r"(?:(?<![\w.)\]}])[+-])?(?<![\w.])(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?"
)
_ANY_NUMBER = re.compile(_PROSE_NUMBER)
# "the answer is 7", "The final answer is: **7**", "answer: 7"; markdown bold and `$` may wrap it.
_ANSWER_IS = re.compile(
    rf"(?i)\banswer(?:[ \t]+is[ \t]*:?|[ \t]*:)[ \t]*[*$]*[ \t]*({_PROSE_NUMBER})"
)


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces may nest), or None."""
    if "\\" not in text:
        return None  # cheap test first: most texts have no LaTeX at all
    found: str | None = None
    for opening in _BOXED_OPEN.finditer(text):
        content = _balanced(text, opening.end())
        if content is not None:
            found = content
    return found


def extract_hashes(text: str) -> str | None:
    """The last `#### answer` (GSM8K) or, failing that, the last `#42` marker, or None."""
    if "#" not in text:
        return None
    if "####" in text:
        four = [m.group(1) for m in _FOUR_HASHES.finditer(text) if m.group(1).strip()]
        if four:
            return four[-1]
    single = _HASH_NUMBER.findall(text)
    return single[-1] if single else None


def extract_answer_colon(text: str) -> str | None:
    """The rest of the line after the last `Answer:` / `Final Answer:` / `answer is:`, or None."""
    if ":" not in text:
        return None
    found = [m.group(1) for m in _ANSWER_COLON.finditer(text) if m.group(1).strip()]
    if not found:
        return None
    # "Final Answer: \boxed{42}" is common; keep only what is inside the box.
    return extract_boxed(found[-1]) or found[-1]


def extract_answer_is(text: str) -> str | None:
    """The number after the last "the answer is" / "answer is:" / "answer:" (any case), or None."""
    found = _ANSWER_IS.findall(text)
    return found[-1] if found else None


def extract_last_number(text: str) -> str | None:
    """The last number in the text (`"14 + 28 = 36 ... "` -> `"36"`), or None."""
    found = _ANY_NUMBER.findall(text)
    return found[-1] if found else None


def extract_pattern(text: str, pattern: str) -> str | None:
    """In the last non-empty match of `pattern`, its first group (else the whole match), or None.

    `pattern` was checked at configuration load (`ponder.api.service_config`); `re` caches its
    compiled form, so extracting with it per branch does not recompile.
    """
    compiled = re.compile(pattern)
    found: str | None = None
    for match in compiled.finditer(text):
        value = match.group(1) if compiled.groups else match.group(0)
        if value:
            found = value
    return found


_EXTRACTORS: dict[ExtractorKind, Callable[[str], str | None]] = {
    ExtractorKind.BOXED: extract_boxed,
    ExtractorKind.HASHES: extract_hashes,
    ExtractorKind.ANSWER_COLON: extract_answer_colon,
    ExtractorKind.ANSWER_IS: extract_answer_is,
    ExtractorKind.LAST_NUMBER: extract_last_number,
}
# Explicit markers only, most specific first. AnswerIs comes last, so a text that any of the
# first three reads answers as before (the arithmetic model's `#54`); LastNumber is never
# tried: a branch cut off mid-sum would vote for whatever number it stopped at.
_AUTO_ORDER = (
    ExtractorKind.BOXED,
    ExtractorKind.HASHES,
    ExtractorKind.ANSWER_COLON,
    ExtractorKind.ANSWER_IS,
)


def extract_answer(text: str, kind: ExtractorKind, pattern: str | None = None) -> str | None:
    """The normalised final answer in `text` by `kind`; AUTO tries boxed, hashes, answer-colon,
    answer-is; REGEX reads `pattern` (the service's `answer_pattern`).

    None when no pattern matches or the match is empty after normalisation: such a branch is not
    a vote.
    """
    if kind == ExtractorKind.REGEX:
        if pattern is None:
            raise ValueError("extractor regex needs an answer pattern")
        raw = extract_pattern(text, pattern)
        return (normalize_answer(raw) or None) if raw is not None else None
    kinds = _AUTO_ORDER if kind == ExtractorKind.AUTO else (kind,)
    for each in kinds:
        raw = _EXTRACTORS[each](text)
        if raw is not None:
            answer = normalize_answer(raw)
            if answer:
                return answer
    return None


def normalize_answer(raw: str) -> str:
    """A canonical spelling so that equal answers vote together.

    Strips whitespace, `$` math delimiters, `\\text{}` wrappers and trailing periods; collapses
    inner whitespace; numbers lose thousands separators, a leading `+` and trailing zeros
    (`"1,234.50"` -> `"1234.5"`, `"42.0"` -> `"42"`, `"-0"` -> `"0"`).
    """
    answer = " ".join(raw.split())
    if _is_plain_integer(answer):
        return str(int(answer))  # the common case, e.g. "#41": no wrappers, no Decimal
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().strip("$").strip().rstrip(".").strip()
        wrapped = _TEXT_WRAPPER.match(answer)
        if wrapped:
            answer = wrapped.group(1)
    number = _canonical_number(answer)
    return number if number is not None else answer


def numeric_answer(raw: str) -> str | None:
    """`raw` as an answer when it is a number alone (`normalize_answer`'s spelling), else
    None: for text no extractor read, where only a bare number is well-formed enough."""
    answer = normalize_answer(raw)
    return answer if _canonical_number(answer) is not None else None


def _is_plain_integer(text: str) -> bool:
    """ASCII digits with an optional sign (`str.isdigit` alone also takes e.g. superscripts)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


def _canonical_number(text: str) -> str | None:
    if not any(ch.isdigit() for ch in text) or not _NUMBER.fullmatch(text):
        return None
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def split_steps(text: str, delimiter: str) -> list[str]:
    """The non-empty steps of a solution, split at `delimiter` and stripped."""
    return [step.strip() for step in text.split(delimiter) if step.strip()]


def _balanced(text: str, start: int) -> str | None:
    """The text from `start` up to the brace that closes an already-open `{`, or None."""
    depth = 1
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return None
