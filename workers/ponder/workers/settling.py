"""Where a branch's answer settled: the tokens generated until its extracted answer first
appeared and stayed the same (pure). What came after is overthinking: tokens spent on an answer
that did not change.

The text's prefixes are read at the checkpoints its stream left (`ChoiceOutput.checkpoints`,
one per streamed piece), from the end backwards: every `SCAN_STRIDE`-th checkpoint first, then
each checkpoint between the last agreeing one and the first that disagrees. Reading each prefix
once would cost one extraction per token; this costs about `tokens / SCAN_STRIDE + SCAN_STRIDE`.
An answer that changed and changed back entirely between two sampled checkpoints is missed, so
the settled position is, if anything, early by less than a stride.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ponder.api.answers import extract_answer
from ponder.api.wire import AnswerReading

SCAN_STRIDE = 8
"""Checkpoints skipped between two reads of the coarse backward scan."""

Reader = Callable[[str], str | None]


def reader_of(reading: AnswerReading) -> Reader:
    """The function that reads a text's answer as the service does."""

    def read(text: str) -> str | None:
        return extract_answer(text, reading.extractor, reading.pattern)

    return read


def settled_tokens(
    text: str, checkpoints: Sequence[tuple[int, int]], read: Reader, stride: int = SCAN_STRIDE
) -> int | None:
    """Tokens generated until `text`'s answer first appeared and stayed the same, or None when
    `text` has no answer.

    `checkpoints` are `(characters, tokens)` in increasing order; the last covers `text`.
    """
    final = read(text)
    if final is None or not checkpoints:
        return None

    def agrees(index: int) -> bool:
        return read(text[: checkpoints[index][0]]) == final

    earliest = len(checkpoints) - 1  # the full text reads `final`
    index = earliest - stride
    while index >= 0 and agrees(index):
        earliest = index
        index -= stride
    # Between the first disagreeing sample (or the start) and the earliest agreeing one.
    for candidate in range(earliest - 1, max(index, -1), -1):
        if not agrees(candidate):
            break
        earliest = candidate
    return checkpoints[earliest][1]
