"""Runs one query: strategy decisions in, branch jobs out, results back in, until an answer.

    strategy.begin() -> jobs on JetStream -> results from the collector -> extract + score ->
    strategy.on_branch() -> Wait | Launch (more jobs) | Finish

The query ends when the strategy finishes, when nothing is outstanding (the strategy's best so
far answers), or at the deadline (best so far, `deadline_exceeded`). On the way out every branch
still outstanding is cancelled on NATS, whatever ended the query (an answer, the deadline, an
error, the client going away), and the runner waits up to `usage_settle_seconds` for the
cancelled branches to report what they generated, so that `usage` counts every token spent
(what reports later is counted in `ponder_late_tokens_total`). Every other wait is bounded by
the plan's deadline; every task this module starts is owned by a task group inside the query.

A streaming client gets `progress` events (`progress.py`) as they happen: each launch once its
jobs are queued, each branch result, each change of the leading answer, and the answer's text,
live from the branch that answers where the strategy marks one (`streams_answer`), else as soon
as the strategy finishes, before the cancelled branches settle. Nothing is emitted before the
first launch is queued, so a query the queue refuses still answers with its error status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.context import Context

from ponder.api.answers import extract_answer
from ponder.api.wire import BranchResult, BranchStatus
from ponder.scheduler.dispatch import Dispatcher, DispatchError, JobTooLarge, QueryCollector
from ponder.scheduler.jobs import JobContext, branch_id, build_jobs, streams_text
from ponder.scheduler.load import LoadTracker
from ponder.scheduler.metrics import BranchEvent, SchedulerMetrics
from ponder.scheduler.outcome import QueryOutcome, why_no_answer
from ponder.scheduler.planner import Plan
from ponder.scheduler.progress import ProgressSink, WaveLaunched
from ponder.scheduler.progress_feed import ProgressFeed
from ponder.scheduler.query_trace import QueryTrace
from ponder.scheduler.strategies.base import (
    BranchRequest,
    FinalAnswer,
    Finish,
    Launch,
    ScoredBranch,
    ScoreMode,
    Strategy,
)
from ponder.scheduler.verifiers import Verifier, VerifierError, verifier_input

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0
"""Longest wait for JetStream's PubAcks of one launch (never past the deadline): past the 4-9 s
that an R3 stream's Raft waits before it elects a new leader, so a query queued while its
stream has none waits for the election instead of failing."""


LATE_WARNING_SECONDS = 0.1
"""Answering this much past the deadline is logged as a warning."""

BRANCH_EVENTS = {
    BranchStatus.COMPLETED: BranchEvent.COMPLETED,
    BranchStatus.FAILED: BranchEvent.FAILED,
    BranchStatus.CANCELLED: BranchEvent.CANCELLED,
    BranchStatus.EXPIRED: BranchEvent.CANCELLED,
}
"""How a branch's final status is counted in `ponder_branches_total{event}`."""


@dataclass(frozen=True)
class RunnerDeps:
    """What every query of one scheduler shares."""

    dispatcher: Dispatcher
    model: str
    load: LoadTracker
    metrics: SchedulerMetrics | None = None
    verifier: Verifier | None = None
    usage_settle_seconds: float = 0.0
    """How long to wait after an answer for the cancelled branches' results (their tokens)."""


