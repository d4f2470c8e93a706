"""Whether a job's scheduler is still there to read its results.

A scheduler that died (SIGKILL, OOM, a lost node) leaves its queries' jobs queued and running,
and without this every one of them would be generated to the end for answers nobody reads.
Each scheduler replica answers requests on its liveness subject (`ServiceSubjects.alive`);
when no replica listens there, the NATS server itself answers "no responders" at once, so a
probe tells a dead scheduler from a live one in one round trip to the server, however busy the
scheduler is (a live one that is slow to answer is a timeout: taken as alive).

A scheduler is taken as gone after `CONFIRMATIONS` "no responders" answers in a row, at least
`recheck_seconds` apart (a single one may be a scheduler reconnecting to NATS), and that
verdict is trusted for `GONE_SECONDS`; after that it is probed again, so a scheduler that comes
back under the same id (a local restart) is served again. Kubernetes schedulers are named after
their pods, so a replaced pod is a new id anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NatsClient

from ponder.api.subjects import ServiceSubjects

log = logging.getLogger(__name__)

CONFIRMATIONS = 2
GONE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass
class _Seen:
    probed_at: float = float("-inf")
    no_responders: int = 0  # in a row
    gone_since: float | None = None


class SchedulerLiveness:
    """Probes and remembers which schedulers of one service are gone."""

    def __init__(
        self, nc: NatsClient, subjects: ServiceSubjects, *, recheck_seconds: float = 1.0
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.recheck_seconds = recheck_seconds
        self._seen: dict[str, _Seen] = {}

    def gone(self, reply_subject: str, now: float | None = None) -> bool:
        """The scheduler of `reply_subject` was found gone lately (no probe: the cache)."""
        scheduler_id = self.subjects.scheduler_of_inbox(reply_subject)
        seen = self._seen.get(scheduler_id) if scheduler_id else None
        if seen is None or seen.gone_since is None:
            return False
        return (time.monotonic() if now is None else now) - seen.gone_since <= GONE_SECONDS

    async def before_start(self, reply_subject: str) -> bool:
        """Whether to drop a job of `reply_subject` instead of running it: its scheduler was
        found gone lately, or was gone before and still is (asked again, a round trip to the
        server); a scheduler never found gone costs nothing here."""
        if self.gone(reply_subject):
            return True
        scheduler_id = self.subjects.scheduler_of_inbox(reply_subject)
        seen = self._seen.get(scheduler_id) if scheduler_id else None
        if seen is None or seen.gone_since is None:
            return False
        await self.probe(reply_subject, force=True)
        return self.gone(reply_subject)

    async def probe(self, reply_subject: str, *, force: bool = False) -> None:
        """Ask whether the scheduler of `reply_subject` is there, unless it was asked lately."""
        scheduler_id = self.subjects.scheduler_of_inbox(reply_subject)
        if scheduler_id is None:
            return
        seen = self._seen.setdefault(scheduler_id, _Seen())
        now = time.monotonic()
        if not force and now - seen.probed_at < self.recheck_seconds:
            return
        seen.probed_at = now
        try:
            await self.nc.request(
                self.subjects.alive(scheduler_id), b"", timeout=PROBE_TIMEOUT_SECONDS
            )
        except nats.errors.NoRespondersError:
            seen.no_responders += 1
            if seen.no_responders >= CONFIRMATIONS and seen.gone_since is None:
                seen.gone_since = time.monotonic()
                log.info("scheduler %s is gone: dropping its jobs", scheduler_id)
            elif seen.gone_since is not None:
                seen.gone_since = time.monotonic()  # still gone: trust it a while longer
            return
        except Exception as error:  # a timeout or a NATS hiccup says nothing: keep working
            log.debug("liveness probe of scheduler %s: %r", scheduler_id, error)
            return
        seen.no_responders = 0
        seen.gone_since = None

    async def probe_all(self, reply_subjects: set[str]) -> None:
        """Probe the schedulers of `reply_subjects` at once."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*(self.probe(subject) for subject in reply_subjects))
