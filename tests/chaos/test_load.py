"""The chaos load's judgement of each query, table-tested: a detector that cannot fire would let
every scenario pass whatever happened."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.load import (
    DISCONNECTED,
    Outcome,
    QueryRecord,
    assert_every_query_answered,
    classify,
    duplication_problems,
    recovery_seconds,
    tally,
)

pytestmark = pytest.mark.chaos


def answer(**changes: Any) -> dict[str, Any]:
    """A 200 body of self-consistency@4 that counts each branch once, with `changes`."""
    ponder = {
        "query_id": "q1",
        "branches_launched": 4,
        "branches_completed": 3,
        "branches_cancelled": 1,
        "branches_failed": 0,
        "votes": {"54": 2.0, "55": 1.0},
        "branches": [{"id": f"q1-{i}"} for i in range(4)],
    }
    return {"choices": [{"text": "#54"}], "ponder": {**ponder, **changes}}


def error(code: str) -> dict[str, Any]:
    return {"error": {"message": "query q1: ...", "type": "server_error", "code": code}}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (answer(), None),
        (answer(branches=[{"id": "q1-0"}, {"id": "q1-0"}]), "branches reported twice"),
        (answer(branches=[{"id": "q2-0"}]), "branches of another query"),
        (answer(branches=[{"id": f"q1-{i}"} for i in range(5)]), "5 branches listed"),
        (answer(branches_completed=4), "5 branches settled, 4 launched"),
        (answer(votes={"54": 3.0, "55": 1.0}), "4 votes from 3 completed"),
        ({"choices": []}, "no ponder object"),
    ],
)
def test_duplication_problems_name_each_way_a_branch_counts_twice(
    body: dict[str, Any], problem: str | None
) -> None:
    problems = duplication_problems(body)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in each for each in problems), problems


@pytest.mark.parametrize(
    ("status", "body", "transport", "timed_out", "outcome", "code"),
    [
        (200, answer(), None, False, Outcome.ANSWERED, ""),
        (200, answer(branches_failed=1), None, False, Outcome.DUPLICATED, ""),
        (503, error("queue_unavailable"), None, False, Outcome.FAILED, "queue_unavailable"),
        (504, error("deadline_exceeded"), None, False, Outcome.FAILED, "deadline_exceeded"),
        # A documented code under another status, an undocumented one, and no OpenAI shape.
        (502, error("deadline_exceeded"), None, False, Outcome.UNCLEAR, "deadline_exceeded"),
        (502, error("no_answer"), None, False, Outcome.UNCLEAR, "no_answer"),
        (500, "Internal Server Error", None, False, Outcome.UNCLEAR, ""),
        (None, None, DISCONNECTED, False, Outcome.FAILED, DISCONNECTED),
        (None, None, None, True, Outcome.LOST, ""),
    ],
)
def test_classify_tells_answers_clear_errors_and_losses_apart(
    status: int | None,
    body: Any,
    transport: str | None,
    timed_out: bool,
    outcome: Outcome,
    code: str,
) -> None:
    assert classify(status, body, transport, timed_out)[:2] == (outcome, code)


def record(
    sent_at: float, ended_at: float, outcome: Outcome, query_id: str = "", code: str = ""
) -> QueryRecord:
    return QueryRecord(0, sent_at, ended_at, outcome, code=code, query_id=query_id)


def test_tally_counts_a_query_answered_twice_as_duplicated() -> None:
    counts = tally(
        [
            record(0, 1, Outcome.ANSWERED, "q1"),
            record(0, 2, Outcome.ANSWERED, "q1"),
            record(0, 1, Outcome.ANSWERED, "q2"),
            record(0, 1, Outcome.FAILED, code="queue_unavailable"),
            record(0, 1, Outcome.LOST),
        ]
    )
    assert (counts.answered, counts.duplicated, counts.failed, counts.lost) == (2, 1, 1, 1)
    assert counts.failed_codes == {"queue_unavailable": 1}


@pytest.mark.parametrize(
    ("records", "seconds"),
    [
        # The query in flight at the fault (t=10) ended at 21; a later one answered at 13.
        ([record(9, 21, Outcome.ANSWERED), record(12, 13, Outcome.ANSWERED)], 11.0),
        # Nothing was in flight; the first later answer came at 15 (an earlier failure aside).
        ([record(11, 11.5, Outcome.FAILED), record(12, 15, Outcome.ANSWERED)], 5.0),
        # No query sent after the fault was answered: never recovered.
        ([record(9, 12, Outcome.ANSWERED), record(11, 12, Outcome.FAILED)], None),
    ],
)
def test_recovery_waits_for_the_queries_in_flight_and_a_later_answer(
    records: list[QueryRecord], seconds: float | None
) -> None:
    assert recovery_seconds(records, fault_at=10.0) == seconds


@pytest.mark.parametrize(
    ("records", "passes"),
    [
        ([record(0, 1, Outcome.ANSWERED, "q1"), record(0, 1, Outcome.ANSWERED, "q2")], True),
        ([record(0, 1, Outcome.ANSWERED, "q1"), record(0, 1, Outcome.ANSWERED, "q1")], False),
        ([record(0, 1, Outcome.ANSWERED, "q1"), record(0, 1, Outcome.FAILED, "")], False),
        ([record(0, 1, Outcome.ANSWERED, "q1"), record(0, 1, Outcome.LOST)], False),
        ([record(0, 1, Outcome.ANSWERED, "q1")], False),  # one of the two never ended
    ],
)
def test_every_query_answered_accepts_only_each_query_answered_once(
    records: list[QueryRecord], passes: bool
) -> None:
    if passes:
        assert_every_query_answered(records, 2)
    else:
        with pytest.raises(AssertionError):
            assert_every_query_answered(records, 2)
