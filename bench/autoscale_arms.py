"""The three arms of the autoscaling simulation: Ponder's policy, a static pool, a KEDA-style rule.

- `PonderArm` runs the operator's own code every tick: the scheduler's stats message combined
  by `ponder.operator.signals.summarize`, turned into the policy's signals by
  `ponder.operator.decide.signals_from`, decided by `ponder.operator.policy.decide`.
- `StaticArm` keeps its pool from start to end.
- `KedaArm` is what a KEDA ScaledObject on the job stream does through an HPA:
  desired = ceil(queue length / target per replica), queue length being the branches waiting
  or running (the consumer's pending + ack-pending), under the HPA's defaults (Kubernetes docs,
  "Horizontal Pod Autoscaling"): a 10 % tolerance, scale-up by at most max(4 pods, 100 %) per
  15 s period, scale-down to the highest recommendation of the last 300 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.autoscale_pool import Arm, Observed
from ponder.api.crd import ReasoningServiceSpec
from ponder.operator import policy
from ponder.operator.decide import signals_from
from ponder.operator.signals import summarize
from ponder.operator.snapshot import Backlog


class StaticArm(Arm):
    """A pool of `workers` that never changes."""

    tick_seconds = None

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.name = f"static {workers}"

    def initial_replicas(self) -> int:
        return self.workers

    def desired(self, observed: Observed) -> int:
        return self.workers


class PonderArm(Arm):
    """The operator's autoscaling policy, fed as the operator feeds it."""

    name = "ponder"

    def __init__(self, spec: ReasoningServiceSpec, initial: int, tick_seconds: float) -> None:
        self.config = policy.PolicyConfig.from_spec(spec)
        self.state = policy.AutoscalerState()
        self.initial = initial
        self.tick_seconds = tick_seconds
        self._causes: dict[str, int] = {}

    def initial_replicas(self) -> int:
        return self.initial

    def desired(self, observed: Observed) -> int:
        backlog = Backlog(observed.pending_branches, observed.running_branches)
        signals = signals_from(observed.at, observed.replicas, backlog, summarize([observed.stats]))
        decision = policy.decide(self.config, signals, self.state)
        self.state = decision.state
        if decision.changed:
            self._causes[decision.cause] = self._causes.get(decision.cause, 0) + 1
        return decision.replicas

    def causes(self) -> dict[str, int]:
        return dict(self._causes)


@dataclass(frozen=True)
class HpaBehaviour:
    """The HPA's default behaviour, which a KEDA ScaledObject inherits."""

    tolerance: float = 0.1
    scale_up_pods: int = 4
    scale_up_percent: int = 100
    scale_down_window_seconds: float = 300.0


def queue_depth_recommendation(
    queue_length: int, target_per_replica: float, current: int, tolerance: float
) -> int:
    """desired = ceil(queue length / target per replica), unless the ratio of the metric to
    its target is within the tolerance of 1 (then the current count stays)."""
    wanted = math.ceil(queue_length / target_per_replica - 1e-9)
    if current > 0 and abs(queue_length / (target_per_replica * current) - 1) <= tolerance:
        return current
    return wanted


class KedaArm(Arm):
    """A KEDA queue-depth trigger on the job stream, scaled by an HPA with default behaviour."""

    name = "keda"

    def __init__(
        self,
        target_per_replica: float,
        min_replicas: int,
        max_replicas: int,
        initial: int,
        tick_seconds: float = 15.0,
        behaviour: HpaBehaviour = HpaBehaviour(),
    ) -> None:
        self.target = target_per_replica
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.initial = initial
        self.tick_seconds = tick_seconds
        self.behaviour = behaviour
        self._history: list[tuple[float, int]] = []

    def initial_replicas(self) -> int:
        return self.initial

    def desired(self, observed: Observed) -> int:
        behaviour, current = self.behaviour, observed.replicas
        queue = observed.pending_branches + observed.running_branches
        wanted = queue_depth_recommendation(queue, self.target, current, behaviour.tolerance)
        wanted = min(max(wanted, self.min_replicas), self.max_replicas)
        horizon = observed.at - behaviour.scale_down_window_seconds
        self._history = [(at, r) for at, r in self._history if at > horizon]
        self._history.append((observed.at, wanted))
        if wanted < current:
            return max(wanted, min(current, max(r for _, r in self._history)))
        step = max(behaviour.scale_up_pods, math.ceil(current * behaviour.scale_up_percent / 100))
        return min(wanted, current + step)
