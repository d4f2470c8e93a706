"""The autoscaling policy: signals in, desired worker replicas out (pure; docs/architecture.md,
"Autoscaling policy").

    demand  = branches queued or running (JetStream pending + ack-pending jobs, or the schedulers'
              outstanding branches when they count more), weighted by the tokens they are expected
              to generate relative to a full branch (early stopping frees slots sooner)
    desired = ceil(demand / (slots per worker x target utilisation)),
              or, when more, the queueing estimate of the workers that the observed branch
              arrival rate and branch service time need for spec.slo (queueing.py), tightened
              while attainment is below spec.slo.attainmentPercent or p95 latency is near the
              SLO (one more worker then, while no branch time has been observed yet),
              clamped to [minReplicas, maxReplicas],
              scale-up limited per decision, scale-down only after a stabilisation window,
              zero after an idle period when scale-to-zero is enabled.

The queueing estimate treats the pool's slots as an M/M/c queue fed by the schedulers' branch
arrivals: the fewest slots at which the probability that a branch waits longer than its latency
slack (the SLO target less one branch's service time) is within 1 - attainmentPercent (Erlang
C), and never fewer than Little's law gives at the target utilisation (arrival rate x service
time / branches per worker). While the SLO is missed, the late share is divided by how far the
observed misses exceed the allowed ones (the model under-counted them by that much), and while
p95 is near the target the slack is measured to the near-SLO latency instead. Either way the
estimate is a function of rates, not of the current pool, so a pool that has grown enough is
not grown again while the schedulers' window still remembers the miss. It applies whenever the
rates are observed, not only once the SLO is missed: `bench/autoscale_sim.py` measured the
reactive form trailing every ramp (the demand rule shrinks the pool back once the window
forgets the miss, and the next ramp misses again).

The stabilisation follows the Kubernetes HPA (docs: "Horizontal Pod Autoscaling", stabilization
window): every decision records its recommendation; scaling up goes to the lowest
recommendation of the scale-up window, scaling down to the highest of the scale-down window, so
one quiet tick never removes workers and one noisy tick never adds many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ponder.api.crd import AutoscalingMode, ReasoningServiceSpec
from ponder.operator import queueing

MIN_TOKEN_WEIGHT = 0.25
"""Expected-token weighting never discounts demand below a quarter: a branch holds its slot
for its prompt and the scheduling overhead too, however early it stops."""

MIN_WAIT_PROBABILITY = 0.001
"""The queueing estimate sizes attainmentPercent 100 as 99.9: no finite pool makes every branch's
wait certain under random arrivals."""


@dataclass(frozen=True)
class PolicyConfig:
    """The knobs of the policy, read from a ReasoningService spec."""

    min_replicas: int
    max_replicas: int
    branches_per_worker: float  # target load of one worker, in branches
    max_tokens_per_branch: int
    slo_target_ms: int
    scale_up_at_slo_fraction: float
    scale_up_window_seconds: int
    scale_down_window_seconds: int
    max_scale_up_step: int
    max_scale_up_percent: int
    scale_to_zero: bool
    idle_seconds: int
    slots_per_worker: int = 32  # branches one worker runs at once (the queue's servers)
    slo_attainment: float = 0.95  # share of queries that should meet the target

    @classmethod
    def from_spec(cls, spec: ReasoningServiceSpec) -> PolicyConfig:
        autoscaling = spec.autoscaling
        per_worker = autoscaling.target_queue_per_worker or (
            spec.workers.slots_per_worker * autoscaling.target_utilization_percent / 100
        )
        return cls(
            min_replicas=spec.workers.min_replicas,
            max_replicas=spec.workers.max_replicas,
            branches_per_worker=max(per_worker, 1.0),
            max_tokens_per_branch=spec.budget.max_tokens_per_branch,
            slo_target_ms=spec.slo.target_latency_milliseconds,
            scale_up_at_slo_fraction=autoscaling.scale_up_at_slo_percent / 100,
            scale_up_window_seconds=autoscaling.scale_up_stabilization_seconds,
            scale_down_window_seconds=autoscaling.scale_down_stabilization_seconds,
            max_scale_up_step=autoscaling.max_scale_up_step,
            max_scale_up_percent=autoscaling.max_scale_up_percent,
            scale_to_zero=autoscaling.scale_to_zero.enabled,
            idle_seconds=autoscaling.scale_to_zero.idle_seconds,
            slots_per_worker=spec.workers.slots_per_worker,
            slo_attainment=spec.slo.attainment_percent / 100,
        )


@dataclass(frozen=True)
class Signals:
    """What the autoscaler observed at one tick."""

    at: float  # unix seconds
    current_replicas: int  # the worker Deployment's spec.replicas
    pending_jobs: int = 0  # JetStream consumer num_pending
    ack_pending_jobs: int = 0  # JetStream consumer num_ack_pending (being run)
    scheduler_branches: int | None = None  # outstanding branches the schedulers report
    expected_branch_tokens: int | None = None  # tokens those branches are expected to generate
    p95_latency_ms: int | None = None  # worst p95 of the schedulers
    queries_in_flight: int = 0
    slo_attainment_percent: int | None = None  # the schedulers' share of queries within the SLO
    branches_per_second: float | None = None  # branches the schedulers launch per second
    branch_seconds: float | None = None  # mean seconds a branch holds a worker slot

    @property
    def demand_branches(self) -> int:
        """Branches queued or running. A job holds at least one branch, so the job count is a
        lower bound; the schedulers' count is exact when they report."""
        return max(self.pending_jobs + self.ack_pending_jobs, self.scheduler_branches or 0)

    @property
    def active(self) -> bool:
        return self.demand_branches > 0 or self.queries_in_flight > 0


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int
    observed: bool = False
    """The count the pool had when the autoscaler (re)started, not a recommendation: it holds
    scale-down for a window but never drives a scale-up."""


