"""Who may query this scheduler, at the ASGI edge: API keys and their limits.

`AccessGate` holds the service's key table (`ponder.scheduler.auth`), read from the mounted
Secret's file at start and again whenever the file changes (checked every `reload_seconds`;
Kubernetes swaps a Secret volume's files atomically), so keys rotate without a restart. A file
that cannot be read or parsed at start leaves the service closed (every query a 503 that says
why, never open); one that breaks later leaves the last good table in force, and the log says so.

`Access` is the outermost middleware: a request to `/v1/` is authenticated and admitted by its
key's limits before its body is read (401, 403, 429 with `Retry-After`, nothing queued); the
admission rides in the request's state, the route charges it the tokens the query generated,
and it is released when the response has been sent. Health, readiness and metrics stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ponder.api.service_config import AuthConfig, AuthMode
from ponder.scheduler.auth import Grant, KeyTable, TenantLimiter, authenticate, parse_keys
from ponder.scheduler.limits import refuse
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.scheduler.request_bounds import Refusal

log = logging.getLogger(__name__)

ADMISSION = "ponder_admission"
"""Key of the request's `Admission` in the ASGI scope's state (`request.state`)."""
GUARDED_PREFIX = "/v1/"


@dataclass
class Admission:
    """One admitted request: its key's grant (None on an open service) and what it spent."""

    grant: Grant | None
    limiter: TenantLimiter
    metrics: SchedulerMetrics
    tokens: int = 0
    released: bool = False

    def charge(self, tokens: int) -> None:
        """Count `tokens` generated for this request against its key."""
        self.tokens += max(0, tokens)

    def release(self, now: float) -> None:
        if self.released:
            return
        self.released = True
        if self.grant is not None:
            self.limiter.finish(self.grant, self.tokens, now)
            if self.tokens:
                self.metrics.tenant_tokens.labels(tenant=self.grant.tenant).inc(self.tokens)


class AccessGate:
    """The key table of one service and the usage of each key."""

    def __init__(self, config: AuthConfig, service: str, metrics: SchedulerMetrics) -> None:
        self.config = config
        self.service = service
        self.metrics = metrics
        self.limiter = TenantLimiter()
        self.table: KeyTable | None = None
        self.problem: str | None = None
        self._digest: str | None = None

    @property
    def open(self) -> bool:
        return self.config.mode is AuthMode.NONE

    async def reload(self) -> None:
        """Read the keys file again; a new table replaces the old only when it parses."""
        if self.open or self.config.keys_file is None:
            return
        path = Path(self.config.keys_file)
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError as error:
            self._broken(f"the keys file {path} cannot be read ({error.strerror})")
            return
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return
        try:
            table = parse_keys(text)
        except ValueError as error:
            self._broken(str(error))
            return
        self.table, self.problem, self._digest = table, None, digest
        log.info("loaded %d API keys from %s", len(table.grants), path)

    def _broken(self, problem: str) -> None:
        if problem != self.problem:
            kept = " (the keys loaded before stay in force)" if self.table else ""
            log.error("%s%s", problem, kept)
        self.problem = problem

    async def watch(self) -> None:
        """Reload every `reload_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(self.config.reload_seconds)
            await self.reload()

    def admit(self, authorization: str | None, now: float) -> Admission | Refusal:
        if self.open:
            return Admission(grant=None, limiter=self.limiter, metrics=self.metrics)
        if self.table is None:
            return Refusal(
                503,
                None,
                "authentication is unavailable: the service's API keys could not be loaded "
                "(the scheduler's log says why)",
                "auth_unavailable",
            )
        grant = authenticate(authorization, self.table, self.service)
        if isinstance(grant, Refusal):
            return grant
        refused = self.limiter.admit(grant, now)
        if refused is not None:
            return refused
        return Admission(grant=grant, limiter=self.limiter, metrics=self.metrics)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load the keys and keep them fresh while the block runs."""
        await self.reload()
        if self.open:
            yield
            return
        watcher = asyncio.create_task(self.watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class Access:
    """ASGI middleware: authenticate and admit every `/v1/` request (see the module)."""

    def __init__(self, app: ASGIApp, gate: AccessGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        decision = self.gate.admit(_header(scope, b"authorization"), time.monotonic())
        if isinstance(decision, Refusal):
            self.gate.metrics.requests_refused.labels(code=decision.code).inc()
            await refuse(decision, scope, receive, send)
            return
        scope.setdefault("state", {})[ADMISSION] = decision
        try:
            await self.app(scope, receive, send)
        finally:
            decision.release(time.monotonic())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
