"""A small bounded load for the chaos scenarios, and what became of every query it sent.

`Load` sends a fixed number of seeded arithmetic queries (self-consistency over a few
branches), a few in flight at once, through the scheduler that its `Target` names, and records
for each query one `Outcome`:

- `answered`: a 200 whose branches each count once;
- `failed`: a clear error, either a status in OpenAI's error shape with the code documented for
  it (`DOCUMENTED_ERRORS`), or the client's connection dropped by a dying scheduler
  (`disconnected`, `refused`) — the client knows at once and may ask again;
- `lost`: no response by the query's deadline plus a slack (the client is left waiting);
- `duplicated`: a 200 in which a branch counts twice (or another query's branch appears), or a
  second response carrying a query id already answered;
- `unclear`: any other error (an undocumented status or code, a body not in OpenAI's shape).

The scenarios assert lost == duplicated == unclear == 0 exactly, and the pure functions below
(`classify`, `duplication_problems`, `tally`, `recovery_seconds`) are table-tested in
`test_load.py`, so a detector that could not fire would be caught there.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp

from models.arith.task import generate_problems


class Outcome(StrEnum):
    ANSWERED = "answered"
    FAILED = "failed"
    LOST = "lost"
    DUPLICATED = "duplicated"
    UNCLEAR = "unclear"


DOCUMENTED_ERRORS: Mapping[int, str] = {
    503: "queue_unavailable",  # jobs could not be queued (NATS away)
    504: "deadline_exceeded",  # no branch finished by the deadline
}
"""The 5xx codes docs/architecture.md documents ("Request limits"); a fault may cause these."""

DISCONNECTED = "disconnected"
"""The code of a query whose HTTP connection closed before its response (a killed scheduler)."""
REFUSED = "refused"
"""The code of a query sent to a scheduler port that no longer listens."""


@dataclass(frozen=True)
class QueryRecord:
    """What became of one query, with its times on the monotonic clock."""

    index: int
    sent_at: float
    ended_at: float
    outcome: Outcome
    code: str = ""
    """The error code of a failed query, else empty."""
    detail: str = ""
    query_id: str = ""


@dataclass(frozen=True)
class LoadSpec:
    """The shape of the load: how many queries, how many in flight, how they are asked."""

    queries: int = 48
    in_flight: int = 4
    seed: int = 0
    branches: int = 4
    max_tokens: int = 48
    deadline_ms: int = 30_000
    slack_seconds: float = 30.0
    """How long past its deadline a query may answer on a busy machine before it counts lost."""


def query_body(prompt: str, spec: LoadSpec) -> dict[str, Any]:
    """The completion request of one query of the load."""
    return {
        "model": "ponder-arith",
        "prompt": prompt,
        "max_tokens": spec.max_tokens,
        "ponder": {
            "strategy": "self-consistency",
            "branches": spec.branches,
            "deadline_ms": spec.deadline_ms,
        },
    }


def duplication_problems(body: Mapping[str, Any]) -> list[str]:
    """Why the 200 `body` counts some branch twice (empty when each branch counts once): a
    branch id twice, a branch of another query, more branches or votes than were launched or
    completed, or outcomes that do not add up to the branches launched."""
    ponder = body.get("ponder")
    if not isinstance(ponder, Mapping):
        return ["no ponder object"]
    query_id = str(ponder.get("query_id", ""))
    ids = [str(branch.get("id", "")) for branch in ponder.get("branches", [])]
    launched = int(ponder.get("branches_launched", 0))
    completed = int(ponder.get("branches_completed", 0))
    settled = completed + int(ponder.get("branches_cancelled", 0))
    settled += int(ponder.get("branches_failed", 0))
    problems = []
    twice = sorted(branch for branch, count in Counter(ids).items() if count > 1)
    if twice:
        problems.append(f"branches reported twice: {twice}")
    foreign = sorted(branch for branch in ids if not branch.startswith(f"{query_id}-"))
    if foreign:
        problems.append(f"branches of another query: {foreign}")
    if len(ids) > launched:
        problems.append(f"{len(ids)} branches listed, {launched} launched")
    if settled != launched:
        problems.append(f"{settled} branches settled, {launched} launched")
    votes = sum(float(count) for count in ponder.get("votes", {}).values())
    if votes > completed:
        problems.append(f"{votes:g} votes from {completed} completed branches")
    return problems


def classify(
    status: int | None, body: Any, transport_error: str | None = None, timed_out: bool = False
) -> tuple[Outcome, str, str]:
    """(outcome, error code, detail) of one query from what its client saw: the HTTP status and
    JSON body, or the code of a transport error (`DISCONNECTED`, `REFUSED`), or a timeout."""
    if timed_out:
        return Outcome.LOST, "", "no response by its deadline plus the slack"
    if transport_error is not None:
        return Outcome.FAILED, transport_error, transport_error
    if status == 200 and isinstance(body, Mapping):
        problems = duplication_problems(body)
        if problems:
            return Outcome.DUPLICATED, "", "; ".join(problems)
        return Outcome.ANSWERED, "", ""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping) or not isinstance(error.get("message"), str):
        return Outcome.UNCLEAR, "", f"HTTP {status}, not OpenAI's error shape: {body!r:.200}"
    code = str(error.get("code"))
    if status is None or DOCUMENTED_ERRORS.get(status) != code:
        return Outcome.UNCLEAR, code, f"HTTP {status} {code} is not documented: {error['message']}"
    return Outcome.FAILED, code, str(error["message"])


@dataclass(frozen=True)
class Tally:
    """How many queries ended each way, and the codes of the failed ones."""

    answered: int
    failed: int
    lost: int
    duplicated: int
    unclear: int
    failed_codes: Mapping[str, int]

    def line(self) -> str:
        """The counts in one line, as the scenarios print them."""
        codes = ", ".join(f"{code} {count}" for code, count in sorted(self.failed_codes.items()))
        return (
            f"{self.answered} answered, {self.failed} failed ({codes or 'none'}), "
            f"{self.lost} lost, {self.duplicated} duplicated, {self.unclear} unclear"
        )


def tally(records: Sequence[QueryRecord]) -> Tally:
    """Count `records` by outcome; a query id answered twice counts as duplicated."""
    outcomes = Counter(record.outcome for record in records)
    answered_ids = Counter(
        record.query_id for record in records if record.outcome is Outcome.ANSWERED
    )
    again = sum(count - 1 for query_id, count in answered_ids.items() if query_id and count > 1)
    return Tally(
        answered=outcomes[Outcome.ANSWERED] - again,
        failed=outcomes[Outcome.FAILED],
        lost=outcomes[Outcome.LOST],
        duplicated=outcomes[Outcome.DUPLICATED] + again,
        unclear=outcomes[Outcome.UNCLEAR],
        failed_codes=dict(
            Counter(record.code for record in records if record.outcome is Outcome.FAILED)
        ),
    )


def recovery_seconds(records: Sequence[QueryRecord], fault_at: float) -> float | None:
    """Seconds from `fault_at` until the service was whole again: every query in flight at the
    fault has ended, and a query sent after it has been answered. None if none sent after it
    was answered (the service never recovered within the load)."""
    answered_later = [
        record.ended_at
        for record in records
        if record.sent_at >= fault_at and record.outcome is Outcome.ANSWERED
    ]
    if not answered_later:
        return None
    in_flight = [r.ended_at for r in records if r.sent_at <= fault_at < r.ended_at]
    return max([min(answered_later), *in_flight]) - fault_at


class Target:
    """Where the load sends its queries: the scheduler that is ready now, as a Service's
    endpoints would route. While it is down, queries wait to be sent (bounded)."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._ready = asyncio.Event()
        self._ready.set()

    def down(self) -> None:
        """No scheduler is ready: hold new queries."""
        self._ready.clear()

    def up(self, base_url: str) -> None:
        """The scheduler at `base_url` is ready: send there."""
        self._base_url = base_url
        self._ready.set()

    async def base_url(self, timeout_seconds: float) -> str:
        """The ready scheduler's URL; TimeoutError if none is ready within the timeout."""
        await asyncio.wait_for(self._ready.wait(), timeout_seconds)
        return self._base_url


