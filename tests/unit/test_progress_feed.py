"""`ProgressFeed`: what a streaming client gets, in which order, from one query's launches,
texts, branches and answer; and `why_no_answer`, what a query without an answer says."""

from __future__ import annotations

import pytest

from ponder.api.wire import BranchResult, BranchStatus
from ponder.scheduler.outcome import NoAnswerReason, QueryOutcome, why_no_answer
from ponder.scheduler.planner import Plan
from ponder.scheduler.progress import (
    AnswerText,
    BranchFinished,
    Leader,
    ProgressEvent,
    WaveLaunched,
)
from ponder.scheduler.progress_feed import ProgressFeed
from ponder.scheduler.strategies.base import FinalAnswer, ScoredBranch
from tests.unit.recorded_branches import planned

PLAN = Plan(query=planned(), deadline_ms=5_000, branches_per_job=1, requested_branches=4)


def branch(
    index: int, status: BranchStatus = BranchStatus.COMPLETED, **fields: object
) -> ScoredBranch:
    result = BranchResult(
        query_id="q1",
        job_id=f"j{index}",
        branch_id=f"b{index}",
        status=status,
        **fields,
    )
    return ScoredBranch(request=None, result=result, answer="54")  # type: ignore[arg-type]


def feed() -> tuple[ProgressFeed, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    return ProgressFeed(events.append), events


def test_nothing_goes_out_before_the_first_launch_is_queued() -> None:
    progress, events = feed()
    progress.launching([("b0", "")])
    progress.text("b0", "23+")
    assert events == []
    progress.launched(WaveLaunched(1, 1, 1))
    assert events == [WaveLaunched(1, 1, 1), AnswerText("23+")]


def test_a_later_launch_goes_out_before_what_waited_for_its_acks() -> None:
    progress, events = feed()
    progress.launching([])
    progress.launched(WaveLaunched(1, 2, 2))
    progress.launching([])
    progress.reported([branch(0)], launched=4)
    assert [type(e) for e in events] == [WaveLaunched]
    progress.launched(WaveLaunched(2, 2, 4))
    assert events[1] == WaveLaunched(2, 2, 4)
    assert isinstance(events[2], BranchFinished) and events[2].finished == 1


def test_a_failed_launch_releases_what_an_earlier_launch_started() -> None:
    progress, events = feed()
    progress.launching([])
    progress.launched(WaveLaunched(1, 1, 1))
    progress.launching([])
    progress.reported([branch(0), branch(1)], launched=2)
    progress.launch_failed()
    assert [e.finished for e in events if isinstance(e, BranchFinished)] == [1, 2]


def test_the_leader_goes_out_only_when_it_changed_and_the_answer_at_once() -> None:
    progress, events = feed()
    progress.lead(FinalAnswer(text="#54", answer="54", confidence=0.5))  # nothing queued yet
    progress.launching([])
    progress.launched(WaveLaunched(1, 2, 2))
    first = FinalAnswer(text="#54", answer="54", confidence=0.5, votes={"54": 1.0})
    progress.lead(first)
    progress.lead(first)
    progress.lead(None)
    progress.launching([])  # a launch the deadline cut: the answer does not wait for it
    progress.answered("23+48=71 71-17=54 #54")
    assert events[1:] == [
        Leader("54", 0.5, {"54": 1.0}),
        AnswerText("23+48=71 71-17=54 #54"),
    ]


def test_a_query_nobody_streams_records_nothing() -> None:
    progress = ProgressFeed()
    assert not progress.live
    progress.launching([("b0", "")])
    progress.launched(WaveLaunched(1, 1, 1))
    progress.answered("#54")


def outcome(*branches: ScoredBranch, **fields: object) -> QueryOutcome:
    return QueryOutcome(plan=PLAN, answer=None, branches=list(branches), launched=4, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ended", "dispatch_error", "too_large", "reason", "detail"),
    [
        (
            outcome(branch(0, BranchStatus.FAILED, rejected=True, error="prompt too long")),
            None,
            False,
            NoAnswerReason.REJECTED,
            "prompt too long",
        ),
        (
            outcome(deadline_exceeded=True),
            "queue down",
            False,
            NoAnswerReason.DEADLINE,
            "no branch finished within ponder.deadline_ms=5000",
        ),
        (outcome(), "jobs of 9 MB", True, NoAnswerReason.TOO_LARGE, "jobs of 9 MB"),
        (outcome(), "the job queue refused", False, NoAnswerReason.UNAVAILABLE, "refused"),
        (
            outcome(branch(0, BranchStatus.FAILED, error="Traceback: KeyError")),
            None,
            False,
            NoAnswerReason.FAILED,
            "none of 4 branches produced an answer (1 failed)",
        ),
    ],
)
def test_a_query_without_an_answer_says_why(
    ended: QueryOutcome, dispatch_error: str | None, too_large: bool, reason: str, detail: str
) -> None:
    got_reason, got_detail = why_no_answer(ended, dispatch_error, too_large=too_large)
    assert got_reason == reason
    assert detail in got_detail
    assert "KeyError" not in got_detail  # the branches' own errors are for the log
