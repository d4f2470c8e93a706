"""When a worker counts its engine down or up (ponder.workers.engine_watch.after_check)."""

from __future__ import annotations

import pytest

from ponder.workers.engine_watch import DOWN_AFTER_FAILED_CHECKS, EngineState, after_check

UP = EngineState()


def run(checks: list[tuple[str | None, bool]]) -> EngineState:
    state = UP
    for problem, suspected in checks:
        state = after_check(state, problem, suspected=suspected)
    return state


@pytest.mark.parametrize(
    ("checks", "up"),
    [
        ([], True),
        ([(None, False)], True),
        ([("refused", False)], True),  # one slow or failed answer is not an outage
        ([("refused", False)] * DOWN_AFTER_FAILED_CHECKS, False),
        ([("refused", False), (None, False), ("refused", False)], True),  # not in a row
        ([("refused", True)], False),  # confirms an engine call that found no engine
        ([("refused", False)] * 3 + [(None, False)], True),  # the first good answer: back
        ([("refused", True), ("refused", False), (None, True)], True),
    ],
)
def test_down_after_failed_checks_in_a_row_or_one_confirming_a_failed_call(
    checks: list[tuple[str | None, bool]], up: bool
) -> None:
    assert run(checks).up is up


def test_the_state_keeps_the_last_problem_and_a_good_check_clears_it() -> None:
    down = run([("first", False), ("second", False)])
    assert (down.up, down.failures, down.problem) == (False, 2, "second")
    assert after_check(down, None) == UP
