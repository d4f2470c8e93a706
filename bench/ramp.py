"""An open-loop load ramp and what each step of it delivered (pure).

Open loop: arrivals follow a Poisson process of the step's rate whatever the server does, so a
slow server meets a growing backlog, as it would in production (a closed loop would politely
wait and hide the overload). `arrival_offsets` draws them; `step_result` scores a step's
records against the latency SLO.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from bench.summary import QueryRecord, percentile


def arrival_offsets(
    rate_per_second: float, duration_seconds: float, rng: random.Random, limit: int
) -> list[float]:
    """Arrival times (s from the step's start) of a Poisson process at `rate_per_second` within
    `duration_seconds`, at most `limit` of them."""
    if rate_per_second <= 0 or duration_seconds <= 0:
        return []
    offsets: list[float] = []
    now = rng.expovariate(rate_per_second)
    while now < duration_seconds and len(offsets) < limit:
        offsets.append(now)
        now += rng.expovariate(rate_per_second)
    return offsets


@dataclass(frozen=True)
class StepResult:
    """One arm at one rate step."""

    arm: str
    rate_per_second: float
    duration_seconds: float
    requests: int
    slo_attainment: float  # answered within the SLO, over all requests
    accuracy: float  # right answers, over all requests
    goodput_per_second: float  # right answers within the SLO, per second of the step
    p50_latency_seconds: float
    p95_latency_seconds: float
    mean_branches: float
    shrunk_share: float  # requests whose plan the planner shrank
    grown_share: float  # requests whose plan the planner grew (spec.slo.loadAdaptation)
    deadline_share: float  # requests answered at their deadline with the best so far
    errors: int


def within_slo(record: QueryRecord, slo_seconds: float) -> bool:
    return record.error is None and record.latency_seconds <= slo_seconds


def step_result(
    arm: str,
    rate_per_second: float,
    duration_seconds: float,
    records: Sequence[QueryRecord],
    slo_seconds: float,
) -> StepResult:
    """Score one step; a step without requests scores NaN."""
    count = len(records)

    def share(flags: Sequence[bool]) -> float:
        return sum(flags) / count if count else math.nan

    met = [within_slo(r, slo_seconds) for r in records]
    good = [m and r.correct for m, r in zip(met, records, strict=True)]
    latencies = [r.latency_seconds for r in records]
    return StepResult(
        arm=arm,
        rate_per_second=rate_per_second,
        duration_seconds=duration_seconds,
        requests=count,
        slo_attainment=share(met),
        accuracy=share([r.correct for r in records]),
        goodput_per_second=sum(good) / duration_seconds if duration_seconds > 0 else math.nan,
        p50_latency_seconds=percentile(latencies, 0.5),
        p95_latency_seconds=percentile(latencies, 0.95),
        mean_branches=sum(r.branches for r in records) / count if count else math.nan,
        shrunk_share=share([r.shrunk for r in records]),
        grown_share=share([r.grown for r in records]),
        deadline_share=share([r.deadline_exceeded for r in records]),
        errors=sum(1 for r in records if r.error is not None),
    )
