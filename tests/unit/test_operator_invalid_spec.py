"""A spec the operator's model refuses (pure): read as a RefusedService, reported in status with
the fields to fix, its children's state kept in Ready, and a normal status again once fixed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from ponder.api.crd import ReasoningService, ReasoningServiceSpec, ReasoningServiceStatus
from ponder.operator.decide import (
    RefusedService,
    read_service,
    refused_by_config,
    refused_status,
    status_change,
)
from ponder.operator.service_config import service_config_from_spec
from ponder.operator.status import (
    DeploymentState,
    Observation,
    compute_status,
    invalid_spec_status,
    spec_problems,
)

EARLIER = "2030-01-01T00:00:00Z"
NOW = "2030-01-01T00:05:00Z"
LATER = datetime(2030, 1, 1, 0, 10, tzinfo=UTC)
BAD_PATTERN = "Result: ([0-9]+"
BAD_PATTERN_PROBLEM = (
    f"spec.strategy.answerPattern: answer pattern {BAD_PATTERN!r} is not a valid regular "
    "expression: missing ), unterminated subpattern at position 8"
)
MODEL = {"name": "Qwen/Qwen2.5-1.5B-Instruct"}


def body_of(spec: dict[str, Any], *, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "ponder.dev/v1alpha1",
        "kind": "ReasoningService",
        "metadata": {
            "name": "math",
            "namespace": "team-a",
            "uid": "1234",
            "generation": 4,
        },
        "spec": {"model": MODEL, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def problems_of(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        ReasoningServiceSpec.model_validate(spec)
    return spec_problems(refused.value)


# --- the message ---------------------------------------------------------------------------------

PROBLEMS: list[tuple[str, dict[str, Any], str]] = [
    (
        "a regex that does not compile",
        {"model": MODEL, "strategy": {"extractor": "Regex", "answerPattern": BAD_PATTERN}},
        BAD_PATTERN_PROBLEM,
    ),
    (
        "a field the operator does not know",
        {"model": MODEL, "workers": {"slotPerWorker": 8}},
        "spec.workers.slotPerWorker: Extra inputs are not permitted",
    ),
    (
        "a bound",
        {"model": MODEL, "strategy": {"branches": 0}},
        "spec.strategy.branches: Input should be greater than or equal to 1",
    ),
    (
        "an item of a list",
        {"model": MODEL, "workers": {"tolerations": [{"key": "gpu"}, {"keys": ["gpu"]}]}},
        "spec.workers.tolerations[1].keys: Extra inputs are not permitted",
    ),
    ("a missing section", {}, "spec.model: Field required"),
    (
        "two problems",
        {"model": MODEL, "strategy": {"branches": 0, "answerPattern": BAD_PATTERN}},
        "spec.strategy.branches: Input should be greater than or equal to 1; "
        + BAD_PATTERN_PROBLEM,
    ),
    (
        "more problems than are listed",
        {"model": MODEL, "bogus": 1, "strategy": {f"unknown{index}": 1 for index in range(6)}},
        "spec.strategy.unknown0: Extra inputs are not permitted; "
        "spec.strategy.unknown1: Extra inputs are not permitted; "
        "spec.strategy.unknown2: Extra inputs are not permitted; "
        "spec.strategy.unknown3: Extra inputs are not permitted; "
        "spec.strategy.unknown4: Extra inputs are not permitted; and 2 more",
    ),
]


@pytest.mark.parametrize(("case", "spec", "expected"), PROBLEMS, ids=[c for c, _, _ in PROBLEMS])
def test_problems_name_the_fields_as_the_user_wrote_them(
    case: str, spec: dict[str, Any], expected: str
) -> None:
    assert problems_of(spec) == expected, case


def test_a_config_the_data_plane_refuses_is_a_refused_spec_too() -> None:
    # The CEL rule keeps this out at admission; a CRD older than the operator would not.
    service = read_service(body_of({"strategy": {"extractor": "Regex"}}))
    assert isinstance(service, ReasoningService)
    with pytest.raises(ValidationError) as refused:
        service_config_from_spec("team-a", "math", service.spec, "nats://nats:4222")
    result = refused_by_config(service, refused.value)
    assert result.problems == (
        "its ServiceConfig is invalid: "
        "extractor regex needs an answer_pattern, and only it takes one"
    )
    assert result.metadata == service.metadata


# --- reading the object --------------------------------------------------------------------------


def test_a_valid_body_reads_as_the_service() -> None:
    body = body_of({"strategy": {"extractor": "Regex", "answerPattern": "Result: ([0-9]+)"}})
    assert read_service(body) == ReasoningService.model_validate(body)


def test_a_refused_body_keeps_what_status_and_the_finalizer_need() -> None:
    status = {"observedGeneration": 3, "endpoint": "http://math.team-a.svc:8000/v1"}
    spec = {
        "strategy": {"extractor": "Regex", "answerPattern": BAD_PATTERN},
        "nats": {"url": "nats://team-nats:4222"},
    }
    service = read_service(body_of(spec, status=status))
    assert isinstance(service, RefusedService)
    assert (service.metadata.namespace, service.metadata.name) == ("team-a", "math")
    assert service.metadata.generation == 4
    assert service.status == ReasoningServiceStatus.model_validate(status)
    assert service.nats.url == "nats://team-nats:4222"
    assert service.problems == BAD_PATTERN_PROBLEM


@pytest.mark.parametrize(
    ("case", "status"),
    [("none", None), ("empty", {}), ("not a status", {"conditions": [{"type": "Ready"}]})],
)
def test_a_status_that_does_not_read_counts_as_none(
    case: str, status: dict[str, Any] | None
) -> None:
    for spec in ({}, {"strategy": {"branches": 0}}):
        service = read_service(body_of(spec, status=status))
        assert service.status is None, (case, spec)


# --- the status ----------------------------------------------------------------------------------


def deployment(replicas: int, ready: int) -> DeploymentState:
    return DeploymentState(
        exists=True,
        spec_replicas=replicas,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=replicas,
        generation=2,
        observed_generation=2,
    )


ABSENT = DeploymentState()
HEALTHY = Observation(
    generation=3,
    desired_workers=2,
    scheduler_replicas=1,
    workers=deployment(2, 2),
    scheduler=deployment(1, 1),
    queue_depth=5,
    selector="app.kubernetes.io/instance=math",
    endpoint="http://math.team-a.svc:8000/v1",
    served_model="qwen",
    last_scale_time=EARLIER,
)
SERVING = compute_status(HEALTHY, None, EARLIER)


def conditions(status: ReasoningServiceStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


STATUSES = [
    (
        "invalid from the start: nothing runs",
        None,
        ABSENT,
        ABSENT,
        ("False", "InvalidSpec"),
        "0/0",
    ),
    (
        "a running service given an invalid spec still serves",
        SERVING,
        deployment(2, 2),
        deployment(1, 1),
        ("True", "Available"),
        "2/2",
    ),
    (
        "its workers went away meanwhile",
        SERVING,
        deployment(2, 0),
        deployment(1, 1),
        ("False", "WorkersUnavailable"),
        "0/2",
    ),
    (
        "only one child left",
        SERVING,
        ABSENT,
        deployment(1, 1),
        ("False", "InvalidSpec"),
        "0/0",
    ),
]


@pytest.mark.parametrize(
    ("case", "previous", "workers", "scheduler", "ready", "ready_text"),
    STATUSES,
    ids=[case[0] for case in STATUSES],
)
def test_a_refused_spec_is_degraded_and_ready_follows_the_children(
    case: str,
    previous: ReasoningServiceStatus | None,
    workers: DeploymentState,
    scheduler: DeploymentState,
    ready: tuple[str, str],
    ready_text: str,
) -> None:
    status = invalid_spec_status(previous, 4, BAD_PATTERN_PROBLEM, workers, scheduler, NOW)
    assert conditions(status) == {
        "Ready": ready,
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }, case
    assert [c.type for c in status.conditions] == ["Ready", "Progressing", "Degraded"]
    assert status.observed_generation == 4
    assert all(c.observed_generation == 4 for c in status.conditions)
    assert status.ready == ready_text
    degraded = status.conditions[2]
    assert degraded.message == (
        "the operator refuses the spec and applies nothing until it changes: " + BAD_PATTERN_PROBLEM
    )


def test_a_refused_spec_keeps_what_the_last_valid_pass_reported() -> None:
    status = invalid_spec_status(
        SERVING, 4, BAD_PATTERN_PROBLEM, deployment(2, 2), deployment(1, 1), NOW
    )
    kept = ("endpoint", "served_model", "selector", "last_scale_time", "queue_depth")
    assert {field: getattr(status, field) for field in kept} == {
        field: getattr(SERVING, field) for field in kept
    }
    # Only Degraded flipped; Progressing was False already (rollout complete).
    times = {c.type: c.last_transition_time for c in status.conditions}
    assert times == {"Ready": EARLIER, "Progressing": EARLIER, "Degraded": NOW}


def test_the_refused_status_is_written_once_per_spec() -> None:
    body = body_of({"strategy": {"extractor": "Regex", "answerPattern": BAD_PATTERN}})
    refused = read_service(body)
    assert isinstance(refused, RefusedService)
    first = refused_status(refused, None, None, LATER)
    assert status_change(None, first) is not None
    # The timer's next pass reads the object with that status, and has nothing to write.
    body["status"] = first.model_dump(mode="json")
    again = read_service(copy.deepcopy(body))
    assert isinstance(again, RefusedService)
    assert status_change(again.status, refused_status(again, None, None, LATER)) is None


def test_a_fixed_spec_reports_normally_again() -> None:
    refused = invalid_spec_status(
        SERVING, 4, BAD_PATTERN_PROBLEM, deployment(2, 2), deployment(1, 1), NOW
    )
    fixed_at = "2030-01-01T00:10:00Z"
    fixed = compute_status(
        Observation(
            generation=5,
            desired_workers=2,
            scheduler_replicas=1,
            workers=deployment(2, 2),
            scheduler=deployment(1, 1),
        ),
        refused,
        fixed_at,
    )
    assert conditions(fixed) == {
        "Ready": ("True", "Available"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
        "Authenticated": ("False", "AuthDisabled"),
    }
    times = {c.type: c.last_transition_time for c in fixed.conditions}
    assert times == {
        "Ready": EARLIER,
        "Progressing": EARLIER,
        "Degraded": fixed_at,
        "Authenticated": fixed_at,
    }