@dataclass(frozen=True)
class AutoscalerState:
    """What the policy remembers between ticks (kept in operator memory per service)."""

    history: tuple[Recommendation, ...] = ()
    last_active_at: float | None = None
    last_scale_at: float | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick: the replicas to run and why."""

    replicas: int
    current_replicas: int
    reason: str
    state: AutoscalerState = field(repr=False)
    cause: str = "demand"
    """What set the count, in one word (a metric label): demand, latency, attainment, bounds or
    idle."""

    @property
    def changed(self) -> bool:
        return self.replicas != self.current_replicas

    @property
    def message(self) -> str:
        """Event text, e.g. "Scaled workers from 1 to 3: 500 branches queued or running ..."."""
        return f"Scaled workers from {self.current_replicas} to {self.replicas}: {self.reason}"


def token_weight(signals: Signals, max_tokens_per_branch: int) -> float:
    """Expected tokens per outstanding branch over a full branch's budget, in [0.25, 1]."""
    if not signals.expected_branch_tokens or not signals.scheduler_branches:
        return 1.0
    expected_per_branch = signals.expected_branch_tokens / signals.scheduler_branches
    return min(1.0, max(MIN_TOKEN_WEIGHT, expected_per_branch / max_tokens_per_branch))


def raw_recommendation(config: PolicyConfig, signals: Signals) -> tuple[int, list[str], str]:
    """Workers the demand and the SLO call for, before bounds and stabilisation, the reasons
    (the demand's first, then the SLO's) and the cause: demand, or attainment (latency) when the
    queueing estimate for the attainment target (under p95 pressure) raised the count."""
    weight = token_weight(signals, config.max_tokens_per_branch)
    demand = signals.demand_branches * weight
    wanted = math.ceil(demand / config.branches_per_worker - 1e-9)
    reasons = [
        f"{signals.demand_branches} branches queued or running need {wanted} workers"
        f" at {config.branches_per_worker:g} branches each"
    ]
    if weight < 1.0:
        reasons[0] += f" (weighted {weight:.2f} for their expected tokens)"
    cause = "demand"
    if not signals.active:
        return wanted, reasons, cause
    tail = tail_target(config, signals)
    estimate = queueing_estimate(config, signals, tail)
    if estimate is not None:
        needed, how = estimate
    elif tail.pressure is not None and signals.current_replicas > 0:
        # Nothing to size the pool from yet (no branch has reported its slot time): as before
        # the estimate existed, one more worker per decision.
        needed = signals.current_replicas + 1
        how = "one more worker (no arrivals or branch time observed to size the pool)"
    else:
        return wanted, reasons, cause
    if needed > wanted:
        wanted, cause = needed, tail.cause
    reasons.append(f"{tail.pressure}: {how}" if tail.pressure else how)
    return wanted, reasons, cause


