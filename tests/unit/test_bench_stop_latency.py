"""The stop-latency benchmark's arithmetic: figures over repetitions, against their targets."""

from __future__ import annotations

import pytest

from bench.stop_latency import Figure, figures, figures_table


@pytest.mark.parametrize(
    ("samples", "target", "p50", "highest", "meets"),
    [
        ((0.1,), 0.25, 0.1, 0.1, True),
        ((0.1, 0.2, 0.9), 0.25, 0.2, 0.9, True),  # one busy moment moves the max, not the p50
        ((0.3, 0.2, 0.4, 0.1), 0.25, 0.25, 0.4, True),  # the p50 on the target passes
        ((0.3, 0.4, 0.1), 0.25, 0.3, 0.4, False),
    ],
)
def test_figure_judges_the_median_against_the_target(
    samples: tuple[float, ...], target: float, p50: float, highest: float, meets: bool
) -> None:
    figure = Figure("f", target, samples)
    assert figure.p50_seconds == pytest.approx(p50)
    assert figure.max_seconds == highest
    assert figure.meets_target is meets


def test_figures_follow_the_targets_order_and_need_samples_for_each() -> None:
    targets = {"b": 1.0, "a": 0.5}
    measured = figures({"a": [0.1], "b": [0.2, 0.3], "unused": [9.0]}, targets)
    assert [(f.name, f.target_seconds, f.samples) for f in measured] == [
        ("b", 1.0, (0.2, 0.3)),
        ("a", 0.5, (0.1,)),
    ]
    with pytest.raises(ValueError, match="no samples for a"):
        figures({"a": [], "b": [0.2]}, targets)


def test_table_prints_milliseconds_and_flags_a_missed_target() -> None:
    table = figures_table([Figure("fast", 0.25, (0.1, 0.12)), Figure("slow", 0.5, (0.7, 0.9))])
    header, _rule, fast, slow = table.splitlines()
    assert header.split()[:3] == ["figure", "target", "ms"]
    assert fast.split() == ["fast", "250", "110", "120", "2", "yes"]
    assert slow.split() == ["slow", "500", "800", "900", "2", "NO"]