@dataclass
class Load:
    """`spec.queries` queries through `target`, `spec.in_flight` at a time; `run()` sends them
    all and returns their records, and `sent(n)` lets a scenario wait for the n-th."""

    spec: LoadSpec
    target: Target
    http: aiohttp.ClientSession
    target_timeout_seconds: float = 120.0
    records: list[QueryRecord] = field(default_factory=list)
    _sent: int = 0
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def sent(self, count: int) -> None:
        """Return once `count` queries have been sent (at once if all have)."""
        count = min(count, self.spec.queries)
        async with self._progress:
            await self._progress.wait_for(lambda: self._sent >= count)

    async def run(self) -> list[QueryRecord]:
        """Send every query; return their records in the order they ended."""
        prompts = [
            problem.prompt for problem in generate_problems(self.spec.seed, self.spec.queries)
        ]
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        for index, prompt in enumerate(prompts):
            queue.put_nowait((index, prompt))
        async with asyncio.TaskGroup() as group:
            for _ in range(self.spec.in_flight):
                group.create_task(self._client(queue))
        return self.records

    async def _client(self, queue: asyncio.Queue[tuple[int, str]]) -> None:
        while not queue.empty():
            index, prompt = queue.get_nowait()
            base_url = await self.target.base_url(self.target_timeout_seconds)
            async with self._progress:
                self._sent += 1
                self._progress.notify_all()
            self.records.append(await self._ask(index, base_url, prompt))

    async def _ask(self, index: int, base_url: str, prompt: str) -> QueryRecord:
        budget = self.spec.deadline_ms / 1000 + self.spec.slack_seconds
        sent_at = time.monotonic()
        status: int | None = None
        body: Any = None
        transport_error: str | None = None
        timed_out = False
        try:
            async with asyncio.timeout(budget):
                async with self.http.post(
                    f"{base_url}/v1/completions", json=query_body(prompt, self.spec)
                ) as response:
                    status = response.status
                    body = await response.json(content_type=None)
        except TimeoutError:
            timed_out = True
        except aiohttp.ClientConnectorError:
            transport_error = REFUSED
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            transport_error = DISCONNECTED
        except (aiohttp.ClientPayloadError, ValueError) as error:
            body = f"unreadable body: {error!r}"
        outcome, code, detail = classify(status, body, transport_error, timed_out)
        ponder = body.get("ponder") if isinstance(body, Mapping) else None
        query_id = str(ponder.get("query_id", "")) if isinstance(ponder, Mapping) else ""
        return QueryRecord(
            index=index,
            sent_at=sent_at,
            ended_at=time.monotonic(),
            outcome=outcome,
            code=code,
            detail=detail,
            query_id=query_id,
        )


def assert_every_query_answered(records: Sequence[QueryRecord], queries: int) -> None:
    """Each of the `queries` was answered once: none failed, lost, duplicated or unclear (for
    the faults that a client must never notice)."""
    counts = tally(records)
    strays = [record for record in records if record.outcome is not Outcome.ANSWERED]
    assert (counts.lost, counts.duplicated, counts.unclear, counts.failed) == (0, 0, 0, 0), strays
    assert counts.answered == queries, counts
