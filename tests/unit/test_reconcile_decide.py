"""The decisions of one reconcile pass (pure): snapshots in, worker counts, children and status
out, without an API server or NATS."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ponder.api.crd import ConditionStatus, ReasoningService, ReasoningServiceStatus
from ponder.api.service_config import ServiceConfig
from ponder.operator import decide as pass_decisions
from ponder.operator import render
from ponder.operator.decide import Children, Plan, children_after, decide, status_change, status_of
from ponder.operator.policy import AutoscalerState, Recommendation
from ponder.operator.service_config import service_config_from_spec
from ponder.operator.snapshot import Backlog, Snapshot, StatsSummary
from ponder.operator.status import DeploymentState, UnschedulablePod

NATS = "nats://nats.ponder-system:4222"
AT = 1_000_000.0
NOW = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
EARLIER = "2030-01-01T00:00:00Z"
ALL_READY = DeploymentState(
    exists=True,
    spec_replicas=2,
    replicas=2,
    ready_replicas=2,
    updated_replicas=2,
    generation=1,
    observed_generation=1,
)


def service_of(
    *, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
) -> ReasoningService:
    body: dict[str, Any] = {
        "metadata": {"name": "math", "namespace": "team-a", "uid": "1234-abcd", "generation": 3},
        "spec": {"model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"}, **(spec or {})},
    }
    if status is not None:
        body["status"] = status
    return ReasoningService.model_validate(body)


def deployment(replicas: int, ready: int = 0) -> dict[str, Any]:
    """A Deployment as the API server returns it."""
    return {
        "metadata": {"name": "math-workers", "generation": 1},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": ready, "observedGeneration": 1},
    }


def snapshot_of(service: ReasoningService | None = None, **fields: Any) -> Snapshot:
    values: dict[str, Any] = {
        "service": service or service_of(),
        "workers": None,
        "scheduler": None,
        "stream_error": None,
        "backlog": Backlog(pending_jobs=0, ack_pending_jobs=0),
        "stats": None,
        "at": AT,
    }
    values.update(fields)
    return Snapshot(**values)


def config_of(snapshot: Snapshot) -> ServiceConfig:
    meta = snapshot.service.metadata
    return service_config_from_spec(meta.namespace, meta.name, snapshot.service.spec, NATS)


def plan_of(snapshot: Snapshot, *, autoscale: bool) -> Plan:
    return decide(snapshot, config_of(snapshot), autoscale=autoscale)


def worker_replicas_rendered(plan: Plan) -> int:
    workers = next(
        child.manifest
        for child in plan.children
        if child.manifest["kind"] == "Deployment"
        and child.manifest["metadata"]["name"] == "math-workers"
    )
    replicas: int = workers["spec"]["replicas"]
    return replicas


# Slots 32 x 80 % = 25.6 branches per worker; minReplicas 1, maxReplicas 4 by default.
WORKER_COUNT_CASES = [
    pytest.param(
        snapshot_of(remembered_workers=3, backlog=Backlog(100, 0)),
        False,
        3,
        False,
        id="a change is applied with the remembered count: no decision outside the timer",
    ),
    pytest.param(
        snapshot_of(remembered_workers=1, backlog=Backlog(100, 0), workers=deployment(1)),
        True,
        4,
        True,
        id="the timer scales 100 queued jobs to 4 workers",
    ),
    pytest.param(
        snapshot_of(remembered_workers=2, backlog=None, stream_error="TimeoutError"),
        True,
        2,
        False,
        id="no backlog (NATS down) holds the count rather than guess",
    ),
    pytest.param(
        snapshot_of(
            service_of(spec={"autoscaling": {"mode": "External"}, "workers": {"replicas": 5}}),
            remembered_workers=1,
            backlog=Backlog(1000, 0),
        ),
        True,
        5,
        False,
        id="External mode follows spec.workers.replicas, the autoscaler stays out",
    ),
    pytest.param(
        snapshot_of(service_of(status={"desiredReplicas": 3}), workers=deployment(2), backlog=None),
        True,
        3,
        False,
        id="after a restart the count recorded in status wins over the Deployment's",
    ),
    pytest.param(
        snapshot_of(workers=deployment(2), backlog=None),
        False,
        2,
        False,
        id="with neither memory nor status the Deployment's count is kept",
    ),
    pytest.param(
        snapshot_of(backlog=None),
        False,
        1,
        False,
        id="a new service starts at minReplicas",
    ),
    pytest.param(
        snapshot_of(service_of(spec={"workers": {"maxReplicas": 2}}), remembered_workers=4),
        False,
        2,
        False,
        id="a lowered maxReplicas applies at once",
    ),
]


@pytest.mark.parametrize(("snapshot", "autoscale", "replicas", "decided"), WORKER_COUNT_CASES)
def test_worker_count_is_held_between_decisions_and_moved_only_by_the_timer(
    snapshot: Snapshot, autoscale: bool, replicas: int, decided: bool
) -> None:
    plan = plan_of(snapshot, autoscale=autoscale)
    assert plan.worker_replicas == replicas
    assert worker_replicas_rendered(plan) == replicas
    assert (plan.decision is not None) is decided


def test_a_decision_is_remembered_and_no_decision_keeps_the_autoscaler_memory() -> None:
    remembered = AutoscalerState(history=(Recommendation(AT - 10, 2),), last_active_at=AT - 10)
    snapshot = snapshot_of(
        remembered_workers=2, workers=deployment(2), backlog=Backlog(0, 0), autoscaler=remembered
    )
    assert plan_of(snapshot, autoscale=False).autoscaler is remembered
    timer = plan_of(snapshot, autoscale=True)
    assert timer.decision is not None
    assert timer.autoscaler == timer.decision.state
    assert timer.autoscaler.history[-1] == Recommendation(AT, 1)
    # One quiet tick never removes a worker: the scale-down window holds the count.
    assert timer.worker_replicas == 2


@pytest.mark.parametrize(
    ("workers", "scheduler", "existed"),
    [
        (None, None, {"Deployment/math-workers": False, "Deployment/math-scheduler": False}),
        (
            deployment(1),
            deployment(1),
            {"Deployment/math-workers": True, "Deployment/math-scheduler": True},
        ),
        (
            deployment(1),
            None,
            {"Deployment/math-workers": True, "Deployment/math-scheduler": False},
        ),
    ],
)
def test_children_come_in_apply_order_and_know_whether_their_deployment_existed(
    workers: dict[str, Any] | None, scheduler: dict[str, Any] | None, existed: dict[str, bool]
) -> None:
    plan = plan_of(snapshot_of(workers=workers, scheduler=scheduler), autoscale=False)
    kinds = [f"{c.manifest['kind']}/{c.manifest['metadata']['name']}" for c in plan.children]
    assert kinds == [
        "ConfigMap/math-config",
        "Deployment/math-scheduler",
        "Service/math",
        "Deployment/math-workers",
        "PodDisruptionBudget/math-workers",
        "NetworkPolicy/math-scheduler",
        "NetworkPolicy/math-workers",
    ]
    seen = {
        f"{c.manifest['kind']}/{c.manifest['metadata']['name']}": c.existed for c in plan.children
    }
    # Only the Deployments are read before the apply; the others are not looked up.
    assert seen == {
        "ConfigMap/math-config": None,
        "Service/math": None,
        "PodDisruptionBudget/math-workers": None,
        "NetworkPolicy/math-scheduler": None,
        "NetworkPolicy/math-workers": None,
        **existed,
    }


def test_children_carry_the_service_config_of_the_pass() -> None:
    snapshot = snapshot_of()
    config = config_of(snapshot).model_copy(update={"nats_url": "nats://elsewhere:4222"})
    plan = decide(snapshot, config, autoscale=False)
    config_map = plan.children[0].manifest
    assert config_map["data"][render.CONFIG_FILE] == config.model_dump_json(indent=2)


def plan_with(snapshot: Snapshot, *, replicas: int = 2, scaled_from: int | None = None) -> Plan:
    """A plan of `replicas` workers; `scaled_from` makes it an autoscaler decision from that."""
    plan = plan_of(snapshot, autoscale=False)
    decision = None
    if scaled_from is not None:
        timer = plan_of(
            replace(snapshot, remembered_workers=scaled_from, backlog=Backlog(0, 0)),
            autoscale=True,
        )
        assert timer.decision is not None
        decision = replace(timer.decision, replicas=replicas, current_replicas=scaled_from)
    return replace(plan, worker_replicas=replicas, decision=decision)


@pytest.mark.parametrize(
    ("previous", "scaled_from", "expected"),
    [
        pytest.param(None, None, None, id="never scaled"),
        pytest.param(EARLIER, None, EARLIER, id="no decision keeps the last time"),
        pytest.param(EARLIER, 2, EARLIER, id="a decision that keeps the count keeps it too"),
        pytest.param(EARLIER, 1, "2030-01-01T00:05:00Z", id="a decision that scales sets it"),
    ],
)
def test_last_scale_time_moves_only_when_the_autoscaler_changed_the_count(
    previous: str | None, scaled_from: int | None, expected: str | None
) -> None:
    snapshot = snapshot_of(service_of(status={"lastScaleTime": previous}))
    plan = plan_with(snapshot, replicas=2, scaled_from=scaled_from)
    status = status_of(snapshot, plan, Children(ALL_READY, ALL_READY), (), NOW)
    assert status.last_scale_time == expected


@pytest.mark.parametrize(
    ("backlog", "stats", "queue_depth", "p95", "attainment"),
    [
        (None, None, None, None, None),
        (Backlog(3, 2), None, 5, None, None),
        (
            Backlog(0, 1),
            StatsSummary(
                schedulers=2,
                branches_outstanding=8,
                expected_branch_tokens=4096,
                queries_in_flight=1,
                p95_latency_ms=1234,
                slo_attainment_percent=97,
                tokens_per_query=1800,
                early_stop_percent=40,
            ),
            8,  # branches, as the schedulers count them; the stream holds 1 job of them
            1234,
            97,
        ),
    ],
)
def test_status_reports_the_signals_the_pass_read(
    backlog: Backlog | None,
    stats: StatsSummary | None,
    queue_depth: int | None,
    p95: int | None,
    attainment: int | None,
) -> None:
    snapshot = snapshot_of(backlog=backlog, stats=stats)
    status = status_of(snapshot, plan_with(snapshot), Children(ALL_READY, ALL_READY), (), NOW)
    assert (status.queue_depth, status.p95_latency_milliseconds) == (queue_depth, p95)
    assert status.slo_attainment_percent == attainment
    # kubectl get rsvc -o wide: tokens per query and early stops, as the schedulers said.
    assert status.tokens_per_query == (stats.tokens_per_query if stats else None)
    assert status.early_stop_percent == (stats.early_stop_percent if stats else None)
    assert status.observed_generation == 3
    assert status.desired_replicas == 2
    assert status.ready == "2/2"
    assert status.endpoint == "http://math.team-a.svc:8000/v1"
    assert status.selector == render.worker_selector("math")
    assert status.served_model == "Qwen/Qwen2.5-1.5B-Instruct"


def condition(status: ReasoningServiceStatus, kind: str) -> tuple[ConditionStatus, str]:
    found = next(c for c in status.conditions if c.type == kind)
    return found.status, found.reason


def test_status_says_why_the_stream_is_unavailable() -> None:
    snapshot = snapshot_of(backlog=None, stream_error="TimeoutError")
    status = status_of(snapshot, plan_with(snapshot), Children(ALL_READY, ALL_READY), (), NOW)
    assert condition(status, "Degraded") == (ConditionStatus.TRUE, "StreamUnavailable")
    assert status.queue_depth is None


def test_status_shows_the_pending_workers_it_is_given() -> None:
    snapshot = snapshot_of()
    short = replace(ALL_READY, ready_replicas=1)
    pending = (UnschedulablePod("math-workers-x", "0/1 nodes: 1 Insufficient nvidia.com/gpu."),)
    status = status_of(snapshot, plan_with(snapshot), Children(short, ALL_READY), pending, NOW)
    assert condition(status, "Degraded") == (ConditionStatus.TRUE, "InsufficientGPUCapacity")


def test_the_applied_deployments_win_over_what_was_observed() -> None:
    snapshot = snapshot_of(workers=deployment(1, ready=1), scheduler=deployment(1, ready=1))
    applied = deployment(3, ready=1)
    children = children_after(snapshot, applied, None)
    assert children.workers == DeploymentState.from_manifest(applied)
    # An apply skipped as unchanged leaves what observe saw.
    assert children.scheduler == DeploymentState.from_manifest(snapshot.scheduler)
    assert children_after(snapshot_of(), None, None) == Children(
        DeploymentState(), DeploymentState()
    )


@pytest.mark.parametrize(
    ("workers", "wanted", "short"),
    [
        (DeploymentState(), 2, False),  # not created yet: no pods to explain
        (ALL_READY, 2, False),
        (replace(ALL_READY, ready_replicas=1), 2, True),
        (replace(ALL_READY, ready_replicas=2), 3, True),  # scaled up, new pods not ready
        (replace(ALL_READY, ready_replicas=0), 0, False),  # scaled to zero
    ],
)
def test_pending_workers_are_looked_for_only_while_the_pool_is_short(
    workers: DeploymentState, wanted: int, short: bool
) -> None:
    plan = plan_with(snapshot_of(), replicas=wanted)
    assert pass_decisions.workers_short(plan, Children(workers, ALL_READY)) is short


def test_status_is_written_only_when_it_changed() -> None:
    snapshot = snapshot_of()
    status = status_of(snapshot, plan_with(snapshot), Children(ALL_READY, ALL_READY), (), NOW)
    assert status_change(None, status) == status.model_dump(mode="json")
    assert status_change(status, status) is None
    moved = status.model_copy(update={"queue_depth": 7})
    patch = status_change(status, moved)
    assert patch is not None
    assert patch["queueDepth"] == 7
