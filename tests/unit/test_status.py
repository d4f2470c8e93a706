"""Status and conditions computed from what the children show (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ponder.api.crd import ConditionStatus, ReasoningServiceStatus
from ponder.operator.status import (
    DeploymentState,
    Observation,
    UnschedulablePod,
    compute_status,
    degraded_warning,
    status_patch,
)

EARLIER = "2030-01-01T00:00:00Z"
NOW = "2030-01-01T00:05:00Z"
GPU_SHORTAGE = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role: cpu}, "
    "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
)


def deployment(replicas: int, ready: int, *, updated: int | None = None) -> DeploymentState:
    return DeploymentState(
        exists=True,
        spec_replicas=replicas,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=replicas if updated is None else updated,
        generation=3,
        observed_generation=3,
    )


HEALTHY = Observation(
    generation=7,
    desired_workers=2,
    scheduler_replicas=1,
    workers=deployment(2, 2),
    scheduler=deployment(1, 1),
    queue_depth=12,
    p95_latency_ms=1500,
    slo_attainment_percent=98,
    selector="app.kubernetes.io/instance=math",
    endpoint="http://math.default.svc:8000/v1",
    served_model="qwen",
)
GPU_PENDING = (
    UnschedulablePod("math-workers-a", GPU_SHORTAGE),
    UnschedulablePod("math-workers-b", GPU_SHORTAGE),
)


def conditions(status: ReasoningServiceStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


@pytest.mark.parametrize(
    ("case", "observation", "ready", "progressing", "degraded"),
    [
        (
            "everything up",
            HEALTHY,
            ("True", "Available"),
            ("False", "RolloutComplete"),
            ("False", "AsExpected"),
        ),
        (
            "children not created yet",
            replace(HEALTHY, workers=DeploymentState(), scheduler=DeploymentState()),
            ("False", "Creating"),
            ("True", "Creating"),
            ("False", "AsExpected"),
        ),
        (
            "scheduler not ready",
            replace(HEALTHY, scheduler=deployment(1, 0)),
            ("False", "SchedulerUnavailable"),
            ("True", "RollingOut"),
            ("False", "AsExpected"),
        ),
        (
            "no worker ready yet",
            replace(HEALTHY, workers=deployment(2, 0)),
            ("False", "WorkersUnavailable"),
            ("True", "ScalingWorkers"),
            ("False", "AsExpected"),
        ),
        (
            "scaling up while serving",
            replace(HEALTHY, desired_workers=5, workers=deployment(2, 2)),
            ("True", "Available"),
            ("True", "ScalingWorkers"),
            ("False", "AsExpected"),
        ),
        (
            "a rollout of a new template",
            replace(HEALTHY, workers=deployment(2, 2, updated=1)),
            ("True", "Available"),
            ("True", "RollingOut"),
            ("False", "AsExpected"),
        ),
        (
            "the API server refused a Deployment",
            replace(
                HEALTHY,
                workers=DeploymentState(),
                apply_errors=("Deployment/math-workers: exceeded quota (403 Forbidden)",),
            ),
            ("False", "Creating"),
            ("True", "Creating"),
            ("True", "ApplyFailed"),
        ),
        (
            "the credentials Secret refused",
            replace(
                HEALTHY,
                workers=DeploymentState(),
                nats_credentials_error='secrets "math-nats" is forbidden (403 Forbidden)',
            ),
            ("False", "Creating"),
            ("True", "Creating"),
            ("True", "NatsCredentialsFailed"),
        ),
        (
            "more workers than the GPUs hold",
            replace(
                HEALTHY,
                desired_workers=20,
                workers=deployment(20, 16),
                unschedulable_workers=GPU_PENDING,
            ),
            ("True", "Available"),
            ("True", "ScalingWorkers"),
            ("True", "InsufficientGPUCapacity"),
        ),
        (
            "no GPU at all",
            replace(HEALTHY, workers=deployment(2, 0), unschedulable_workers=GPU_PENDING),
            ("False", "InsufficientGPUCapacity"),
            ("True", "ScalingWorkers"),
            ("True", "InsufficientGPUCapacity"),
        ),
        (
            "unschedulable for another reason",
            replace(
                HEALTHY,
                workers=deployment(2, 1),
                unschedulable_workers=(UnschedulablePod("w", "0/3 nodes match node selector"),),
            ),
            ("True", "Available"),
            ("True", "ScalingWorkers"),
            ("True", "WorkersUnschedulable"),
        ),
        (
            "scaled to zero",
            replace(HEALTHY, desired_workers=0, workers=deployment(0, 0)),
            ("True", "ScaledToZero"),
            ("False", "RolloutComplete"),
            ("False", "AsExpected"),
        ),
        (
            "stream unavailable",
            replace(HEALTHY, stream_error="ConnectionRefusedError"),
            ("True", "Available"),
            ("False", "RolloutComplete"),
            ("True", "StreamUnavailable"),
        ),
        (
            "NATS unreachable",
            replace(
                HEALTHY,
                stream_error="NATS at nats://x:4222 is unreachable: refused",
                nats_unreachable=True,
            ),
            ("True", "Available"),
            ("False", "RolloutComplete"),
            ("True", "NatsUnreachable"),
        ),
    ],
)
def test_conditions(
    case: str,
    observation: Observation,
    ready: tuple[str, str],
    progressing: tuple[str, str],
    degraded: tuple[str, str],
) -> None:
    status = compute_status(observation, None, NOW)
    assert conditions(status) == {
        "Ready": ready,
        "Progressing": progressing,
        "Degraded": degraded,
        "Authenticated": ("False", "AuthDisabled"),
    }, case


def test_authenticated_says_whether_the_service_needs_keys() -> None:
    def authenticated(observation: Observation) -> tuple[str, str, str]:
        condition = next(
            c
            for c in compute_status(observation, None, NOW).conditions
            if c.type == "Authenticated"
        )
        return condition.status.value, condition.reason, condition.message

    status, reason, message = authenticated(HEALTHY)
    assert (status, reason) == ("False", "AuthDisabled")
    assert "anyone who can reach" in message and "spec.auth.type is None" in message
    status, reason, message = authenticated(replace(HEALTHY, keys_secret="math-keys"))
    assert (status, reason) == ("True", "ApiKeys") and "Secret math-keys" in message


def test_gpu_shortage_message_names_the_pending_pods_and_the_scheduler_reason() -> None:
    observation = replace(
        HEALTHY, desired_workers=20, workers=deployment(20, 16), unschedulable_workers=GPU_PENDING
    )
    degraded = next(
        c for c in compute_status(observation, None, NOW).conditions if c.type == "Degraded"
    )
    assert degraded.message.startswith("2 of 20 worker pods are Pending: not enough nvidia.com/gpu")
    assert "Insufficient nvidia.com/gpu" in degraded.message


def test_status_fields() -> None:
    status = compute_status(HEALTHY, None, NOW)
    assert status.observed_generation == 7
    assert (status.replicas, status.ready_replicas, status.desired_replicas) == (2, 2, 2)
    assert status.ready == "2/2"
    assert (status.queue_depth, status.p95_latency_milliseconds) == (12, 1500)
    assert status.slo_attainment_percent == 98
    assert status.endpoint == "http://math.default.svc:8000/v1"
    assert all(c.observed_generation == 7 for c in status.conditions)


def test_transition_time_kept_while_the_status_holds() -> None:
    first = compute_status(HEALTHY, None, EARLIER)
    again = compute_status(replace(HEALTHY, queue_depth=99), first, NOW)
    assert [c.last_transition_time for c in again.conditions] == [EARLIER] * 4


def test_transition_time_moves_when_the_status_flips() -> None:
    first = compute_status(HEALTHY, None, EARLIER)
    broken = compute_status(replace(HEALTHY, scheduler=deployment(1, 0)), first, NOW)
    times = {c.type: c.last_transition_time for c in broken.conditions}
    assert times == {
        "Ready": NOW,
        "Progressing": NOW,
        "Degraded": EARLIER,
        "Authenticated": EARLIER,
    }


def test_status_patch_clears_what_became_unknown() -> None:
    status = compute_status(replace(HEALTHY, p95_latency_ms=None), None, NOW)
    patch = status_patch(status)
    assert patch["p95LatencyMilliseconds"] is None
    assert patch["conditions"][0]["status"] == ConditionStatus.TRUE.value
    assert ReasoningServiceStatus.model_validate(patch) == status


def pod(phase: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": phase, "conditions": list(conditions)}}


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": GPU_SHORTAGE,
}


@pytest.mark.parametrize(
    ("manifest", "lacks_gpus"),
    [
        (pod("Pending", UNSCHEDULABLE), True),
        (pod("Pending", {**UNSCHEDULABLE, "message": "0/3 nodes: node affinity"}), False),
        (pod("Pending", {"type": "PodScheduled", "status": "True"}), None),
        (pod("Running", {"type": "Ready", "status": "True"}), None),
    ],
)
def test_unschedulable_pods_are_recognised(
    manifest: dict[str, Any], lacks_gpus: bool | None
) -> None:
    pending = UnschedulablePod.from_pod(manifest)
    assert (pending.lacks_gpus if pending else None) == lacks_gpus


def test_deployment_state_from_the_api_object() -> None:
    state = DeploymentState.from_manifest(
        {
            "metadata": {"generation": 4},
            "spec": {"replicas": 3},
            "status": {
                "observedGeneration": 4,
                "replicas": 3,
                "readyReplicas": 3,
                "updatedReplicas": 3,
            },
        }
    )
    assert state.rolled_out
    assert not DeploymentState.from_manifest(None).exists


LOST = replace(HEALTHY, stream_error="NATS at nats://x is unreachable", nats_unreachable=True)
SHORT_OF_GPUS = replace(
    HEALTHY, desired_workers=4, workers=deployment(4, 2), unschedulable_workers=GPU_PENDING
)


@pytest.mark.parametrize(
    ("before", "after", "warning"),
    [
        (None, HEALTHY, None),
        (HEALTHY, HEALTHY, None),
        (None, LOST, "NatsUnreachable"),  # the first status already Degraded
        (HEALTHY, LOST, "NatsUnreachable"),  # became Degraded
        (LOST, LOST, None),  # still, for the same reason: no Event at every tick
        (LOST, SHORT_OF_GPUS, "InsufficientGPUCapacity"),  # Degraded for another reason
        (LOST, HEALTHY, None),  # recovered
    ],
)
def test_a_warning_on_each_transition_into_degraded(
    before: Observation | None, after: Observation, warning: str | None
) -> None:
    previous = compute_status(before, None, EARLIER) if before is not None else None
    current = compute_status(after, previous, NOW)
    found = degraded_warning(previous, current)
    assert (found[0] if found else None) == warning
    if found is not None:
        assert found[1] == next(c.message for c in current.conditions if c.type == "Degraded")


def test_a_refused_apply_says_what_the_api_server_said_and_how_many_more() -> None:
    refused = (
        "Deployment/math-workers: exceeded quota (403 Forbidden)",
        "Deployment/math-scheduler: exceeded quota (403 Forbidden)",
    )
    status = compute_status(replace(HEALTHY, apply_errors=refused), None, NOW)
    (degraded,) = [c for c in status.conditions if c.type == "Degraded"]
    assert degraded.message == (
        "the API server refused Deployment/math-workers: exceeded quota (403 Forbidden) "
        "(and 1 more)"
    )