@dataclass(frozen=True)
class TailTarget:
    """What the queueing estimate sizes the pool for: no more than `late_share` of branches
    finishing later than `latency_seconds` after they arrive."""

    latency_seconds: float
    late_share: float
    cause: str  # attainment, or latency under p95 pressure
    pressure: str | None = None
    """Why the target is tighter than spec.slo asks (the SLO is missed or about to be)."""


def tail_target(config: PolicyConfig, signals: Signals) -> TailTarget:
    """spec.slo's target (the SLO latency, 1 - attainmentPercent late), tightened while it is
    missed: attainment below target divides the late share by how far the observed misses
    exceed the allowed ones (the model under-counted them by that much); p95 near the SLO sizes
    for the near-SLO latency instead (the scaleUpAtSloPercent share of the target)."""
    allowed = max(MIN_WAIT_PROBABILITY, 1.0 - config.slo_attainment)
    target_percent = round(config.slo_attainment * 100)
    attained = signals.slo_attainment_percent
    if attained is not None and attained < target_percent:
        observed = 1.0 - attained / 100
        return TailTarget(
            config.slo_target_ms / 1000,
            max(MIN_WAIT_PROBABILITY, allowed * allowed / observed),
            "attainment",
            f"SLO attainment {attained}% is below the {target_percent}% target",
        )
    near_slo_ms = config.slo_target_ms * config.scale_up_at_slo_fraction
    if signals.p95_latency_ms is not None and signals.p95_latency_ms >= near_slo_ms:
        return TailTarget(
            near_slo_ms / 1000,
            allowed,
            "latency",
            f"p95 latency {signals.p95_latency_ms} ms is near the {config.slo_target_ms} ms SLO",
        )
    return TailTarget(config.slo_target_ms / 1000, allowed, "attainment")


def queueing_estimate(
    config: PolicyConfig, signals: Signals, tail: TailTarget
) -> tuple[int, str] | None:
    """The workers the observed branch arrivals need for `tail`, and how that was sized; None
    until the schedulers report an arrival rate and a branch's slot time.

    A branch may wait the target latency less its own service time (no wait at all when it is
    longer): Erlang C gives the slots at which no more than the late share wait longer, and
    Little's law at the target utilisation the slots that keep the pool no hotter than asked.
    """
    rate, service = signals.branches_per_second, signals.branch_seconds
    if rate is None or service is None or rate <= 0 or service <= 0:
        return None
    slack = max(0.0, tail.latency_seconds - service)
    slots_limit = config.max_replicas * config.slots_per_worker
    slots = queueing.servers_for_wait(rate, service, slack, tail.late_share, slots_limit)
    by_erlang = math.ceil(slots / config.slots_per_worker)
    load = queueing.offered_load(rate, service)
    by_little = math.ceil(load / config.branches_per_worker - 1e-9)
    workers = max(by_erlang, by_little, 1)
    how = (
        f"{rate:.3g} branches/s x {service:.3g} s = {load:.3g} busy slots need {workers} workers"
        f" (Erlang C: {slots} slots keep P(wait > {slack:.3g} s) <= {tail.late_share:.3g};"
        f" Little's law at {config.branches_per_worker:g} branches each: {by_little})"
    )
    return workers, how


