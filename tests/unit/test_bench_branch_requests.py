"""bench.branch_requests: the split-over-joined ratio is of medians, per shape."""

from __future__ import annotations

import pytest

from bench.branch_requests import Timing, speed_ratio


def test_the_ratio_is_of_median_seconds() -> None:
    joined = [Timing("n=8", 10.0, 100), Timing("n=8", 12.0, 100), Timing("n=8", 30.0, 100)]
    split = [
        Timing("8 x n=1", 11.0, 100),
        Timing("8 x n=1", 15.0, 100),
        Timing("8 x n=1", 9.0, 100),
    ]
    assert speed_ratio(split, joined) == pytest.approx(11.0 / 12.0)


def test_tokens_per_second_of_a_timing() -> None:
    assert Timing("n=8", 4.0, 100).tokens_per_second == 25.0
    assert Timing("n=8", 0.0, 100).tokens_per_second == 0.0
