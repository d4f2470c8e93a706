"""The operator's liveness: passes in flight, and when the loop counts as stuck."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from ponder.operator.handlers import on_probe
from ponder.operator.passes import OldestPass, PassesInFlight, stuck_problem
from ponder.operator.runtime import OperatorConfig


@pytest.mark.parametrize(
    ("oldest", "limit", "stuck"),
    [
        (None, 300.0, False),  # nothing in flight
        (OldestPass(("team-a", "math"), "timer", 2.5), 300.0, False),
        (OldestPass(("team-a", "math"), "timer", 299.9), 300.0, False),
        (OldestPass(("team-a", "math"), "timer", 300.0), 300.0, True),
        (OldestPass(("team-a", "math"), "refresh", 4000.0), 300.0, True),
    ],
)
def test_a_pass_in_flight_past_the_limit_is_stuck(
    oldest: OldestPass | None, limit: float, stuck: bool
) -> None:
    problem = stuck_problem(oldest, limit)
    assert (problem is not None) is stuck
    if oldest is not None and problem is not None:
        assert f"{oldest.trigger} pass of team-a/math" in problem


def test_the_oldest_pass_in_flight_is_reported_until_it_ends() -> None:
    passes = PassesInFlight()
    assert passes.oldest() is None
    with passes.track(("ns", "first"), "change"):
        began = time.monotonic()
        with passes.track(("ns", "second"), "timer"):
            oldest = passes.oldest(now=began + 10)
            assert oldest is not None and oldest.service == ("ns", "first")
            assert oldest.trigger == "change" and oldest.seconds >= 10
        assert passes.oldest() is not None
    assert passes.oldest() is None


def test_a_pass_that_raised_is_no_longer_in_flight() -> None:
    passes = PassesInFlight()
    with pytest.raises(ValueError), passes.track(("ns", "svc"), "timer"):
        raise ValueError("boom")
    assert passes.oldest() is None


async def test_the_probe_fails_while_a_pass_is_stuck_and_answers_its_age_otherwise() -> None:
    passes = PassesInFlight()
    runtime = SimpleNamespace(passes=passes, config=OperatorConfig(stuck_pass_seconds=0.0))
    memo = {"runtime": runtime}
    assert await on_probe(memo=memo) == {"oldest_pass_seconds": None}
    with passes.track(("ns", "svc"), "timer"):
        with pytest.raises(RuntimeError, match="stuck: a timer pass of ns/svc"):
            await on_probe(memo=memo)
        runtime.config = OperatorConfig()  # the default limit: minutes
        answer = await on_probe(memo=memo)
        assert answer["oldest_pass_seconds"] is not None and answer["oldest_pass_seconds"] < 60
