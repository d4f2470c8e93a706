"""Reconcile passes in flight, so that the liveness endpoint fails when the loop is stuck.

A pass waits for its service's lock and a reconcile slot, then talks to the API server and
NATS, each bounded in time; none takes minutes. One that has been in flight for
`STUCK_PASS_SECONDS` is stuck (a lock never released, a call that never returns), and the
operator no longer converges anything behind it while `/healthz` would still answer 200. The
probe (`handlers.on_probe`) fails then, so the kubelet restarts the operator.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

STUCK_PASS_SECONDS = 300.0

ServiceKey = tuple[str, str]


@dataclass(frozen=True)
class OldestPass:
    """The pass in flight longest: its service, what started it, and for how long."""

    service: ServiceKey
    trigger: str
    seconds: float


def stuck_problem(oldest: OldestPass | None, limit_seconds: float) -> str | None:
    """Why the loop counts as stuck, or None; pure."""
    if oldest is None or oldest.seconds < limit_seconds:
        return None
    namespace, name = oldest.service
    return (
        f"a {oldest.trigger} pass of {namespace}/{name} has been in flight for "
        f"{oldest.seconds:.0f} s (stuck after {limit_seconds:.0f} s)"
    )


@dataclass
class PassesInFlight:
    """The passes running now, by a token each, with when they began (monotonic)."""

    _running: dict[int, tuple[ServiceKey, str, float]] = field(default_factory=dict)
    _tokens: Iterator[int] = field(default_factory=itertools.count)

    @contextlib.contextmanager
    def track(self, service: ServiceKey, trigger: str) -> Iterator[None]:
        """Count the block as a pass of `service` in flight."""
        token = next(self._tokens)
        self._running[token] = (service, trigger, time.monotonic())
        try:
            yield
        finally:
            del self._running[token]

    def oldest(self, now: float | None = None) -> OldestPass | None:
        """The pass in flight longest, or None when none is."""
        if not self._running:
            return None
        service, trigger, began = min(self._running.values(), key=lambda entry: entry[2])
        at = time.monotonic() if now is None else now
        return OldestPass(service=service, trigger=trigger, seconds=max(0.0, at - began))
