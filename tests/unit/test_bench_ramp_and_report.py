"""The load ramp's arrivals and step scores, and the tables and JSON the benchmarks write."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import pytest

from bench.ramp import arrival_offsets, step_result
from bench.report import family, fmt, format_table, to_jsonable
from bench.summary import QueryRecord


def test_arrivals_are_a_poisson_process_of_the_asked_rate() -> None:
    offsets = arrival_offsets(20.0, 100.0, random.Random(1), limit=100_000)
    assert offsets == sorted(offsets)
    assert all(0.0 <= offset < 100.0 for offset in offsets)
    assert len(offsets) == pytest.approx(2000, rel=0.1)


def test_arrivals_are_bounded_and_repeatable() -> None:
    assert len(arrival_offsets(50.0, 100.0, random.Random(1), limit=30)) == 30
    assert arrival_offsets(5.0, 10.0, random.Random(7), 100) == arrival_offsets(
        5.0, 10.0, random.Random(7), 100
    )
    assert arrival_offsets(0.0, 10.0, random.Random(7), 100) == []


def record(correct: bool, latency: float, error: str | None = None, shrunk: bool = False):
    return QueryRecord(
        label="arm",
        system="ponder",
        problem_index=0,
        question="1+2",
        truth=3,
        answer="3" if correct else None,
        correct=correct,
        prompt_tokens=0,
        completion_tokens=0,
        latency_seconds=latency,
        branches=8 if not shrunk else 4,
        shrunk=shrunk,
        error=error,
    )


def test_step_result_scores_slo_accuracy_and_goodput() -> None:
    records = [
        record(True, 1.0),  # right, in time: goodput
        record(False, 1.0),  # wrong, in time
        record(True, 3.0),  # right, too late
        record(False, 0.5, error="HTTP 504", shrunk=True),  # no answer
    ]
    result = step_result("ponder SLO", 2.0, 10.0, records, slo_seconds=2.0)
    assert result.requests == 4
    assert result.slo_attainment == 0.5
    assert result.accuracy == 0.5
    assert result.goodput_per_second == pytest.approx(0.1)
    assert result.shrunk_share == 0.25
    assert result.errors == 1
    assert result.mean_branches == 7.0


def test_a_step_without_requests_scores_nan() -> None:
    result = step_result("arm", 1.0, 10.0, [], slo_seconds=1.0)
    assert math.isnan(result.slo_attainment)
    assert result.goodput_per_second == 0.0


def test_table_aligns_labels_left_and_numbers_right() -> None:
    rows = [["single", 0.5], ["self-consistency@16", 0.625]]
    table = format_table(["strategy", "accuracy"], rows)
    lines = table.splitlines()
    assert lines[0] == "strategy             accuracy"
    assert lines[2] == "single                   0.50"
    assert lines[3] == "self-consistency@16      0.62"


@pytest.mark.parametrize(
    ("value", "cell"), [(None, "-"), (math.nan, "-"), (0.5, "0.50"), (3, "3"), ("x", "x")]
)
def test_cells_show_missing_values_as_a_dash(value: object, cell: str) -> None:
    assert fmt(value) == cell


def test_strategies_of_one_family_share_a_plot_line() -> None:
    assert family("self-consistency@16") == "self-consistency"
    assert family("adaptive@0.95 (vote)") == "adaptive"
    assert family("beam-search") == "beam-search"


@dataclass(frozen=True)
class Point:
    name: str
    value: float


def test_results_become_plain_json_with_nan_as_null() -> None:
    payload = to_jsonable({"points": [Point("a", math.nan), Point("b", 1.5)], "n": (1, 2)})
    assert json.loads(json.dumps(payload)) == {
        "points": [{"name": "a", "value": None}, {"name": "b", "value": 1.5}],
        "n": [1, 2],
    }
