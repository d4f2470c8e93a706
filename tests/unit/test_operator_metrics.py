"""The operator's metrics from one reconcile pass (`ponder.operator.metrics`): each series read
back from the exposition by value, and a deleted service's series gone."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ponder.api.crd import ReasoningServiceStatus
from ponder.operator.decide import Children, Plan, status_of
from ponder.operator.metrics import OperatorMetrics
from ponder.operator.snapshot import Backlog, Snapshot, StatsSummary
from tests.unit.test_reconcile_decide import ALL_READY, NOW, plan_with, snapshot_of

STATS = StatsSummary(
    schedulers=2,
    branches_outstanding=40,
    expected_branch_tokens=20_480,
    queries_in_flight=3,
    p95_latency_ms=1250,
    slo_attainment_percent=97,
)


def samples(metrics: OperatorMetrics) -> dict[str, float]:
    """`name{label="v",...}` -> value, labels in sorted order."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


MATH = 'name="math",namespace="team-a"'


def status_after(snapshot: Snapshot, plan: Plan) -> ReasoningServiceStatus:
    return status_of(snapshot, plan, Children(ALL_READY, ALL_READY), (), NOW)


def test_a_pass_records_replicas_decisions_and_the_autoscalers_inputs() -> None:
    metrics = OperatorMetrics()
    snapshot = snapshot_of(backlog=Backlog(pending_jobs=6, ack_pending_jobs=4), stats=STATS)
    plan = plan_with(snapshot, replicas=3, scaled_from=1)
    status = status_of(snapshot, plan, Children(ALL_READY, ALL_READY), (), NOW)
    metrics.observe_pass(snapshot, plan, status)
    found = samples(metrics)
    assert found[f"ponder_desired_replicas{{{MATH}}}"] == 3
    assert found[f"ponder_actual_replicas{{{MATH}}}"] == 2
    assert found[f"ponder_ready_replicas{{{MATH}}}"] == 2
    decisions = [key for key in found if key.startswith("ponder_scale_decisions_total{")]
    assert len(decisions) == 1 and 'direction="up"' in decisions[0]
    assert found[decisions[0]] == 1
    # Demand is the larger of the stream's jobs (10) and the schedulers' branches (40).
    assert found[f"ponder_autoscaler_demand_branches{{{MATH}}}"] == 40
    assert found[f'ponder_autoscaler_backlog_jobs{{{MATH},state="pending"}}'] == 6
    assert found[f'ponder_autoscaler_backlog_jobs{{{MATH},state="running"}}'] == 4
    assert found[f"ponder_autoscaler_expected_branch_tokens{{{MATH}}}"] == 20_480
    assert found[f"ponder_autoscaler_p95_latency_seconds{{{MATH}}}"] == 1.25
    assert found[f"ponder_autoscaler_slo_target_seconds{{{MATH}}}"] == 30.0
    assert found[f"ponder_autoscaler_slo_attainment_ratio{{{MATH}}}"] == pytest.approx(0.97)


def test_unknown_latency_is_no_sample_and_a_held_count_is_no_decision() -> None:
    metrics = OperatorMetrics()
    for stats in (STATS, None):  # the schedulers went quiet
        snapshot = snapshot_of(stats=stats)
        plan = plan_with(snapshot, replicas=2)
        metrics.observe_pass(
            snapshot, plan, status_of(snapshot, plan, Children(ALL_READY, ALL_READY), (), NOW)
        )
    found = samples(metrics)
    assert f"ponder_autoscaler_p95_latency_seconds{{{MATH}}}" not in found
    assert f"ponder_autoscaler_slo_attainment_ratio{{{MATH}}}" not in found
    assert not any(key.startswith("ponder_scale_decisions_total{") for key in found)


def test_a_deleted_service_leaves_no_series() -> None:
    metrics = OperatorMetrics()
    snapshot = snapshot_of(backlog=Backlog(1, 1), stats=STATS)
    plan = plan_with(snapshot, replicas=3, scaled_from=1)
    metrics.observe_pass(
        snapshot, plan, status_of(snapshot, plan, Children(ALL_READY, ALL_READY), (), NOW)
    )
    metrics.forget(("team-a", "math"))
    assert not [key for key in samples(metrics) if re.search(r'namespace="team-a"', key)]


def test_reconcile_passes_are_timed_and_errors_counted_by_type() -> None:
    metrics = OperatorMetrics()
    with metrics.timed("timer"):
        pass
    with pytest.raises(RuntimeError), metrics.timed("change"):
        raise RuntimeError("boom")
    found = samples(metrics)
    assert found['ponder_reconcile_seconds_count{trigger="timer"}'] == 1
    assert found['ponder_reconcile_seconds_count{trigger="change"}'] == 1
    assert found['ponder_reconcile_errors_total{error="RuntimeError",trigger="change"}'] == 1
