"""When a worker counts its engine down or up (ponder.workers.engine_watch.after_check)."""

from __future__ import annotations

import pytest

from ponder.workers.engine import EngineHealth
from ponder.workers.engine_watch import WEDGED_SECONDS, EngineState, after_check

UP = EngineState()
OK = EngineHealth()
REFUSED = EngineHealth("connection refused")
SILENT = EngineHealth("no answer within 2 s", silent=True)


def run(checks: list[tuple[float, EngineHealth, bool]]) -> EngineState:
    """The state after `checks`: (monotonic seconds, what the check found, suspected)."""
    state = UP
    for now, health, suspected in checks:
        state = after_check(state, health, now, suspected=suspected)
    return state


@pytest.mark.parametrize(
    ("checks", "up"),
    [
        ([], True),
        ([(0, OK, False)], True),
        ([(0, REFUSED, False)], True),  # one failed answer is not an outage
        ([(0, REFUSED, False), (2, REFUSED, False)], False),  # two in a row are
        ([(0, REFUSED, False), (2, OK, False), (4, REFUSED, False)], True),  # not in a row
        ([(0, REFUSED, True)], False),  # confirms an engine call that found no engine
        ([(0, REFUSED, False), (2, REFUSED, False), (4, REFUSED, False), (6, OK, False)], True),
        # Silent: only busy until it has been silent for WEDGED_SECONDS, suspected or not.
        ([(0, SILENT, True), (2, SILENT, True), (4, SILENT, False)], True),
        ([(0, SILENT, False), (WEDGED_SECONDS - 1, SILENT, False)], True),
        ([(0, SILENT, False), (WEDGED_SECONDS, SILENT, False)], False),
        ([(0, SILENT, False), (10, OK, False), (20, SILENT, False), (40, SILENT, False)], True),
        # A refusal after silence counts with it; down stays down until a good answer.
        ([(0, SILENT, False), (2, REFUSED, False)], False),
        ([(0, REFUSED, True), (2, SILENT, False), (4, SILENT, False)], False),
        ([(0, REFUSED, True), (2, SILENT, False), (4, OK, False)], True),
    ],
)
def test_down_when_refused_twice_or_confirming_a_failed_call_or_silent_for_long(
    checks: list[tuple[float, EngineHealth, bool]], up: bool
) -> None:
    assert run(checks).up is up


def test_the_state_keeps_the_last_problem_and_when_failing_began_and_a_good_check_clears_it() -> (
    None
):
    down = run([(5, SILENT, False), (7, REFUSED, False)])
    assert (down.up, down.failures, down.failing_since, down.problem) == (
        False,
        2,
        5,
        "connection refused",
    )
    assert after_check(down, OK, 9) == UP