def decide(config: PolicyConfig, signals: Signals, state: AutoscalerState) -> Decision:
    """The replicas the worker pool should run now, the reason, and the state to keep."""
    current = signals.current_replicas
    last_active_at = signals.at if signals.active else state.last_active_at
    if last_active_at is None:
        last_active_at = signals.at  # the idle clock starts when the autoscaler first looks
    wanted, reasons, cause = raw_recommendation(config, signals)

    idle_seconds = signals.at - last_active_at
    if config.scale_to_zero and not signals.active and idle_seconds >= config.idle_seconds:
        new_state = AutoscalerState(
            history=(Recommendation(signals.at, 0),),
            last_active_at=last_active_at,
            last_scale_at=signals.at if current != 0 else state.last_scale_at,
        )
        reason = f"idle for {int(idle_seconds)} s (scaleToZero.idleSeconds {config.idle_seconds})"
        return Decision(0, current, reason, new_state, cause="idle")

    floor = config.min_replicas
    if signals.active:
        floor = max(floor, 1)  # demand never waits on zero workers
    elif config.scale_to_zero and current > 0:
        # Only the idle period takes the last worker away, not the shorter scale-down window.
        floor = max(floor, 1)
    recommended = min(max(wanted, floor), config.max_replicas)
    if recommended != wanted:
        bound = "minReplicas" if recommended > wanted else "maxReplicas"
        reasons.append(f"bounded by {bound} {recommended}")
        cause = "bounds"

    # Seed an empty history with the current count: after an operator restart the pool is not
    # shrunk before a whole scale-down window has been observed.
    history = state.history or (Recommendation(signals.at, current, observed=True),)
    horizon = max(config.scale_up_window_seconds, config.scale_down_window_seconds)
    history = tuple(r for r in history if signals.at - r.at <= horizon)
    history += (Recommendation(signals.at, recommended),)

    up_window = [
        r.replicas
        for r in history
        if signals.at - r.at <= config.scale_up_window_seconds and not r.observed
    ]
    down_window = [
        r.replicas for r in history if signals.at - r.at <= config.scale_down_window_seconds
    ]
    desired = current
    if desired < min(up_window):
        desired = min(up_window)
    if desired > max(down_window):
        desired = max(down_window)
    if recommended < current and desired > recommended:
        reasons.append(
            f"scale-down to {recommended} waits for the"
            f" {config.scale_down_window_seconds} s stabilisation window"
        )

    step = max(config.max_scale_up_step, math.ceil(current * config.max_scale_up_percent / 100))
    if desired > current + step:
        desired = current + step
        reasons.append(f"scale-up limited to {step} workers per decision")
    # Bounds win over stabilisation: a raised minReplicas or lowered maxReplicas applies now.
    desired = min(max(desired, floor), config.max_replicas)
    if desired < current and desired == max(down_window):
        reasons.append(f"no higher recommendation for {config.scale_down_window_seconds} s")

    new_state = replace(
        state,
        history=history,
        last_active_at=last_active_at,
        last_scale_at=signals.at if desired != current else state.last_scale_at,
    )
    return Decision(desired, current, "; ".join(reasons), new_state, cause=cause)


def held_replicas(
    spec: ReasoningServiceSpec,
    remembered: int | None,
    status_desired: int | None,
    current: int | None,
) -> int:
    """The worker count to apply between autoscaler decisions, so that a reconcile never fights
    the autoscaler (Builtin) or whatever writes the scale subresource (External).

    Builtin: the last decision this process made, else the one recorded in status (after a
    restart), else the Deployment's count, else minReplicas; kept inside the current bounds.
    External: spec.workers.replicas, else the Deployment's count, else minReplicas.
    """
    workers = spec.workers
    if spec.autoscaling.mode == AutoscalingMode.EXTERNAL:
        if workers.replicas is not None:
            return workers.replicas
        return current if current is not None else workers.min_replicas
    for candidate in (remembered, status_desired, current):
        if candidate is not None:
            base = candidate
            break
    else:
        base = workers.min_replicas
    floor = 0 if spec.autoscaling.scale_to_zero.enabled and base == 0 else workers.min_replicas
    return min(max(base, floor), workers.max_replicas)
