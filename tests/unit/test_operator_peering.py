"""Operator replicas as kopf peers: the command line's peering, its priorities, kopf's settings."""

from __future__ import annotations

import datetime

import kopf
import pytest

from ponder.operator.__main__ import parse_args
from ponder.operator.handlers import configure
from ponder.operator.peering import (
    DEFAULT_LIFETIME_SECONDS,
    MIN_LIFETIME_SECONDS,
    Peering,
    is_active,
    peering_of,
    start_priority,
)

STARTED_NS = 1_764_633_600_123_456_789
"""A start time (2025-12-02, ns since the epoch) with digits below the microsecond."""


@pytest.mark.parametrize(
    ("earlier_ns", "later_ns"),
    [
        (STARTED_NS, STARTED_NS + 1_000),  # one microsecond apart
        (STARTED_NS, STARTED_NS + 60 * 10**9),  # a replacement pod a minute later
        (0, STARTED_NS),
    ],
)
def test_the_replica_that_started_first_has_the_higher_priority(
    earlier_ns: int, later_ns: int
) -> None:
    assert start_priority(earlier_ns) > start_priority(later_ns)


def test_start_priorities_are_below_any_explicit_priority_of_zero_or_more() -> None:
    # So `--peering NAME --priority 1` (a developer's laptop) pauses every deployed replica.
    assert start_priority(STARTED_NS) < 0
    assert start_priority(STARTED_NS) == -1_764_633_600_123_456


@pytest.mark.parametrize(
    ("name", "priority", "lifetime", "expected"),
    [
        (None, None, DEFAULT_LIFETIME_SECONDS, None),
        ("", 5, DEFAULT_LIFETIME_SECONDS, None),  # an empty name is standalone too
        ("ponder", None, 10, Peering("ponder", start_priority(STARTED_NS), 10)),
        ("ponder", 100, 15, Peering("ponder", 100, 15)),
        ("ponder", -2, MIN_LIFETIME_SECONDS, Peering("ponder", -2, MIN_LIFETIME_SECONDS)),
    ],
)
def test_peering_of_the_command_line(
    name: str | None, priority: int | None, lifetime: int, expected: Peering | None
) -> None:
    assert peering_of(name, priority, lifetime, STARTED_NS) == expected


def test_a_lifetime_kopf_cannot_renew_in_time_is_refused_with_the_floor() -> None:
    with pytest.raises(ValueError, match="--peering-lifetime-seconds=4 is below 5"):
        peering_of("ponder", None, MIN_LIFETIME_SECONDS - 1, STARTED_NS)


def test_the_command_line_and_environment_build_the_peering() -> None:
    args = parse_args(
        ["--peering", "ponder", "--operator-id", "pod-a"],
        {"PONDER_PEERING_LIFETIME_SECONDS": "12"},
        started_at_ns=STARTED_NS,
    )
    assert args.peer == Peering("ponder", start_priority(STARTED_NS), 12)
    explicit = parse_args([], {"PONDER_PEERING": "ponder", "PONDER_PEERING_PRIORITY": "9"})
    assert explicit.peer == Peering("ponder", 9, DEFAULT_LIFETIME_SECONDS)


def test_a_short_lifetime_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--peering", "ponder", "--peering-lifetime-seconds", "1"], {})
    assert exited.value.code == 2
    assert "--peering-lifetime-seconds=1 is below 5" in capsys.readouterr().err


def test_without_peering_kopf_runs_standalone() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, None)
    assert settings.peering.standalone is True


def test_a_peer_is_mandatory_so_it_starts_paused_until_it_has_read_the_peering_object() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Peering("ponder", -7, 12))
    assert settings.peering.standalone is False
    assert settings.peering.mandatory is True
    assert settings.peering.name == "ponder"
    assert settings.peering.priority == -7
    assert settings.peering.lifetime == 12


NOW = datetime.datetime(2026, 12, 2, 10, 0, 10, tzinfo=datetime.UTC)


def record(priority: int, seen: str, lifetime: int = 10) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": f"2026-12-02T{seen}+00:00"}


@pytest.mark.parametrize(
    ("records", "active"),
    [
        ({}, False),  # no record of its own yet: kopf keeps a mandatory peer paused
        ({"me": record(-1, "10:00:05")}, True),
        ({"me": record(-1, "10:00:05"), "other": record(-2, "10:00:08")}, True),
        ({"me": record(-2, "10:00:05"), "other": record(-1, "10:00:08")}, False),
        # the higher peer's record expired at 10:00:09: killed, not cleaned up yet
        ({"me": record(-2, "10:00:05"), "other": record(-1, "09:59:59")}, True),
        # equal priorities pause every replica
        ({"me": record(-1, "10:00:05"), "twin": record(-1, "10:00:08")}, False),
        ({"me": record(-1, "09:59:00")}, False),  # its own record lapsed
        ({"me": record(-1, "10:00:05"), "other": {"priority": 5}}, True),  # unreadable: dead
        ({"me": {"priority": -1, "lastseen": "2026-12-02T10:00:05"}}, True),  # naive, 60 s
    ],
)
def test_the_active_replica_is_the_highest_live_priority(
    records: dict[str, dict[str, object]], active: bool
) -> None:
    assert is_active(records, "me", NOW) is active
