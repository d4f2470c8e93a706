"""The worker's pure decisions: fetch batches, cancels, job outcomes, settings, advisories."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ponder.api.service_config import ServiceConfig
from ponder.api.wire import BranchJob, BranchStatus, CancelMessage, SamplingParams
from ponder.workers.advisories import MaxDeliveries, parse_advisory
from ponder.workers.cancellation import CancelRegistry, cancel_matches
from ponder.workers.config import DEFAULT_DRAIN_SECONDS, settings_from
from ponder.workers.deadletters import MAX_PAYLOAD_CHARS, dead_letter
from ponder.workers.engine_errors import EngineRejected, EngineUnavailable, engine_error_message
from ponder.workers.metrics import JobOutcome
from ponder.workers.outcomes import (
    DISPOSITIONS,
    AbortReason,
    Settle,
    outcome_of,
    rejection_of,
)
from ponder.workers.slots import Slots, fetch_batch


@pytest.mark.parametrize(
    ("capacity", "in_use", "per_job", "batch"),
    [
        (32, 0, 4, 8),  # idle: as many expected jobs as fit
        (32, 28, 4, 1),
        (32, 29, 4, 0),  # not room for a whole expected job: wait
        (32, 32, 4, 0),
        (32, 34, 4, 0),  # overshoot by a wider job: wait until it is done
        (2, 0, 4, 1),  # a job wider than the worker still runs when it is idle
        (1, 0, 1, 1),
        (8, 3, 1, 5),
    ],
)
def test_fetch_batch_never_asks_for_more_jobs_than_free_slots_hold(
    capacity: int, in_use: int, per_job: int, batch: int
) -> None:
    assert fetch_batch(capacity, in_use, per_job) == batch


async def test_slots_wake_the_fetcher_when_a_job_ends() -> None:
    slots = Slots(capacity=4, expected_branches_per_job=4)
    stop = asyncio.Event()
    slots.acquire(4)
    waiter = asyncio.create_task(slots.wait_for_batch(stop))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    slots.release(4)
    assert await asyncio.wait_for(waiter, 10) == 1


async def test_slots_stop_waiting_on_stop() -> None:
    slots = Slots(capacity=1, expected_branches_per_job=1)
    slots.acquire(1)
    stop = asyncio.Event()
    waiter = asyncio.create_task(slots.wait_for_batch(stop))
    await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(waiter, 10) == 0


def job(query_id: str = "q1", branch_ids: tuple[str, ...] = ("b0", "b1")) -> BranchJob:
    return BranchJob(
        query_id=query_id,
        job_id=f"{query_id}.j",
        branch_ids=list(branch_ids),
        reply_subject="r",
        model="m",
        prompt="p",
        sampling=SamplingParams(max_tokens=1),
        deadline_at=0.0,
    )


@pytest.mark.parametrize(
    ("cancel", "matches"),
    [
        (CancelMessage(query_id="q1"), True),
        (CancelMessage(query_id="q2"), False),
        (CancelMessage(query_id="q1", branch_ids=["b1"]), True),  # per job: any branch stops it
        (CancelMessage(query_id="q1", branch_ids=["b7"]), False),
        (CancelMessage(query_id="q2", branch_ids=["b0"]), False),
    ],
)
def test_cancel_stops_jobs_of_its_query_and_branches(cancel: CancelMessage, matches: bool) -> None:
    assert cancel_matches(cancel, job()) is matches


def test_cancel_registry_remembers_cancels_for_a_while() -> None:
    registry = CancelRegistry(remember_seconds=10)
    registry.record(CancelMessage(query_id="q1", branch_ids=["b9"]), now=100)
    registry.record(CancelMessage(query_id="q2"), now=100)
    assert not registry.is_cancelled(job("q1"), now=101)
    assert registry.is_cancelled(job("q1", ("b9",)), now=101)
    assert registry.is_cancelled(job("q2"), now=109)
    assert not registry.is_cancelled(job("q2"), now=111)
    assert not registry.is_cancelled(job("q3"), now=101)


def test_whole_query_cancel_covers_earlier_branch_cancels() -> None:
    registry = CancelRegistry(remember_seconds=10)
    registry.record(CancelMessage(query_id="q1", branch_ids=["b9"]), now=0)
    registry.record(CancelMessage(query_id="q1"), now=1)
    registry.record(CancelMessage(query_id="q1", branch_ids=["b8"]), now=2)
    assert registry.is_cancelled(job("q1"), now=3)


def test_cancel_registry_is_bounded_and_forgets_expired_queries() -> None:
    registry = CancelRegistry(remember_seconds=10, max_queries=3)
    for index in range(5):
        registry.record(CancelMessage(query_id=f"q{index}"), now=index)
    assert len(registry) == 3
    assert not registry.is_cancelled(job("q0"), now=5)
    assert registry.is_cancelled(job("q4"), now=5)
    registry.record(CancelMessage(query_id="late"), now=100)
    assert len(registry) == 1


TOO_LONG = "This model's maximum context length is 1024 tokens. However, you requested 2100"


@pytest.mark.parametrize(
    ("outcome", "error", "rejection"),
    [
        (
            JobOutcome.FAILED,
            EngineRejected("vLLM answered 400", status=400, reason=TOO_LONG),
            TOO_LONG,
        ),
        (
            JobOutcome.FAILED,
            EngineRejected("stream 400: too long", status=400),
            "stream 400: too long",
        ),
        # the served model name is wrong: the service's fault, not the request's
        (
            JobOutcome.FAILED,
            EngineRejected("vLLM answered 404", status=404, reason="no model"),
            None,
        ),
        (JobOutcome.FAILED, EngineRejected("no status"), None),
        (JobOutcome.FAILED, ValueError("bug"), None),
        (JobOutcome.EXPIRED, EngineRejected("400", status=400), None),  # the deadline came first
        (JobOutcome.RETRIED, EngineUnavailable("down"), None),
        (JobOutcome.COMPLETED, None, None),
    ],
)
def test_only_an_engines_400_marks_a_failed_job_rejected(
    outcome: JobOutcome, error: BaseException | None, rejection: str | None
) -> None:
    assert rejection_of(outcome, error) == rejection


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '{"error": {"message": "' + TOO_LONG + '", "type": "BadRequestError", "code": 400}}',
            TOO_LONG,
        ),
        ('{"object": "error", "message": "too long", "code": 400}', "too long"),
        ('{"detail": "Not Found"}', '{"detail": "Not Found"}'),
        ("Internal Server Error\n", "Internal Server Error"),
        ('{"error": "flat"}', '{"error": "flat"}'),
    ],
)
def test_engine_error_message_is_vllms_own_words(body: str, message: str) -> None:
    assert engine_error_message(body) == message


@pytest.mark.parametrize(
    ("finished", "abort_reason", "past_deadline", "error", "outcome"),
    [
        (True, None, False, None, JobOutcome.COMPLETED),
        (True, AbortReason.CANCELLED, False, None, JobOutcome.COMPLETED),  # done before cancel
        (False, AbortReason.CANCELLED, False, None, JobOutcome.CANCELLED),
        (False, AbortReason.DRAINING, False, None, JobOutcome.HANDED_BACK),
        (False, AbortReason.DRAINING, True, None, JobOutcome.HANDED_BACK),
        (False, AbortReason.ORPHANED, False, None, JobOutcome.ORPHANED),
        (False, AbortReason.ORPHANED, True, None, JobOutcome.ORPHANED),  # nobody to tell
        (True, AbortReason.ORPHANED, False, None, JobOutcome.COMPLETED),
        (False, None, True, None, JobOutcome.EXPIRED),
        (False, None, False, EngineUnavailable("down"), JobOutcome.RETRIED),
        (False, None, True, EngineUnavailable("down"), JobOutcome.EXPIRED),
        (False, None, False, EngineRejected("400"), JobOutcome.FAILED),
        (False, None, False, ValueError("bug"), JobOutcome.FAILED),
    ],
)
def test_job_outcome(
    finished: bool,
    abort_reason: AbortReason | None,
    past_deadline: bool,
    error: BaseException | None,
    outcome: JobOutcome,
) -> None:
    assert (
        outcome_of(
            finished=finished, abort_reason=abort_reason, past_deadline=past_deadline, error=error
        )
        is outcome
    )


@pytest.mark.parametrize(
    ("outcome", "status", "settle"),
    [
        (JobOutcome.COMPLETED, BranchStatus.COMPLETED, Settle.ACK),
        (JobOutcome.CANCELLED, BranchStatus.CANCELLED, Settle.ACK),
        (JobOutcome.EXPIRED, BranchStatus.EXPIRED, Settle.ACK),
        (JobOutcome.FAILED, BranchStatus.FAILED, Settle.ACK),
        (JobOutcome.RETRIED, None, Settle.NAK_LATER),
        (JobOutcome.HANDED_BACK, None, Settle.NAK_NOW),
        (JobOutcome.ORPHANED, None, Settle.ACK),  # no results: nobody reads them
    ],
)
def test_results_are_published_before_acking_and_never_for_handed_back_jobs(
    outcome: JobOutcome, status: BranchStatus | None, settle: Settle
) -> None:
    assert DISPOSITIONS[outcome].status is status
    assert DISPOSITIONS[outcome].settle is settle


SERVICE = ServiceConfig(name="svc", model="m", nats_url="nats://config:4222", slots_per_worker=16)
NO_OPTIONS: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("options", "environ", "expected"),
    [
        (
            NO_OPTIONS,
            {},
            {
                "nats_url": "nats://config:4222",
                "slots": 16,
                "drain_seconds": DEFAULT_DRAIN_SECONDS,
                "ensure_stream": False,
            },
        ),
        (
            NO_OPTIONS,
            {"PONDER_NATS_URL": "nats://env:1", "PONDER_SLOTS": "4", "PONDER_ENSURE_STREAM": "1"},
            {"nats_url": "nats://env:1", "slots": 4, "ensure_stream": True},
        ),
        (
            {"nats_url": "nats://cli:2", "slots": 2, "drain_seconds": 3.5, "ensure_stream": True},
            {"PONDER_NATS_URL": "nats://env:1", "PONDER_SLOTS": "4"},
            {"nats_url": "nats://cli:2", "slots": 2, "drain_seconds": 3.5, "ensure_stream": True},
        ),
        (
            {"worker_id": "w-9", "vllm_url": "http://v:8000", "port": 9100},
            {},
            {"worker_id": "w-9", "vllm_url": "http://v:8000", "http_port": 9100},
        ),
    ],
)
def test_settings_prefer_command_line_then_environment_then_config(
    options: dict[str, Any], environ: dict[str, str], expected: dict[str, Any]
) -> None:
    settings = settings_from(SERVICE, options, environ)
    assert {key: getattr(settings, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [({"slots": 0}, "slots=0"), ({"drain_seconds": -1}, "drain_seconds=-1")],
)
def test_bad_settings_say_what_to_change(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from(SERVICE, options, {})


def test_heartbeat_is_well_inside_the_ack_wait() -> None:
    service = ServiceConfig(name="svc", model="m", job_ack_wait_seconds=30)
    assert settings_from(service, {}, {}).heartbeat_seconds == 10


ADVISORY = {
    "type": "io.nats.jetstream.advisory.v1.max_deliver",
    "stream": "PONDER_DEFAULT_SVC",
    "consumer": "workers",
    "stream_seq": 7,
    "deliveries": 3,
}


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        (json.dumps(ADVISORY).encode(), MaxDeliveries("PONDER_DEFAULT_SVC", "workers", 7, 3)),
        (json.dumps({**ADVISORY, "type": "io.nats.jetstream.advisory.v1.nak"}).encode(), None),
        (json.dumps({**ADVISORY, "stream_seq": "7"}).encode(), None),
        (b"garbage", None),
    ],
)
def test_max_deliveries_advisory(data: bytes, parsed: MaxDeliveries | None) -> None:
    assert parse_advisory(data) == parsed


def test_dead_letters_keep_binary_and_cut_huge_payloads() -> None:
    assert dead_letter("r", "s", b"\xffok", "w").payload == "\ufffdok"
    letter = dead_letter("r", "s", b"x" * (MAX_PAYLOAD_CHARS + 10), "w")
    assert letter.payload.endswith("[10 chars cut]")
