"""The service's JetStream settings are the deliberate ones (ponder.api.jetstream)."""

from __future__ import annotations

import pytest
from nats.js.api import AckPolicy, DiscardPolicy, RetentionPolicy, StorageType

from ponder.api.jetstream import consumer_config, stream_config
from ponder.api.priority import Priority
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects

SUBJECTS = ServiceSubjects("team-a", "math-solver")


def service(**overrides: object) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {"namespace": "team-a", "name": "math-solver", "model": "m", **overrides}
    )


def test_stream_is_a_file_backed_work_queue_of_jobs_and_dead_letters() -> None:
    config = stream_config(SUBJECTS)
    assert config.name == "PONDER_TEAM-A_MATH-SOLVER"
    assert config.retention is RetentionPolicy.WORK_QUEUE
    assert config.storage is StorageType.FILE
    assert config.subjects == [
        "ponder.team-a.math-solver.jobs.critical",
        "ponder.team-a.math-solver.jobs",
        "ponder.team-a.math-solver.jobs.sheddable",
        "ponder.team-a.math-solver.deadletter",
    ]


def test_stream_drops_republished_jobs_within_the_duplicate_window() -> None:
    config = stream_config(SUBJECTS)
    assert 60 <= config.duplicate_window <= 600
    assert config.max_age is not None and config.max_age >= config.duplicate_window


def test_full_stream_refuses_new_jobs_instead_of_dropping_queued_ones() -> None:
    config = stream_config(SUBJECTS, max_bytes=1 << 20)
    assert config.discard is DiscardPolicy.NEW
    assert config.max_bytes == 1 << 20


def test_duplicate_window_longer_than_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_window_seconds=600"):
        stream_config(SUBJECTS, duplicate_window_seconds=600, max_age_seconds=60)


def test_stream_config_serialises_durations_in_nanoseconds() -> None:
    wire = stream_config(SUBJECTS, duplicate_window_seconds=120).as_dict()
    assert wire["duplicate_window"] == 120_000_000_000
    assert wire["retention"] == "workqueue"


def test_consumer_is_the_durable_explicit_ack_pull_consumer_of_the_jobs_subject() -> None:
    config = consumer_config(service(), max_workers=4)
    assert config.durable_name == "workers"
    assert config.name == "workers"
    assert config.filter_subject == "ponder.team-a.math-solver.jobs"
    assert config.ack_policy is AckPolicy.EXPLICIT
    assert config.deliver_subject is None  # pull, not push


@pytest.mark.parametrize(
    ("priority", "consumer", "subject"),
    [
        (Priority.CRITICAL, "workers-critical", "ponder.team-a.math-solver.jobs.critical"),
        (Priority.STANDARD, "workers", "ponder.team-a.math-solver.jobs"),
        (Priority.SHEDDABLE, "workers-sheddable", "ponder.team-a.math-solver.jobs.sheddable"),
    ],
)
def test_each_priority_class_has_its_own_consumer_of_its_own_subject(
    priority: Priority, consumer: str, subject: str
) -> None:
    config = consumer_config(service(), max_workers=4, priority=priority)
    assert (config.durable_name, config.filter_subject) == (consumer, subject)
    assert config.max_ack_pending == consumer_config(service(), max_workers=4).max_ack_pending
    # A work-queue stream refuses consumers whose subjects overlap; these are literals.
    assert "*" not in subject and ">" not in subject


@pytest.mark.parametrize("max_deliver", [1, 3, 20])
def test_max_deliver_is_bounded_by_the_service(max_deliver: int) -> None:
    config = consumer_config(service(job_max_deliver=max_deliver), max_workers=2)
    assert config.max_deliver == max_deliver


@pytest.mark.parametrize("ack_wait", [0.5, 30.0, 120.0])
def test_ack_wait_is_the_service_job_ack_wait(ack_wait: float) -> None:
    config = consumer_config(service(job_ack_wait_seconds=ack_wait), max_workers=2)
    assert config.ack_wait == ack_wait
    assert config.as_dict()["ack_wait"] == int(ack_wait * 1_000_000_000)


@pytest.mark.parametrize(
    ("slots_per_worker", "max_workers", "max_ack_pending"),
    [
        (32, 1, 32),
        (32, 10, 320),
        (1, 7, 7),
        (64, 100, 6400),
    ],
)
def test_max_ack_pending_matches_the_pool_slots(
    slots_per_worker: int, max_workers: int, max_ack_pending: int
) -> None:
    config = consumer_config(service(slots_per_worker=slots_per_worker), max_workers)
    assert config.max_ack_pending == max_ack_pending


def test_consumer_keeps_a_pull_request_waiting_for_every_worker() -> None:
    assert (consumer_config(service(), max_workers=1000).max_waiting or 0) >= 1000


def test_pool_without_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="max_workers=0"):
        consumer_config(service(), max_workers=0)
