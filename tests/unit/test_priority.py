"""Priority classes: how a query gets its class, and what its class changes under load."""

from __future__ import annotations

import pytest

from ponder.api.priority import Priority, at_most, parse_priority
from ponder.api.subjects import ServiceSubjects
from ponder.scheduler.auth import Grant, KeyLimits, parse_keys, query_priority
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.planner import Plan, PlanError, plan_query
from tests.unit.test_planner import CONFIG, request

CRITICAL, STANDARD, SHEDDABLE = Priority.CRITICAL, Priority.STANDARD, Priority.SHEDDABLE


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Critical", CRITICAL),
        ("critical", CRITICAL),
        (" SHEDDABLE ", SHEDDABLE),
        ("standard", STANDARD),
        ("urgent", None),
        ("food-review-critical", None),  # an InferenceObjective's own name names no class
        ("", None),
        (None, None),
    ],
)
def test_class_names_are_read_in_any_case(text: str | None, parsed: Priority | None) -> None:
    assert parse_priority(text) is parsed


@pytest.mark.parametrize(
    ("asked", "ceiling", "granted"),
    [
        (CRITICAL, STANDARD, STANDARD),
        (CRITICAL, CRITICAL, CRITICAL),
        (SHEDDABLE, CRITICAL, SHEDDABLE),
        (STANDARD, SHEDDABLE, SHEDDABLE),
    ],
)
def test_at_most_never_raises_a_class(
    asked: Priority, ceiling: Priority, granted: Priority
) -> None:
    assert at_most(asked, ceiling) is granted


KEYS = """
keys:
  - key: sk-critical-0123456789
    tenant: ops
    priority: critical
  - key: sk-default-0123456789
    tenant: team-a
  - key: sk-batch-000123456789
    tenant: batch
    priority: Sheddable
"""


def test_a_key_carries_its_class_and_standard_by_default() -> None:
    table = parse_keys(KEYS)
    found = [table.find(key) for key in ("sk-critical-0123456789", "sk-default-0123456789")]
    found.append(table.find("sk-batch-000123456789"))
    assert [grant.priority if grant else None for grant in found] == [
        CRITICAL,
        STANDARD,
        SHEDDABLE,
    ]


def test_a_key_of_an_unknown_class_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"keys\.0\.priority: .*'urgent' is no priority class"):
        parse_keys(
            "keys:\n  - key: sk-critical-0123456789\n    tenant: ops\n    priority: urgent\n"
        )


def grant(priority: Priority) -> Grant:
    return Grant(key_id="k", tenant="t", services=None, limits=KeyLimits(), priority=priority)


@pytest.mark.parametrize(
    ("key", "header", "expected"),
    [
        # An open service: the header decides, Standard without one.
        (None, None, STANDARD),
        (None, "critical", CRITICAL),
        (None, "Sheddable", SHEDDABLE),
        (None, "food-review", STANDARD),
        # With keys: the key's class, which the header may lower but never raise.
        (CRITICAL, None, CRITICAL),
        (CRITICAL, "sheddable", SHEDDABLE),
        (STANDARD, "critical", STANDARD),
        (SHEDDABLE, "Critical", SHEDDABLE),
        (SHEDDABLE, "not-a-class", SHEDDABLE),
        (STANDARD, "SHEDDABLE", SHEDDABLE),
    ],
)
def test_the_objective_header_lowers_a_keys_class_but_never_raises_it(
    key: Priority | None, header: str | None, expected: Priority
) -> None:
    assert query_priority(grant(key) if key else None, header) is expected


# CONFIG: 2 workers x 8 slots, ~1 s per branch (100 tokens at 10 ms), deadline 5 s. Standard
# fits 4 rounds (0.8 of the deadline, 64 branches), Sheddable 2 (0.4 of it, 32 branches).
def busy(outstanding: int, *, cold: bool = False) -> LoadSnapshot:
    return LoadSnapshot(
        outstanding, workers=2, seconds_per_token=0.01, mean_completion_tokens=100, cold=cold
    )


def granted(priority: Priority, load: LoadSnapshot) -> int | str:
    """Branches granted to self-consistency@16, or the refusal's status and Retry-After."""
    result = plan_query(request(ponder={"branches": 16}, priority=priority), CONFIG, load)
    if isinstance(result, PlanError):
        return f"{result.status} retry {result.retry_after_seconds}"
    assert isinstance(result, Plan) and result.priority is priority
    return result.query.branches


@pytest.mark.parametrize(
    ("load", "critical", "standard", "sheddable"),
    [
        (busy(0), 16, 16, 16),
        (busy(20), 16, 16, 12),  # Sheddable shrinks first
        (busy(56), 16, 8, "503 retry 2"),  # then Standard shrinks; Sheddable is refused
        (busy(500), 16, 1, "503 retry 30"),
        (LoadSnapshot(500), 16, 16, 16),  # nothing observed: nothing to shrink for
        (busy(500, cold=True), 16, 16, 16),  # a cold pool: the query waits for a worker
    ],
)
def test_sheddable_shrinks_first_and_is_refused_first_critical_keeps_its_branches(
    load: LoadSnapshot, critical: int, standard: int, sheddable: int | str
) -> None:
    assert granted(CRITICAL, load) == critical
    assert granted(STANDARD, load) == standard
    assert granted(SHEDDABLE, load) == sheddable


def test_a_shed_query_is_told_why_and_when_to_come_back() -> None:
    result = plan_query(request(priority=SHEDDABLE), CONFIG, busy(56))
    assert isinstance(result, PlanError)
    assert (result.status, result.code, result.field) == (503, "overloaded", "")
    assert "overloaded for Sheddable queries" in result.message
    assert "retry after 2s" in result.message


def test_a_shrunk_sheddable_plan_says_its_share_of_the_deadline() -> None:
    plan = plan_query(request(ponder={"branches": 16}, priority=SHEDDABLE), CONFIG, busy(20))
    assert isinstance(plan, Plan) and plan.shrink_reason is not None
    assert "deadline_ms=5000 (Sheddable: 0.4 of it), granted 12" in plan.shrink_reason


@pytest.mark.parametrize(
    ("priority", "subject", "consumer"),
    [
        (CRITICAL, "ponder.ns.svc.jobs.critical", "workers-critical"),
        (STANDARD, "ponder.ns.svc.jobs", "workers"),
        (SHEDDABLE, "ponder.ns.svc.jobs.sheddable", "workers-sheddable"),
    ],
)
def test_each_class_has_its_subject_and_consumer_standard_keeps_the_old_ones(
    priority: Priority, subject: str, consumer: str
) -> None:
    subjects = ServiceSubjects("ns", "svc")
    assert (subjects.jobs_of(priority), subjects.consumer_of(priority)) == (subject, consumer)
    assert subjects.job_subjects[priority.rank] == subject
