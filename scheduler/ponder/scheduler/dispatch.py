"""The scheduler's NATS edge: publish branch jobs, route branch results, publish cancels.

One `Dispatcher` per scheduler replica shares one NATS connection among all queries:
- jobs go to the service's JetStream jobs subject with `Nats-Msg-Id: <job_id>`, so a publish
  retried after a lost PubAck is dropped by the server instead of running twice;
- results arrive on this replica's core NATS inbox `results.<scheduler-id>`, one
  `BranchResults` message per job, and are routed to the `QueryCollector` of their query. A
  redelivered job reports its branches again: the first terminal result of a branch wins, later
  ones are counted and dropped; a job that streams its text sends `BranchPartial`s on the
  same inbox while it generates, routed to the collector's text watcher of that branch;
- cancels go to the core NATS cancel subject, which every worker listens to.
A message on the inbox that is neither a valid `BranchResults` nor a `BranchPartial` is logged
and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from opentelemetry.context import Context
from pydantic import ValidationError

from ponder.api import tracing
from ponder.api.priority import Priority
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import (
    INBOX_MESSAGE,
    BranchJob,
    BranchPartial,
    BranchResult,
    CancelMessage,
)
from ponder.scheduler.metrics import SchedulerMetrics

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"


class DispatchError(Exception):
    """Jobs could not be queued (JetStream unavailable, stream full, no PubAck in time). Its
    message is for the client: no subject, no exception; the cause is chained for the log."""


class JobTooLarge(DispatchError):
    """A job is larger than NATS takes in one message: the request is too large, whatever
    happens to the queue. Nothing of the request was published."""


JOB_HEADROOM_BYTES = 512
"""NATS counts a message's headers (`Nats-Msg-Id`, ...) in its max_payload too."""

NO_LEADER_RETRY_SECONDS = 0.25
"""Pause before jobs that found no stream leader are published again (within the timeout)."""


class QueryCollector:
    """The results of one query's branches, first terminal result per branch, in arrival order.

    Holds at most one result per branch the query launched, so its queue is bounded by the
    query's own branch count.
    """

    def __init__(self, query_id: str) -> None:
        self.query_id = query_id
        self._expected: set[str] = set()
        self._reported: set[str] = set()
        self._arrived: list[BranchResult] = []
        self._wakeup = asyncio.Event()
        self._watchers: dict[str, tuple[Callable[[str], None], int]] = {}  # -> (on_text, offset)
        self.duplicates = 0

    def expect(self, branch_ids: Iterable[str]) -> None:
        """Announce branches before their jobs are published (a result may beat the PubAck)."""
        self._expected.update(branch_ids)

    @property
    def outstanding(self) -> set[str]:
        """Branches launched whose result has not arrived."""
        return self._expected - self._reported

    def offer(self, result: BranchResult) -> bool:
        """Take a result; False (and dropped) when it is a duplicate or not one of ours."""
        taken = self._take(result)
        if taken:
            self._wakeup.set()
        return taken

    def offer_all(self, results: Iterable[BranchResult]) -> None:
        """`offer` each of `results` (a job's results message), waking the query once."""
        taken = [self._take(result) for result in results]
        if any(taken):
            self._wakeup.set()

    def _take(self, result: BranchResult) -> bool:
        if result.branch_id not in self._expected:
            return False
        if result.branch_id in self._reported:
            self.duplicates += 1
            return False
        self._reported.add(result.branch_id)
        self._watchers.pop(result.branch_id, None)
        self._arrived.append(result)
        return True

    def watch_text(self, branch_id: str, on_text: Callable[[str], None]) -> None:
        """Call `on_text` with each piece of text branch `branch_id` generates, in order, while
        it runs (its job must ask for partials). A gap (a lost partial) ends the watch."""
        self._watchers[branch_id] = (on_text, 0)

    def offer_partial(self, partial: BranchPartial) -> None:
        """Hand a partial to its branch's watcher, if it is the next piece of its text and the
        branch has not reported."""
        watched = self._watchers.get(partial.branch_id)
        if watched is None or partial.branch_id in self._reported:
            return
        on_text, offset = watched
        if partial.offset != offset:
            del self._watchers[partial.branch_id]  # a gap: the result will carry the text
            return
        self._watchers[partial.branch_id] = (on_text, offset + len(partial.text))
        on_text(partial.text)

    def drain(self) -> list[BranchResult]:
        """Every result that arrived and was not taken yet, in arrival order."""
        batch, self._arrived = self._arrived, []
        self._wakeup.clear()
        return batch

    async def next_batch(self) -> list[BranchResult]:
        """Wait for at least one result; return it with every other one already here."""
        while not self._arrived:
            await self._wakeup.wait()
        return self.drain()


async def _answer_alive(msg: Msg) -> None:
    with contextlib.suppress(Exception):  # the asker gives up after its timeout
        await msg.respond(b"")


