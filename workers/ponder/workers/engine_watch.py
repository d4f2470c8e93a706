"""Whether this worker's engine is up; the pull loop takes no job while it is down.

A dead vLLM would otherwise fail every job the worker fetched: each comes back after the
retry delay and burns one of its deliveries until it is dead-lettered, while a worker with a
live engine could have run it. So the worker checks its engine's `/health` every
`interval_seconds`, and at once when an engine call finds the engine unavailable.

An engine that refuses the connection or answers an error is down after
`DOWN_AFTER_FAILED_CHECKS` such checks in a row, or one that confirms a failed engine call. An
engine that does not answer within the check's timeout may only be busy (a loaded CPU engine
answers late, and a paused one holds its requests): it is down once it has been silent for
`WEDGED_SECONDS`, the kubelet's probe of the engine container restarting it meanwhile. The
first good answer marks it up. While it is down the consumer stops fetching (`wait_up`), the
jobs wait in the stream for the other workers (and count in the autoscaler's backlog),
`/healthz` says why, and `ponder_worker_engine_up` is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ponder.workers.engine import EngineHealth

log = logging.getLogger(__name__)

DOWN_AFTER_FAILED_CHECKS = 2
WEDGED_SECONDS = 30.0
CHECK_INTERVAL_SECONDS = 2.0

HealthCheck = Callable[[], Awaitable[EngineHealth]]


@dataclass(frozen=True)
class EngineState:
    """What the checks so far say: up or down, the failures in a row (and since when), the
    last problem."""

    up: bool = True
    failures: int = 0
    failing_since: float | None = None
    problem: str | None = None


def after_check(
    state: EngineState, health: EngineHealth, now: float, *, suspected: bool = False
) -> EngineState:
    """The state after one check at `now` (monotonic seconds) that found `health`;
    `suspected`: the check was run because an engine call had just found the engine
    unavailable. Pure."""
    if health.problem is None:
        return EngineState()
    failures = state.failures + 1
    since = now if state.failing_since is None else state.failing_since
    if health.silent:
        down = now - since >= WEDGED_SECONDS
    else:
        down = suspected or failures >= DOWN_AFTER_FAILED_CHECKS
    return EngineState(
        up=state.up and not down, failures=failures, failing_since=since, problem=health.problem
    )


class EngineWatch:
    """The engine's state, kept by `run()`; `wait_up` holds the pull loop while it is down."""

    def __init__(
        self,
        check: HealthCheck,
        *,
        interval_seconds: float = CHECK_INTERVAL_SECONDS,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._check = check
        self.interval_seconds = interval_seconds
        self._on_change = on_change
        self.state = EngineState()
        self._up = asyncio.Event()
        self._up.set()
        self._wake = asyncio.Event()

    @property
    def up(self) -> bool:
        return self.state.up

    def suspect(self) -> None:
        """An engine call found the engine unavailable: check now rather than at the tick."""
        self._wake.set()

    async def wait_up(self, stop: asyncio.Event) -> bool:
        """Return once the engine is up (True) or `stop` is set (False)."""
        if self._up.is_set():
            return True
        up = asyncio.ensure_future(self._up.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({up, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            stopped.cancel()
        return self._up.is_set() and not stop.is_set()

    async def check_once(self, *, suspected: bool = False) -> None:
        """Run one check and record what it found."""
        before = self.state
        health = await self._check()
        self.state = after_check(before, health, time.monotonic(), suspected=suspected)
        if before.up and not self.state.up:
            log.warning("engine down, taking no jobs: %s", self.state.problem)
            self._up.clear()
        elif self.state.up and not before.up:
            log.info("engine back up, taking jobs again")
            self._up.set()
        if before.up != self.state.up and self._on_change is not None:
            self._on_change(self.state.up)

    async def run(self) -> None:
        """Check every interval (or when suspected), forever."""
        suspected = False
        while True:
            self._wake.clear()
            await self.check_once(suspected=suspected)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_seconds)
            suspected = self._wake.is_set()
