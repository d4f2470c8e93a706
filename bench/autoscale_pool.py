"""The worker pool of the autoscaling simulation: a discrete-event loop on a simulated clock.

Queries of a trace (bench/autoscale_trace.py) are planned by the real planner
(`ponder.scheduler.planner.plan_query`, which shrinks a query under load) from the real
scheduler bookkeeping (`LoadTracker`, `LatencyWindow`); their branches wait in one FIFO queue
(the JetStream work queue) for a slot of a ready worker, run for their drawn service time and
report to the tracker as a worker's `BranchResult` would. An arm (bench/autoscale_arms.py) sets
the pool's replicas at its ticks: a new worker holds its GPU from the moment it is asked for and
takes work after `startup_seconds`; a removed one takes no new work, finishes what it runs and
then gives its GPU back (a starting one is removed first, as a ReplicaSet removes unready pods
first).

Simplifications, each the same for every arm: one branch per job; a branch's speed does not
depend on how full its worker is; a query waits for every branch it was granted (no early stop);
at its deadline a query is answered with what finished and its other branches are cancelled,
freeing their slots at once. Nothing sleeps: the clock jumps from event to event, and a seed
gives the same run every time.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from bench.autoscale_trace import Arrival, Workload
from ponder.api.service_config import ServiceConfig
from ponder.api.wire import BranchResult, BranchStatus, Endpoint, SchedulerStats
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadTracker
from ponder.scheduler.planner import Plan, QueryRequest, plan_query
from ponder.scheduler.stats import LatencyWindow, snapshot

DEADLINE_ANSWER_SECONDS = 0.05
"""A query cut at its deadline is answered a moment after it, as the runner does: past the SLO."""


@dataclass(frozen=True)
class Observed:
    """What an arm sees at a tick: the stream's counts and the scheduler's stats message."""

    at: float
    replicas: int  # the replicas last asked for (the Deployment's spec.replicas)
    pending_branches: int  # queued, not yet on a worker
    running_branches: int
    stats: SchedulerStats


class Arm:
    """An autoscaler: its first pool, its tick, and the replicas it wants at each tick."""

    name = "arm"
    tick_seconds: float | None = None  # None: never ticks (a static pool)

    def initial_replicas(self) -> int:
        raise NotImplementedError

    def desired(self, observed: Observed) -> int:
        raise NotImplementedError

    def causes(self) -> dict[str, int]:
        """Decisions that changed the count, by cause (empty when the arm names none)."""
        return {}


@dataclass(frozen=True)
class ArmResult:
    """The figures of one arm on one trace."""

    arm: str
    queries: int
    attained: int
    cut_at_deadline: int
    branches_asked: int
    branches_granted: int
    branches_finished: int  # granted and finished before the deadline
    slot_seconds: float  # seconds branches held slots: the least any pool must pay for
    worker_seconds: float
    peak_workers: int
    p95_latency_seconds: float
    duration_seconds: float
    causes: dict[str, int] = field(default_factory=dict)

    @property
    def attainment(self) -> float:
        """Share of queries answered within the SLO (1 without queries)."""
        return self.attained / self.queries if self.queries else 1.0

    @property
    def granted_share(self) -> float:
        """Branches granted over branches asked: the accuracy the planner kept."""
        return self.branches_granted / self.branches_asked if self.branches_asked else 1.0

    @property
    def finished_share(self) -> float:
        """Branches that finished in time over branches asked: what the answers rest on."""
        return self.branches_finished / self.branches_asked if self.branches_asked else 1.0

    @property
    def mean_workers(self) -> float:
        return self.worker_seconds / self.duration_seconds

    def floor_worker_seconds(self, slots_per_worker: int) -> float:
        """What a pool that is always exactly full would pay for this arm's branches."""
        return self.slot_seconds / slots_per_worker


class _Worker:
    __slots__ = ("busy", "created_at", "gone_at", "name", "ready", "removed")

    def __init__(self, name: str, created_at: float) -> None:
        self.name = name
        self.created_at = created_at
        self.gone_at: float | None = None
        self.ready = False
        self.removed = False
        self.busy = 0


class _Query:
    __slots__ = ("arrival", "branches", "done", "finished", "open", "query_id")

    def __init__(self, arrival: float, query_id: str) -> None:
        self.arrival = arrival
        self.query_id = query_id
        self.branches: list[_Branch] = []
        self.open = 0  # granted, not yet finished
        self.finished = 0
        self.done = False