class QueryRunner:
    """One query's run; use once."""

    def __init__(
        self,
        plan: Plan,
        strategy: Strategy,
        deps: RunnerDeps,
        *,
        ignore_eos: bool = False,
        progress: ProgressSink | None = None,
        trace_parent: Context | None = None,
    ) -> None:
        self.plan = plan
        self.query = plan.query
        self.strategy = strategy
        self.deps = deps
        self.ignore_eos = ignore_eos
        self.feed = ProgressFeed(progress)
        self._requests: dict[str, BranchRequest] = {}  # branch id -> the request that launched it
        self._fed = 0  # branches handed to the strategy
        self._dispatch_error: DispatchError | None = None
        self._deadline_loop = 0.0
        self.outcome = QueryOutcome(plan=plan, answer=None)
        self.trace = QueryTrace(plan, deps.model, trace_parent)

    @property
    def progress(self) -> ProgressSink | None:
        """Where the query's progress events go (set before `run`; None: nowhere)."""
        return self.feed.sink

    @progress.setter
    def progress(self, sink: ProgressSink | None) -> None:
        self.feed.sink = sink

    async def run(self) -> QueryOutcome:
        """Run to an answer, the deadline or a failure; never raises for those."""
        self.trace.start()
        try:
            return await self._run()
        except asyncio.CancelledError:
            self.trace.cancelled()
            raise
        finally:
            self.trace.finish(self.outcome)

    async def _run(self) -> QueryOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A query that found the pool cold also waits out the hold for a worker to start.
        deadline_seconds = self.plan.wait_ms / 1000.0
        self._deadline_loop = started + deadline_seconds
        context = JobContext(
            query=self.query,
            model=self.deps.model,
            reply_subject=self.deps.dispatcher.reply_subject,
            deadline_at=time.time() + deadline_seconds,
            branches_per_job=self.plan.branches_per_job,
            ignore_eos=self.ignore_eos,
            logprobs=self.deps.verifier is not None and self.deps.verifier.needs_logprobs,
            partials=self.feed.live,
        )
        outcome = self.outcome
        answered_after = deadline_seconds
        self.deps.load.query_started()
        with self.deps.dispatcher.collector(self.query.query_id) as collector:
            try:
                try:
                    async with asyncio.timeout_at(self._deadline_loop) as timer:
                        answer = await self._drive(collector, context)
                except TimeoutError:
                    if not timer.expired():
                        raise
                    outcome.deadline_exceeded = True
                    answer = self.strategy.best_so_far()
                outcome.answer = answer
                if answer is not None:
                    # Out before the cancelled branches settle: only `usage` waits for them.
                    self.feed.answered(answer.text)
            finally:
                # Results that arrived but were not handed to the strategy still count.
                outcome.branches.extend(self._reported(self._receive(collector.drain())))
                answered_after = loop.time() - started
                await self._cancel_outstanding(collector, outcome)
                await self._collect_cancelled(collector, outcome)
                self.deps.load.query_finished()
                outcome.latency_seconds = loop.time() - started
        if outcome.answer is None:
            outcome.no_answer_reason, outcome.no_answer_detail = self._why_no_answer()
        late = answered_after - deadline_seconds  # the usage settle time aside
        if late > LATE_WARNING_SECONDS:
            # The deadline timer fired late: this process did not get the CPU in time.
            log.warning(
                "query %s answered %.0f ms after its deadline of %d ms (event loop overloaded?)",
                self.query.query_id,
                late * 1000,
                self.plan.wait_ms,
            )
        return outcome

    async def _drive(self, collector: QueryCollector, context: JobContext) -> FinalAnswer | None:
        await self._launch(self.strategy.begin(), collector, context)
        while self._fed < self.outcome.launched:
            received = self._receive(await collector.next_batch())
            # Booked before scoring: a deadline during the verifier call loses no branch.
            first = len(self.outcome.branches)
            self.outcome.branches.extend(received)
            scored = await self._score(received)
            self.outcome.branches[first:] = scored
            for index, branch in enumerate(scored):
                self._fed += 1
                self._reported([branch])
                decision = self.strategy.on_branch(branch)
                self._lead(decision.answer if isinstance(decision, Finish) else None)
                if isinstance(decision, Finish):
                    self.outcome.finished_by_strategy = True
                    self._reported(scored[index + 1 :])  # booked, never handed over
                    return decision.answer
                if isinstance(decision, Launch):
                    await self._launch(decision.requests, collector, context)
        return self.strategy.best_so_far()

    async def _launch(
        self, requests: Sequence[BranchRequest], collector: QueryCollector, context: JobContext
    ) -> None:
        jobs = []
        launched_ids: list[str] = []
        launched: list[tuple[list[str], BranchRequest]] = []
        for request in requests:
            if request.n < 1:
                continue
            first = self.outcome.launched + len(launched_ids)
            ids = [branch_id(self.query.query_id, first + i) for i in range(request.n)]
            for each in ids:
                self._requests[each] = request
            launched_ids.extend(ids)
            launched.append((ids, request))
            jobs.extend(build_jobs(context, request, first))
            self.deps.load.branches_launched(request.n, request.max_tokens, time.monotonic())
        if not jobs:
            return
        self.outcome.launched += len(launched_ids)
        self.outcome.waves += 1
        streamed = [
            (ids[0], request.continuation)
            for ids, request in launched
            if self.feed.live and streams_text(context, request)
        ]
        for each, _ in streamed:
            collector.watch_text(each, functools.partial(self.feed.text, each))
        self.feed.launching(streamed)  # its events wait for its PubAcks
        if self.deps.metrics is not None:
            self.deps.metrics.count_branches(BranchEvent.LAUNCHED, len(launched_ids))
        collector.expect(launched_ids)
        wave = self.trace.wave(self.outcome.waves, launched_ids)
        remaining = self._deadline_loop - asyncio.get_running_loop().time()
        try:
            await self.deps.dispatcher.publish_jobs(
                jobs,
                timeout_seconds=max(0.001, min(PUBLISH_TIMEOUT_SECONDS, remaining)),
                trace_context=wave,
                priority=self.plan.priority,  # Critical's jobs are taken first
            )
        except DispatchError as error:
            log.warning("query %s: %s (%r)", self.query.query_id, error, error.__cause__)
            self.trace.launch_failed(self.outcome.waves, str(error))
            self._dispatch_error = error
            self.feed.launch_failed()
            # The branches fail here and now, so the strategy can still decide without them.
            for job in jobs:
                for each in job.branch_ids:
                    collector.offer(
                        BranchResult(
                            query_id=job.query_id,
                            job_id=job.job_id,
                            branch_id=each,
                            status=BranchStatus.FAILED,
                            error=str(error),
                        )
                    )
            return
        self.feed.launched(
            WaveLaunched(self.outcome.waves, len(launched_ids), self.outcome.launched)
        )

    def _reported(self, branches: list[ScoredBranch]) -> list[ScoredBranch]:
        """`branches`, each emitted as a finished branch (the settled ones too)."""
        return self.feed.reported(branches, self.outcome.launched)

    def _lead(self, final: FinalAnswer | None) -> None:
        """Emit the strategy's leading answer when it changed (`final`: it just finished)."""
        if self.feed.emitting:
            self.feed.lead(final or self.strategy.best_so_far())

    def _receive(
        self, results: list[BranchResult], *, cancelled: bool = False
    ) -> list[ScoredBranch]:
        """Book the results and extract their answers (completed branches only: a cut-off
        text may end in a prefix of the answer). `cancelled`: results of branches the runner
        already settled and counted as cancelled, which only add their tokens now."""
        if not results:
            return []
        load = self.deps.load
        now = time.monotonic()
        extractor, pattern = self.query.extractor, self.query.answer_pattern
        events: dict[BranchEvent, int] = {}
        branches = []
        self.trace.reported(result.branch_id for result in results)
        for result in results:
            request = self._requests[result.branch_id]
            load.observe(result, now)
            if not cancelled:
                load.branches_settled(1, request.max_tokens)
                event = BRANCH_EVENTS[result.status]
                events[event] = events.get(event, 0) + 1
            answer = (
                extract_answer(request.continuation + result.text, extractor, pattern)
                if result.status == BranchStatus.COMPLETED
                else None
            )
            branches.append(ScoredBranch(request=request, result=result, answer=answer))
        if self.deps.metrics is not None:
            for event, count in events.items():
                self.deps.metrics.count_branches(event, count)
        return branches

    async def _score(self, branches: list[ScoredBranch]) -> list[ScoredBranch]:
        """Score the branches whose request asks for it, in one verifier batch."""
        verifier = self.deps.verifier
        if verifier is None:
            return branches
        wanted = [
            index
            for index, branch in enumerate(branches)
            if branch.request.score is not ScoreMode.NONE and branch.completed
        ]
        if not wanted:
            return branches
        inputs = [
            verifier_input(self.query, branches[i].request, branches[i].result, branches[i].answer)
            for i in wanted
        ]
        try:
            scores = await verifier.score_many(inputs)
        except VerifierError as error:
            log.warning(
                "query %s: verifier failed, branches unscored: %s", self.query.query_id, error
            )
            return branches
        for index, score in zip(wanted, scores, strict=True):
            branch = branches[index]
            branches[index] = ScoredBranch(
                request=branch.request, result=branch.result, answer=branch.answer, score=score
            )
        return branches

    async def _cancel_outstanding(self, collector: QueryCollector, outcome: QueryOutcome) -> None:
        outstanding = sorted(collector.outstanding)
        outcome.unreported = len(outstanding)
        if not outstanding:
            return
        for each in outstanding:
            self.deps.load.branches_settled(1, self._requests[each].max_tokens)
        if self.deps.metrics is not None:
            self.deps.metrics.count_branches(BranchEvent.CANCELLED, len(outstanding))
        reason = "deadline" if outcome.deadline_exceeded else "answered"
        await self.deps.dispatcher.cancel(self.query.query_id, outstanding, reason)

    async def _collect_cancelled(self, collector: QueryCollector, outcome: QueryOutcome) -> None:
        """Wait up to `usage_settle_seconds` for the results of the branches just cancelled
        (workers report the partial tokens of what they aborted within milliseconds; a job still
        queued reports only when a worker takes it), and book them; `outcome.unreported` is
        what did not report in time. Only for an answer: an error body has no usage, and a query
        being cancelled (the client went away) has no reader."""
        task = asyncio.current_task()
        settle = self.deps.usage_settle_seconds
        wanted = outcome.answer is not None and not (task and task.cancelling())
        if collector.outstanding and settle > 0 and wanted:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settle):
                    while collector.outstanding:
                        results = await collector.next_batch()
                        received = self._receive(results, cancelled=True)
                        outcome.branches.extend(self._reported(received))
        outcome.branches.extend(self._reported(self._receive(collector.drain(), cancelled=True)))
        outcome.unreported = len(collector.outstanding)

    def _why_no_answer(self) -> tuple[str, str]:
        # What the branches' errors say (engine output, worker internals) is for the log only.
        errors = [b.result.error for b in self.outcome.branches if b.result.error]
        if errors:
            log.warning("query %s: no answer; first error: %s", self.query.query_id, errors[0])
        error = self._dispatch_error
        return why_no_answer(
            self.outcome,
            None if error is None else str(error),
            too_large=isinstance(error, JobTooLarge),
        )
