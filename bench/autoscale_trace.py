"""The workload of the autoscaling simulation (pure, seeded): when queries arrive (a diurnal
base with bursts) and how long their branches run.

    rate(t) = load x peak x diurnal(t) x burst(t)
    diurnal(t) = trough + (1 - trough) x (1 - cos(2 pi t / period)) / 2     (trough at t = 0)
    burst(t) = the factor of the burst covering t, else 1

Arrivals are a non-homogeneous Poisson process drawn by thinning (Lewis and Shedler): candidates
at the constant rate `MAX_LOAD x peak x the largest burst factor`, each with a uniform mark, kept
when `mark x candidate rate <= rate(t)`. Every load of one seed thins the same candidates, so the
trace at load 1 is a subset of the trace at load 2 and a query keeps its index (hence its branch
lengths) across loads and arms: a search over the load moves smoothly, and every arm of a
comparison sees the same queries. A query's branch lengths are drawn from its index alone
(log-normal, capped at the branch's token limit).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_LOAD = 4.0
"""The largest load multiplier a trace can be thinned to."""


@dataclass(frozen=True)
class TraceShape:
    """The shape of the arrival rate, at load 1."""

    duration_seconds: float = 6 * 3600.0
    peak_queries_per_second: float = 1.5
    diurnal_period_seconds: float = 6 * 3600.0  # one compressed day over the run
    trough_fraction: float = 0.2
    bursts_per_hour: float = 1.0
    burst_seconds: tuple[float, float] = (120.0, 600.0)
    burst_factor: tuple[float, float] = (1.5, 2.5)


@dataclass(frozen=True)
class Burst:
    start: float
    end: float
    factor: float


@dataclass(frozen=True)
class Arrival:
    """One query of the trace: when it arrives, and its index among the seed's candidates."""

    at: float
    index: int


def bursts_of(shape: TraceShape, seed: int) -> tuple[Burst, ...]:
    """The bursts of the trace: a Poisson count over the run, each at a uniform start with a
    uniform length and factor from the shape's ranges."""
    rng = random.Random(seed * 7919 + 1)
    expected = shape.bursts_per_hour * shape.duration_seconds / 3600
    count = _poisson(rng, expected)
    bursts = []
    for _ in range(count):
        start = rng.uniform(0.0, shape.duration_seconds)
        length = rng.uniform(*shape.burst_seconds)
        bursts.append(Burst(start, start + length, rng.uniform(*shape.burst_factor)))
    return tuple(sorted(bursts, key=lambda burst: burst.start))


def diurnal(shape: TraceShape, at: float) -> float:
    """The diurnal share of the peak at time `at`, in [trough, 1]."""
    phase = 2 * math.pi * at / shape.diurnal_period_seconds
    return shape.trough_fraction + (1 - shape.trough_fraction) * (1 - math.cos(phase)) / 2


def rate_at(shape: TraceShape, bursts: tuple[Burst, ...], at: float, load: float = 1.0) -> float:
    """Queries per second at time `at`."""
    factor = max((b.factor for b in bursts if b.start <= at < b.end), default=1.0)
    return load * shape.peak_queries_per_second * diurnal(shape, at) * factor


def arrivals(shape: TraceShape, seed: int, load: float) -> list[Arrival]:
    """The queries of the trace at `load` (0 < load <= MAX_LOAD), in time order."""
    if not 0 < load <= MAX_LOAD:
        raise ValueError(f"load={load} must be within (0, {MAX_LOAD}]")
    bursts = bursts_of(shape, seed)
    ceiling = MAX_LOAD * shape.peak_queries_per_second * max(shape.burst_factor)
    rng = random.Random(seed * 7919 + 2)
    kept: list[Arrival] = []
    at, index = 0.0, 0
    while True:
        at += rng.expovariate(ceiling)
        if at >= shape.duration_seconds:
            return kept
        mark = rng.random()
        if mark * ceiling <= rate_at(shape, bursts, at, load):
            kept.append(Arrival(at, index))
        index += 1


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw by counting unit-rate exponential gaps within `mean`."""
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


@dataclass(frozen=True)
class Workload:
    """What one query costs: branches asked, and each branch's length and speed."""

    branches_asked: int = 8
    mean_tokens: float = 250.0
    tokens_sigma: float = 0.5  # of the log-normal branch length
    seconds_per_token: float = 0.025

    def branch_tokens(self, seed: int, index: int, max_tokens: int) -> list[int]:
        """The lengths of query `index`'s branches: the same for every arm and load."""
        rng = random.Random(seed * 1_000_003 + index)
        mu = math.log(self.mean_tokens) - self.tokens_sigma**2 / 2
        return [
            max(1, min(max_tokens, round(rng.lognormvariate(mu, self.tokens_sigma))))
            for _ in range(self.branches_asked)
        ]

    def mean_branch_seconds(self, max_tokens: int, samples: int = 20_000) -> float:
        """The mean service time of a branch capped at `max_tokens` (sampled, seeded)."""
        queries = max(1, samples // self.branches_asked)
        tokens = [t for i in range(queries) for t in self.branch_tokens(0, i, max_tokens)]
        return sum(tokens) / len(tokens) * self.seconds_per_token
