"""Scale-down spares work: which worker pods cost what to delete, and where the slot use comes
from (docs/architecture.md, "Scale-down spares work")."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import AsyncClient

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import WorkerStats
from ponder.operator.deletion_cost import (
    DELETION_COST_ANNOTATION,
    MAX_DELETION_COST,
    WorkerPod,
    cost_changes,
    deletion_costs,
    lowers_workers,
)
from ponder.operator.runtime import NatsPool, OperatorConfig, Runtime
from ponder.operator.signals import (
    WORKER_STATS_WILDCARD,
    StatsBoard,
    WorkerSlotsBoard,
    service_of_worker_stats_subject,
    stats_subscriber,
)
from ponder.workers.slot_report import worker_stats
from ponder.workers.slots import Slots
from tests.unit.test_reconcile_memory import UNUSED_API_SERVER


@pytest.mark.parametrize(
    ("pods", "slot_use", "costs"),
    [
        pytest.param([], {}, {}, id="no pods"),
        pytest.param(
            ["w-a", "w-b", "w-c"],
            {"w-a": 0, "w-b": 8, "w-c": 3},
            {"w-a": 0, "w-b": 8, "w-c": 3},
            id="busy pods cost their slots in use, the idle one 0",
        ),
        pytest.param(
            ["w-a", "w-b"], {"w-b": 4}, {"w-a": 0, "w-b": 4}, id="a pod that did not report: 0"
        ),
        pytest.param(
            ["w-a"], {"w-a": 2, "gone": 16}, {"w-a": 2}, id="a report without a pod is ignored"
        ),
        pytest.param(["w-a"], {"w-a": -1}, {"w-a": 0}, id="never below 0"),
        pytest.param(["w-a"], {"w-a": 10**12}, {"w-a": MAX_DELETION_COST}, id="within the int32"),
    ],
)
def test_deletion_costs_are_the_slots_each_worker_holds(
    pods: list[str], slot_use: dict[str, int], costs: dict[str, int]
) -> None:
    assert deletion_costs(pods, slot_use) == costs


@pytest.mark.parametrize(
    ("pods", "slot_use", "patches"),
    [
        pytest.param(
            [WorkerPod("w-a", None), WorkerPod("w-b", None)],
            {"w-a": 0, "w-b": 5},
            {"w-b": 5},
            id="an idle pod without the annotation costs 0 already",
        ),
        pytest.param(
            [WorkerPod("w-a", "5"), WorkerPod("w-b", "5")],
            {"w-a": 5, "w-b": 0},
            {"w-b": 0},
            id="only pods whose cost changed",
        ),
        pytest.param([WorkerPod("w-a", "3")], {}, {"w-a": 0}, id="a pod gone silent drops to 0"),
        pytest.param(
            [WorkerPod("w-a", "0", terminating=True), WorkerPod("w-b", "1")],
            {"w-a": 8, "w-b": 1},
            {},
            id="a terminating pod is left alone",
        ),
        pytest.param(
            [WorkerPod("w-a", "not-a-number")], {"w-a": 0}, {"w-a": 0}, id="a foreign value"
        ),
    ],
)
def test_only_changed_costs_are_patched(
    pods: list[WorkerPod], slot_use: dict[str, int], patches: dict[str, int]
) -> None:
    assert cost_changes(pods, slot_use) == patches


@pytest.mark.parametrize(
    ("current", "desired", "lowers"),
    [(None, 0, False), (3, 2, True), (3, 0, True), (2, 2, False), (1, 3, False), (0, 0, False)],
)
def test_costs_are_set_only_before_the_replicas_drop(
    current: int | None, desired: int, lowers: bool
) -> None:
    assert lowers_workers(current, desired) is lowers


@pytest.mark.parametrize(
    ("pod", "worker_pod"),
    [
        ({"metadata": {"name": "w-a"}}, WorkerPod("w-a", None)),
        (
            {"metadata": {"name": "w-a", "annotations": {DELETION_COST_ANNOTATION: "4"}}},
            WorkerPod("w-a", "4"),
        ),
        (
            {"metadata": {"name": "w-a", "deletionTimestamp": "2026-01-01T00:00:00Z"}},
            WorkerPod("w-a", None, terminating=True),
        ),
    ],
)
def test_worker_pods_read_from_the_api_server(pod: dict[str, Any], worker_pod: WorkerPod) -> None:
    assert WorkerPod.from_pod(pod) == worker_pod


@pytest.mark.parametrize(
    ("subject", "service"),
    [
        (ServiceSubjects("team-a", "math").worker_stats, ("team-a", "math")),
        ("ponder.team-a.math.stats", None),
        ("ponder.team-a.worker-stats", None),
        ("other.team-a.math.worker-stats", None),
    ],
)
def test_worker_stats_subjects_name_their_service(
    subject: str, service: tuple[str, str] | None
) -> None:
    assert service_of_worker_stats_subject(subject) == service
    assert WORKER_STATS_WILDCARD.count("*") == 2


def report(worker_id: str, in_use: int) -> WorkerStats:
    return WorkerStats(worker_id=worker_id, at=0.0, slots=8, slots_in_use=in_use, jobs_running=1)


def test_the_board_keeps_each_workers_latest_report_and_forgets_silent_ones() -> None:
    clock = [0.0]
    board = WorkerSlotsBoard(stale_after_seconds=10, clock=lambda: clock[0])
    board.record(("ns", "svc"), report("w-a", 8))
    board.record(("ns", "svc"), report("w-b", 2))
    board.record(("ns", "other"), report("w-a", 1))
    clock[0] = 6.0
    board.record(("ns", "svc"), report("w-b", 0))
    assert board.slot_use(("ns", "svc")) == {"w-a": 8, "w-b": 0}
    clock[0] = 12.0  # w-a last reported 12 s ago, w-b 6 s ago
    assert board.slot_use(("ns", "svc")) == {"w-b": 0}
    board.forget(("ns", "svc"))
    assert board.slot_use(("ns", "svc")) == {}
    assert board.slot_use(("ns", "missing")) == {}


@pytest.mark.parametrize(("acquired", "draining"), [(0, False), (3, False), (7, True)])
def test_a_worker_reports_its_slots_in_use(acquired: int, draining: bool) -> None:
    slots = Slots(capacity=8, expected_branches_per_job=1)
    slots.acquire(acquired)
    stats = worker_stats("w-a", slots, jobs_running=acquired, draining=draining, now=12.5)
    assert stats == WorkerStats(
        worker_id="w-a",
        at=12.5,
        slots=8,
        slots_in_use=acquired,
        jobs_running=acquired,
        draining=draining,
    )
    assert WorkerStats.model_validate_json(stats.model_dump_json()) == stats


async def test_a_deleted_services_worker_reports_go_with_its_memory() -> None:
    board, workers = StatsBoard(), WorkerSlotsBoard()
    kube = AsyncClient(config=UNUSED_API_SERVER)
    try:
        runtime = Runtime(
            config=OperatorConfig(),
            kube=kube,
            nats=NatsPool(on_connect=stats_subscriber(board, workers)),
            stats=board,
            worker_slots=workers,
        )
        workers.record(("ns", "svc"), report("w-a", 3))
        workers.record(("ns", "other"), report("w-a", 1))
        runtime.forget(("ns", "svc"))
        assert workers.slot_use(("ns", "svc")) == {}
        assert workers.slot_use(("ns", "other")) == {"w-a": 1}
    finally:
        await kube.close()
