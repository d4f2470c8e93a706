"""Scale from zero under a burst: a service at zero workers gets a bounded load at once, on the
local control plane with a real data plane (the operator, the scheduler on the operator's own
ServiceConfig, vLLM on the CPU, and worker processes started by the stand-in kubelet of
tests.e2e.local_kubelet when the worker Deployment asks for them).

Every query's own deadline is shorter than a worker's start, so only the durable hold answers
any of them: the burst is held in JetStream, the operator scales up from 0 on the first queued
job, and every query is answered once the worker is up. It prints and asserts the queries
answered, failed, lost (0) and duplicated (0), and the seconds from the burst until the first
and the last answer.
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from ponder.api.service_config import ServiceConfig
from ponder.local.scheduler import SchedulerProcess
from tests.chaos.load import (
    Load,
    LoadSpec,
    Target,
    assert_every_query_answered,
    recovery_seconds,
    tally,
)
from tests.e2e.local_kubelet import POD_START_SECONDS, LocalKubelet
from tests.e2e.test_operator import (  # noqa: F401 (operator, namespace: fixtures, used by name)
    TICK_GAP_SLACK_SECONDS,
    TICK_SECONDS,
    namespace,
    operator,
)
from tests.e2e.test_scale_from_zero import (  # noqa: F401 (fixtures, used by name)
    DEADLINE_MS,
    HOLD_SECONDS,
    kubelet_and_scheduler,
    shipped_vllm,
)
from tests.report import report

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.vllm]

SPEC = LoadSpec(
    queries=16,
    in_flight=8,
    seed=11,
    branches=2,
    deadline_ms=DEADLINE_MS,
    # Held past its deadline for up to the hold: only a query still waiting then is lost.
    slack_seconds=HOLD_SECONDS + 30.0,
)
"""Self-consistency@2, all 8 first queries at once against zero workers, 16 in all."""


async def test_a_burst_at_zero_workers_is_held_and_answered_whole(
    kubelet_and_scheduler: tuple[LocalKubelet, SchedulerProcess, ServiceConfig],  # noqa: F811
    http: aiohttp.ClientSession,
    pytestconfig: pytest.Config,
) -> None:
    kubelet, scheduler, _ = kubelet_and_scheduler
    assert not kubelet.workers  # zero workers: the burst meets a cold pool
    burst_at = time.monotonic()
    records = await Load(SPEC, Target(scheduler.base_url), http).run()
    counts = tally(records)
    first_answer = recovery_seconds(records, burst_at)
    last_answer = max(record.ended_at for record in records) - burst_at
    # 0 -> 1, or straight to 2: the burst's branches are more than one worker's slots.
    scaled_up_at, scaled_to = next(
        ((at, count) for at, count in kubelet.replicas_seen if at > burst_at and count > 0),
        (None, 0),
    )
    scaled_text = "never" if scaled_up_at is None else f"{scaled_up_at - burst_at:.1f} s"
    first_text = "never" if first_answer is None else f"{first_answer:.1f} s"
    line = (
        f"burst of {SPEC.in_flight} at zero workers, {SPEC.queries} queries "
        f"(deadline {DEADLINE_MS} ms, hold {HOLD_SECONDS} s): {counts.line()}; "
        f"scaled 0 -> {scaled_to} after {scaled_text}, first answer after {first_text}, "
        f"last after {last_answer:.1f} s"
    )
    print(f"\nchaos scale-from-zero: {line}")
    report(pytestconfig, "chaos", f"scale from zero: {line}")
    # Nothing is lost, duplicated or failed: the hold outlasts the cold start, so no 504 either.
    assert_every_query_answered(records, SPEC.queries)
    assert scaled_up_at is not None, kubelet.replicas_seen
    # The operator scaled up on the first queued job, within one (stretched) tick.
    assert scaled_up_at - burst_at <= TICK_SECONDS + TICK_GAP_SLACK_SECONDS, kubelet.replicas_seen
    # The first answers came only through the hold: the worker started after their deadline.
    assert first_answer is not None
    assert first_answer > POD_START_SECONDS > DEADLINE_MS / 1000