class _Branch:
    __slots__ = ("live", "query", "started_at", "tokens", "worker")

    def __init__(self, query: _Query, tokens: int) -> None:
        self.query = query
        self.tokens = tokens
        self.worker: _Worker | None = None
        self.started_at = 0.0
        self.live = True  # False once finished or cancelled (its queued entry or event is stale)


_DONE, _READY, _DEADLINE, _TICK = 0, 1, 2, 3


class PoolSimulation:
    """One arm on one trace. `run()` returns its figures; the loop itself never sleeps."""

    def __init__(
        self,
        arm: Arm,
        config: ServiceConfig,
        workload: Workload,
        trace: list[Arrival],
        *,
        duration_seconds: float,
        seed: int,
        startup_seconds: float,
        shrink: bool = True,
    ) -> None:
        self.arm, self.config, self.workload, self.trace = arm, config, workload, trace
        self.duration, self.seed, self.startup = duration_seconds, seed, startup_seconds
        self.shrink = shrink
        self.slo_seconds = config.slo.target_latency_ms / 1000
        self.max_tokens = config.budget.max_tokens_per_branch
        self.load = LoadTracker()
        self.window = LatencyWindow()
        self.events: list[tuple[float, int, int, object]] = []
        self.sequence = 0
        self.queue: deque[_Branch] = deque()
        self.slots: list[_Worker] = []  # one entry per free slot of a ready worker (may be stale)
        self.workers: list[_Worker] = []
        self.replicas = 0
        self.pending = 0
        self.running = 0
        self.latencies: list[float] = []
        self.attained = self.cut = self.asked = self.granted = self.finished = 0
        self.slot_seconds = 0.0
        self.options = PonderOptions()
        # Every report is a copy of one real BranchResult (a copy costs a quarter of a build).
        self.report = BranchResult.model_construct(
            query_id="q", job_id="q-j0", branch_id="q-0", status=BranchStatus.COMPLETED
        )

    # --- events ----------------------------------------------------------------------------

    def _push(self, at: float, kind: int, item: object) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, kind, self.sequence, item))

    def run(self) -> ArmResult:
        """Play the whole trace, then let the last queries finish or reach their deadlines."""
        self._scale(self.arm.initial_replicas(), 0.0, ready=True)
        if self.arm.tick_seconds is not None:
            self._push(self.arm.tick_seconds, _TICK, None)
        arrivals = iter(self.trace)
        upcoming = next(arrivals, None)
        while upcoming is not None or self.events:
            if upcoming is not None and (not self.events or upcoming.at < self.events[0][0]):
                self._arrive(upcoming)
                upcoming = next(arrivals, None)
                continue
            at, kind, _, item = heapq.heappop(self.events)
            if kind == _TICK:
                if upcoming is None and not self.running and not self.pending:
                    continue  # the trace is over and the pool idle: stop ticking
                self._tick(at)
            elif kind == _DONE:
                self._branch_done(item, at)  # type: ignore[arg-type]
            elif kind == _READY:
                self._worker_ready(item, at)  # type: ignore[arg-type]
            else:
                self._deadline(item, at)  # type: ignore[arg-type]
        return self._result()

    def _arrive(self, arrival: Arrival) -> None:
        now = arrival.at
        query_id = f"q{arrival.index}"
        request = QueryRequest(
            query_id=query_id,
            endpoint=Endpoint.COMPLETIONS,
            question="",
            prompt="Q:",
            messages=None,
            ponder=self.options,
        )
        # Without the load the planner cannot shrink: every query gets the branches it asks.
        plan = plan_query(request, self.config, self.load.snapshot(now) if self.shrink else None)
        if not isinstance(plan, Plan):
            raise RuntimeError(f"the simulated service refuses its own query: {plan.message}")
        query = _Query(now, query_id)
        granted = plan.query.branches
        tokens = self.workload.branch_tokens(self.seed, arrival.index, self.max_tokens)
        self.asked += plan.requested_branches
        self.granted += granted
        self.load.query_started()
        self.load.branches_launched(granted, self.max_tokens, now)
        query.branches = [_Branch(query, length) for length in tokens[:granted]]
        query.open = granted
        self.queue.extend(query.branches)
        self.pending += granted
        self._push(now + plan.deadline_ms / 1000, _DEADLINE, query)
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        while self.queue and self.slots:
            branch = self.queue[0]
            if not branch.live:
                self.queue.popleft()
                continue
            worker = self.slots.pop()
            if worker.removed or not worker.ready:
                continue  # a slot of a worker that has since been removed
            self.queue.popleft()
            self.pending -= 1
            self.running += 1
            worker.busy += 1
            branch.worker, branch.started_at = worker, now
            self._push(now + branch.tokens * self.workload.seconds_per_token, _DONE, branch)

    def _free(self, branch: _Branch, now: float, status: BranchStatus, tokens: int) -> None:
        """`branch` leaves its slot: reported to the tracker as its worker would report it."""
        worker = branch.worker
        assert worker is not None
        branch.live = False
        self.running -= 1
        worker.busy -= 1
        if now <= self.duration:
            self.slot_seconds += now - branch.started_at
        report = self.report.model_copy(
            update={
                "status": status,
                "completion_tokens": tokens,
                "generation_seconds": now - branch.started_at,
                "worker_id": worker.name,
            }
        )
        self.load.observe(report, now)
        if worker.removed:
            if worker.busy == 0:
                worker.gone_at = now
        else:
            self.slots.append(worker)

    def _branch_done(self, branch: _Branch, now: float) -> None:
        if not branch.live:
            return  # cancelled at its query's deadline
        self._free(branch, now, BranchStatus.COMPLETED, branch.tokens)
        self.load.branches_settled(1, self.max_tokens)
        query = branch.query
        query.open -= 1
        query.finished += 1
        self.finished += 1
        if query.open == 0:
            self._answer(query, now - query.arrival, now)
        self._dispatch(now)

    def _deadline(self, query: _Query, now: float) -> None:
        if query.done:
            return
        for branch in query.branches:
            if not branch.live:
                continue
            if branch.worker is None:  # still queued: its entry in the queue goes stale
                branch.live = False
                self.pending -= 1
            else:
                ran = round((now - branch.started_at) / self.workload.seconds_per_token)
                self._free(branch, now, BranchStatus.CANCELLED, ran)
        self.load.branches_settled(query.open, self.max_tokens)
        query.open = 0
        self.cut += 1
        self._answer(query, now - query.arrival + DEADLINE_ANSWER_SECONDS, now)
        self._dispatch(now)

    def _answer(self, query: _Query, latency: float, now: float) -> None:
        query.done = True
        self.load.query_finished()
        self.window.record(latency, now)
        self.latencies.append(latency)
        if latency <= self.slo_seconds:
            self.attained += 1

    # --- the pool ----------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        stats = snapshot("sim", self.load, self.window, self.slo_seconds, at=now, monotonic_now=now)
        observed = Observed(now, self.replicas, self.pending, self.running, stats)
        self._scale(self.arm.desired(observed), now, ready=False)
        assert self.arm.tick_seconds is not None
        self._push(now + self.arm.tick_seconds, _TICK, None)

    def _scale(self, replicas: int, now: float, *, ready: bool) -> None:
        replicas = max(0, replicas)
        active = [w for w in self.workers if not w.removed]
        for _ in range(len(active), replicas):
            worker = _Worker(f"w{len(self.workers)}", now)
            self.workers.append(worker)
            if ready:
                self._worker_ready(worker, now)
            else:
                self._push(now + self.startup, _READY, worker)
        # Unready workers go first (the newest of them), then the least busy ready ones.
        surplus = sorted(active, key=lambda w: (w.ready, w.busy, -w.created_at))
        for worker in surplus[: max(0, len(active) - replicas)]:
            worker.removed = True
            if worker.busy == 0:
                worker.gone_at = now
        self.replicas = replicas

    def _worker_ready(self, worker: _Worker, now: float) -> None:
        if worker.removed:
            return
        worker.ready = True
        self.slots.extend([worker] * self.config.slots_per_worker)
        self._dispatch(now)

    def _result(self) -> ArmResult:
        worker_seconds = 0.0
        for worker in self.workers:
            gone = self.duration if worker.gone_at is None else min(worker.gone_at, self.duration)
            worker_seconds += max(0.0, gone - min(worker.created_at, self.duration))
        latencies = sorted(self.latencies)
        p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else 0.0
        return ArmResult(
            arm=self.arm.name,
            queries=len(self.latencies),
            attained=self.attained,
            cut_at_deadline=self.cut,
            branches_asked=self.asked,
            branches_granted=self.granted,
            branches_finished=self.finished,
            slot_seconds=self.slot_seconds,
            worker_seconds=worker_seconds,
            peak_workers=self._peak_workers(),
            p95_latency_seconds=p95,
            duration_seconds=self.duration,
            causes=self.arm.causes(),
        )

    def _peak_workers(self) -> int:
        changes = []
        for worker in self.workers:
            changes.append((worker.created_at, 1))
            changes.append((self.duration if worker.gone_at is None else worker.gone_at, -1))
        peak = count = 0
        for _, step in sorted(changes, key=lambda change: (change[0], change[1])):
            count += step
            peak = max(peak, count)
        return peak
