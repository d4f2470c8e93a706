"""A branch's token and group confidence, as DeepConf measures it (ponder.workers.confidence),
and the worker's count of branches it stopped below their threshold (.metrics)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ponder.api.metrics import WORKER_LOW_CONFIDENCE_STOPS_TOTAL
from ponder.api.service_config import TokenConfidence
from ponder.api.wire import BranchResult, BranchStatus, ConfidenceWatch
from ponder.workers.confidence import GroupConfidence, token_confidence
from ponder.workers.metrics import WorkerMetrics

SAMPLED = ConfidenceWatch(token=TokenConfidence.SAMPLED)
TOP_2 = ConfidenceWatch(token=TokenConfidence.TOP_K, top_k=2)


@pytest.mark.parametrize(
    ("watch", "sampled", "top_logprobs", "value"),
    [
        (SAMPLED, -0.5, [-0.5, -2.0], -0.5),
        (SAMPLED, 0, [], 0.0),
        (SAMPLED, None, [-0.5], None),  # no sampled logprob: no value
        # Minus the mean of the two likeliest: (0.5 + 1.5) / 2.
        (TOP_2, -0.5, [-0.5, -1.5], 1.0),
        # vLLM's completions add the sampled token when it is not in the top k: the k largest.
        (TOP_2, -3.0, [-3.0, -0.5, -1.5], 1.0),
        (TOP_2, -1.0, [None, -1.0, -3.0], 2.0),  # nulls are skipped
        (TOP_2, -2.0, [-2.0], 2.0),  # fewer than k (tokens that read alike): what there is
        (TOP_2, -2.0, [], None),
        (TOP_2, -2.0, [float("nan"), True], None),
    ],
)
def test_token_confidence_per_kind(
    watch: ConfidenceWatch, sampled: Any, top_logprobs: list[Any], value: float | None
) -> None:
    assert token_confidence(watch, sampled, top_logprobs) == (
        pytest.approx(value) if value is not None else None
    )


def watch(token: TokenConfidence, window: int, stop_below: float | None = None) -> ConfidenceWatch:
    return ConfidenceWatch(token=token, window_tokens=window, stop_below=stop_below)


@pytest.mark.parametrize(
    ("watched", "values", "lowest"),
    [
        # Windows of 2: means -1, -2, -2; a group scores exp(mean).
        (watch(TokenConfidence.SAMPLED, 2), [-1.0, -1.0, -3.0, -1.0], math.exp(-2.0)),
        # The window is longer than the branch: the group of all its tokens.
        (watch(TokenConfidence.SAMPLED, 4), [-1.0, -3.0], math.exp(-2.0)),
        # Once a window is full, the shorter prefix no longer counts (its mean was -3).
        (watch(TokenConfidence.SAMPLED, 2), [-3.0, 0.0, 0.0], math.exp(-1.5)),
        # top-k: the mean itself. Windows of 2: 3, 5.
        (watch(TokenConfidence.TOP_K, 2), [2.0, 4.0, 6.0], 3.0),
        (watch(TokenConfidence.TOP_K, 8), [2.0, 4.0, 6.0], 4.0),
        (watch(TokenConfidence.TOP_K, 1), [2.0, 0.5, 6.0], 0.5),
        (watch(TokenConfidence.SAMPLED, 4), [], None),
    ],
)
def test_a_branch_is_as_confident_as_its_lowest_group(
    watched: ConfidenceWatch, values: list[float], lowest: float | None
) -> None:
    group = GroupConfidence(watched)
    for value in values:
        group.add(value)
    assert group.lowest == (pytest.approx(lowest) if lowest is not None else None)
    assert not group.below_threshold  # no threshold: never below it


def test_a_sampled_group_is_a_probability_even_when_the_running_sum_drifts() -> None:
    group = GroupConfidence(watch(TokenConfidence.SAMPLED, 3))
    for value in [-0.1, -0.2, -0.3, -1e-17, 0.0, 0.0] * 50 + [0.0, 0.0, 0.0]:
        group.add(value)
    assert group.lowest is not None and 0.0 < group.lowest <= 1.0


@pytest.mark.parametrize(
    ("stop_below", "values", "below"),
    [
        # Partial windows never stop a branch: exp(-5) and exp(-2.5) are below 0.5.
        (0.5, [-5.0, 0.0], False),
        # The first full window, exp(-5/3) = 0.19, is.
        (0.5, [-5.0, 0.0, 0.0], True),
        (0.1, [-5.0, 0.0, 0.0], False),
        # Once below, a branch stays below, however confident it becomes.
        (0.5, [-5.0, 0.0, 0.0, 0.0, 0.0, 0.0], True),
        # A group at the threshold is not below it: both full windows average exactly -1.
        (math.exp(-1.0), [0.0, -3.0, 0.0, 0.0], False),
        # A sampled group is at most 1: a threshold of 1 stops every branch at its first window.
        (1.0, [0.0, 0.0, -1e-6], True),
    ],
)
def test_the_threshold_is_hit_only_by_a_full_window(
    stop_below: float, values: list[float], below: bool
) -> None:
    group = GroupConfidence(watch(TokenConfidence.SAMPLED, 3, stop_below=stop_below))
    for value in values:
        group.add(value)
    assert group.below_threshold is below


def test_the_worker_counts_the_branches_it_stopped_for_low_confidence() -> None:
    metrics = WorkerMetrics("w")

    def result(branch_id: str, low_confidence: bool) -> BranchResult:
        status = BranchStatus.CANCELLED if low_confidence else BranchStatus.COMPLETED
        return BranchResult(
            query_id="q",
            job_id="q.j0",
            branch_id=branch_id,
            status=status,
            confidence=0.2,
            low_confidence=low_confidence,
        )

    metrics.count_answers([result("b0", True), result("b1", False), result("b2", True)])
    assert metrics.registry.get_sample_value(WORKER_LOW_CONFIDENCE_STOPS_TOTAL) == 2.0
