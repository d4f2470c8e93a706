"""The queueing maths the autoscaler sizes the pool with, against published Erlang values."""

from __future__ import annotations

import pytest

from ponder.operator.queueing import (
    erlang_b,
    erlang_c,
    littles_law_servers,
    offered_load,
    servers_for_wait,
    wait_probability,
)


@pytest.mark.parametrize(
    ("servers", "load", "expected"),
    [
        (3, 2.0, 4 / 9),  # a^c/c! x c/(c-a) = 4 over 1 + 2 + 2 + 4
        (10, 6.0, 0.1013),  # 120 customers/h x 3 min on 10 servers: "about 0.10"
        # The call-centre example: 10 Erlangs (100 calls per 30 min, 180 s each).
        (11, 10.0, 0.6821),
        (12, 10.0, 0.4494),
        (13, 10.0, 0.2853),
        (14, 10.0, 0.1741),
        (5, 2.5, 0.1304),  # 30 calls/h x 5 min
        (6, 2.5, 0.0474),
        (55, 48.0, 0.2387),  # 360 calls per 30 min x 4 min on 55 agents
    ],
)
def test_erlang_c_matches_known_values(servers: int, load: float, expected: float) -> None:
    assert erlang_c(servers, load) == pytest.approx(expected, abs=1e-4)


def test_erlang_c_is_certain_waiting_when_the_servers_cannot_carry_the_load() -> None:
    assert erlang_c(10, 10.0) == 1.0
    assert erlang_c(5, 12.0) == 1.0
    assert erlang_c(4, 0.0) == 0.0


def test_erlang_b_recursion() -> None:
    assert erlang_b(0, 3.0) == 1.0
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)  # (1/2) / (1 + 1 + 1/2)
    with pytest.raises(ValueError):
        erlang_b(-1, 1.0)


@pytest.mark.parametrize(
    ("servers", "service_level"),
    [(13, 0.7956), (14, 0.8884)],  # the 10-Erlang example's share answered within 20 s
)
def test_wait_tail_gives_the_service_level(servers: int, service_level: float) -> None:
    assert 1 - wait_probability(servers, 10.0, 180.0, 20.0) == pytest.approx(
        service_level, abs=1e-4
    )
    assert wait_probability(servers, 10.0, 180.0, 0.0) == erlang_c(servers, 10.0)


@pytest.mark.parametrize(
    ("arrival_rate", "service_seconds", "wait_seconds", "late", "limit", "expected"),
    [
        (100 / 1800, 180.0, 20.0, 0.2, 100, 14),  # 80 % within 20 s: 14 agents, 13 miss
        (30 / 3600, 300.0, 0.0, 0.1, 50, 6),  # 90 % not delayed at all: 6
        (0.0, 10.0, 5.0, 0.05, 50, 0),  # no arrivals, no servers
        (100 / 1800, 180.0, 20.0, 0.2, 12, 12),  # not enough within the limit: the limit
        (100 / 1800, 180.0, 20.0, 0.2, 9, 9),  # not even stable within the limit
    ],
)
def test_servers_for_wait_is_the_fewest_that_meet_the_tail(
    arrival_rate: float,
    service_seconds: float,
    wait_seconds: float,
    late: float,
    limit: int,
    expected: int,
) -> None:
    servers = servers_for_wait(arrival_rate, service_seconds, wait_seconds, late, limit)
    assert servers == expected
    load = offered_load(arrival_rate, service_seconds)
    if 0 < servers < limit:
        assert wait_probability(servers, load, service_seconds, wait_seconds) <= late
        assert wait_probability(servers - 1, load, service_seconds, wait_seconds) > late


def test_servers_for_wait_scales_to_large_pools() -> None:
    # 1500 busy slots: square-root staffing needs only a few dozen slots above the load.
    servers = servers_for_wait(250.0, 6.0, 1.0, 0.05, 10_000)
    assert 1500 < servers < 1600
    assert wait_probability(servers, 1500.0, 6.0, 1.0) <= 0.05


def test_littles_law() -> None:
    assert littles_law_servers(10.0, 6.0, 0.8) == 75
    assert littles_law_servers(10.0, 6.0, 1.0) == 60
    assert littles_law_servers(0.0, 6.0, 0.8) == 0
    with pytest.raises(ValueError):
        littles_law_servers(1.0, 1.0, 0.0)