class Dispatcher:
    """Branch traffic of one scheduler replica over one NATS connection."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: ServiceSubjects,
        scheduler_id: str,
        metrics: SchedulerMetrics | None = None,
        publish_timeout_seconds: float = 5.0,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=publish_timeout_seconds)
        self.subjects = subjects
        self.scheduler_id = scheduler_id
        self.metrics = metrics
        self.publish_timeout_seconds = publish_timeout_seconds
        self._collectors: dict[str, QueryCollector] = {}
        self._subscription: Subscription | None = None
        self._alive: Subscription | None = None
        self.late_results = 0

    @property
    def reply_subject(self) -> str:
        return self.subjects.results(self.scheduler_id)

    async def start(self) -> None:
        """Subscribe to this replica's results inbox, and answer on its liveness subject
        (workers drop the jobs of a scheduler that no longer answers)."""
        self._subscription = await self.nc.subscribe(self.reply_subject, cb=self._on_result)
        self._alive = await self.nc.subscribe(
            self.subjects.alive(self.scheduler_id), cb=_answer_alive
        )
        await self.nc.flush()

    async def stop(self) -> None:
        for subscription in (self._alive, self._subscription):
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        self._subscription = self._alive = None

    @contextlib.contextmanager
    def collector(self, query_id: str) -> Iterator[QueryCollector]:
        """Route the results of `query_id` to a new collector while the block runs."""
        if query_id in self._collectors:
            raise ValueError(f"query {query_id} is already collecting")
        collector = QueryCollector(query_id)
        self._collectors[query_id] = collector
        try:
            yield collector
        finally:
            del self._collectors[query_id]
            if self.metrics is not None and collector.duplicates:
                self.metrics.branches_redelivered.inc(collector.duplicates)

    async def publish_jobs(
        self,
        jobs: Sequence[BranchJob],
        timeout_seconds: float,
        trace_context: Context | None = None,
        priority: Priority = Priority.STANDARD,
    ) -> None:
        """Queue `jobs` on JetStream, all at once, on their priority class's subject, and wait
        for every PubAck; each message's headers carry `trace_context` (W3C `traceparent`)
        while tracing is on.

        Raises DispatchError when any was not stored within `timeout_seconds`, JobTooLarge
        (before publishing any) when one is larger than the server takes.
        """
        payloads = [job.model_dump_json().encode() for job in jobs]
        largest = max((len(payload) for payload in payloads), default=0)
        limit = self.nc.max_payload - JOB_HEADROOM_BYTES
        if largest > limit:
            raise JobTooLarge(
                f"the request makes branch jobs of {largest} bytes, over the {limit} bytes the "
                "job queue takes in one message (NATS max_payload, less headers): shorten the "
                "prompt or the messages"
            )
        traced: dict[str, str] = {}
        tracing.inject(traced, trace_context)
        unacked = list(zip(jobs, payloads, strict=True))
        leaderless = False
        try:
            async with asyncio.timeout(timeout_seconds):
                while unacked:
                    acks = [
                        await self.js.publish_async(
                            self.subjects.jobs_of(priority),
                            payload,
                            headers={**traced, MSG_ID_HEADER: job.job_id},
                        )
                        for job, payload in unacked
                    ]
                    outcomes = await asyncio.gather(*acks, return_exceptions=True)
                    refused = [o for o in outcomes if isinstance(o, BaseException)]
                    if any(not isinstance(o, NoStreamResponseError) for o in refused):
                        raise next(o for o in refused if not isinstance(o, NoStreamResponseError))
                    # No server answered for the stream: on a JetStream cluster its leader died
                    # and the other replicas are electing another (seconds). Publish those jobs
                    # again until the timeout; the job id as Nats-Msg-Id makes it safe, a copy
                    # that was stored after all is dropped as a duplicate.
                    unacked = [
                        item
                        for item, outcome in zip(unacked, outcomes, strict=True)
                        if isinstance(outcome, NoStreamResponseError)
                    ]
                    leaderless = leaderless or bool(unacked)
                    if unacked:
                        await asyncio.sleep(NO_LEADER_RETRY_SECONDS)
        except TimeoutError as error:
            why = " (no stream leader answered)" if leaderless else ""
            raise DispatchError(
                f"the job queue did not acknowledge the jobs within {timeout_seconds:.3g} s{why}"
            ) from error
        except Exception as error:
            raise DispatchError("the job queue refused the jobs") from error

    async def cancel(self, query_id: str, branch_ids: Sequence[str], reason: str) -> None:
        """Tell every worker to stop these branches of `query_id` (best effort, never raises)."""
        message = CancelMessage(query_id=query_id, branch_ids=list(branch_ids), reason=reason)
        try:
            await self.nc.publish(self.subjects.cancel, message.model_dump_json().encode())
        except Exception as error:
            log.warning("publishing the cancel of query %s failed: %r", query_id, error)

    async def _on_result(self, msg: Msg) -> None:
        try:
            batch = INBOX_MESSAGE.validate_json(msg.data)
        except ValidationError as error:
            log.warning("dropping malformed results on %s: %s", msg.subject, _first_error(error))
            if self.metrics is not None:
                self.metrics.results_malformed.inc()
            return
        collector = self._collectors.get(batch.query_id)
        if isinstance(batch, BranchPartial):
            if collector is not None:  # a partial after the answer is only moot
                collector.offer_partial(batch)
            return
        if collector is None:
            # The query already answered (a cancelled branch reporting back after the usage
            # settle time, a redelivery): its tokens were spent all the same.
            self.late_results += len(batch.results)
            if self.metrics is not None:
                prompt = sum(result.prompt_tokens for result in batch.results)
                completion = sum(result.completion_tokens for result in batch.results)
                self.metrics.late_tokens.labels(kind="prompt").inc(prompt)
                self.metrics.late_tokens.labels(kind="completion").inc(completion)
            return
        collector.offer_all(batch.results)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return f"{where}: {first['msg']} ({error.error_count()} problems)"
