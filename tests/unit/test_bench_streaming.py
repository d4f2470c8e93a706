"""The streaming benchmark's arithmetic: the p50 of each mark and its share of the total."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.streaming import StreamMarks, has_content, scenario_figures


def test_each_mark_is_the_median_of_its_runs() -> None:
    figures = scenario_figures(
        "s",
        [StreamMarks(0.01, 0.1, 1.0), StreamMarks(0.03, 0.3, 3.0), StreamMarks(0.02, 0.2, 2.0)],
    )
    assert (figures.first_byte_p50, figures.first_token_p50, figures.total_p50) == (
        0.02,
        0.2,
        2.0,
    )
    assert figures.first_token_share == pytest.approx(0.1)
    assert figures.first_byte_share == pytest.approx(0.01)


def test_a_run_without_content_had_its_first_token_at_the_end() -> None:
    figures = scenario_figures("s", [StreamMarks(0.01, None, 2.0)])
    assert figures.first_token_p50 == 2.0 and figures.first_token_share == 1.0


def test_a_scenario_needs_runs() -> None:
    with pytest.raises(ValueError, match="no runs"):
        scenario_figures("s", [])
    assert math.isnan(scenario_figures("s", [StreamMarks(0.0, 0.0, 0.0)]).first_byte_share)


@pytest.mark.parametrize(
    ("chunk", "content"),
    [
        ({"choices": [{"index": 0, "text": ""}], "ponder": {"event": "wave_launched"}}, False),
        ({"choices": [{"index": 0, "text": "12"}]}, True),
        ({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, False),
        ({"choices": [{"index": 0, "delta": {"content": "4"}}]}, True),
        ({"choices": [], "usage": {}}, False),
    ],
)
def test_only_chunks_with_text_carry_the_answer(chunk: dict[str, Any], content: bool) -> None:
    assert has_content(chunk) is content
