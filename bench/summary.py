"""Per-query records of a benchmark run and what they add up to (pure).

A `QueryRecord` is one problem sent once with one strategy: whether the answer was right, the
tokens `usage` reported, the latency the client saw, and what the `ponder` object said about
branches. `summarise` turns the records of one strategy into the row the tables print.
The comparisons the benchmarks report (adaptive versus self-consistency@16, Ponder versus the
peer at equal tokens) are plain functions over those rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.arith.task import extract_answer, parse_answer

ADAPTIVE = "adaptive-consistency"


class Question(Protocol):
    """What a record needs of what was asked: its text and its integer answer (the arithmetic
    task's `Problem`, SmolLM2's `WordQuestion`)."""

    @property
    def question(self) -> str: ...

    @property
    def answer(self) -> int: ...


@dataclass(frozen=True)
class QueryRecord:
    """One problem, one strategy, one answer (or an error)."""

    label: str
    system: str  # "ponder" or the peer's name
    problem_index: int
    question: str
    truth: int
    answer: str | None
    correct: bool
    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float
    branches: int = 1
    branches_saved: int = 0
    agreement: float | None = None  # the chosen answer's share of the vote
    any_branch_correct: bool | None = None  # some branch found the truth (oracle pass@n)
    branch_accuracy: float | None = None  # share of the branches that found the truth
    shrunk: bool = False
    grown: bool = False  # the planner granted more branches than asked (an idle pool)
    deadline_exceeded: bool = False
    error: str | None = None
    tokens_after_answer: int = 0  # generated after the branches' answers settled
    early_exits: int = 0  # branches stopped by their answer probe
    probe_tokens: int = 0  # what the answer probes generated (part of completion_tokens)
    probes: int = 0  # answer probes run for the branches
    capped_branches: int = 0  # branches that stopped at max_tokens (finish_reason "length")


@dataclass(frozen=True)
class Summary:
    """One strategy's row: accuracy, tokens, branches and latency over its queries."""

    label: str
    system: str
    queries: int
    accuracy: float
    mean_completion_tokens: float
    mean_total_tokens: float
    mean_branches: float
    p50_latency_seconds: float
    p95_latency_seconds: float
    mean_branches_saved: float
    errors: int
    agreement: float | None = None
    oracle_accuracy: float | None = None
    branch_accuracy: float | None = None
    measured_completion_tokens: float | None = None
    """Generated tokens per query as vLLM counted them (its `generation_tokens_total`), when
    measured: the same yardstick for every system, whatever its `usage` reports."""

    @property
    def generated_tokens(self) -> float:
        """What a query cost: vLLM's count when measured, else the reported usage."""
        if self.measured_completion_tokens is not None:
            return self.measured_completion_tokens
        return self.mean_completion_tokens


def is_correct(answer: str | None, truth: int) -> bool:
    return parse_answer(answer) == truth


def branches_saved(ponder: Mapping[str, Any]) -> int:
    """Branches early stopping spared: those an adaptive search never launched (up to its
    `max_branches`) plus those cancelled because the answer was settled (not by a deadline)."""
    launched = int(ponder.get("branches_launched", 0))
    cancelled = int(ponder.get("branches_cancelled", 0))
    saved = 0 if ponder.get("deadline_exceeded") else cancelled
    if ponder.get("strategy") == ADAPTIVE:
        saved += max(0, int(ponder.get("plan", {}).get("max_branches", launched)) - launched)
    return saved


def vote_share(votes: Mapping[str, float], answer: str | None) -> float | None:
    """The share of the vote behind `answer` (None without votes)."""
    total = sum(votes.values())
    if total <= 0 or answer is None:
        return None
    return votes.get(answer, 0.0) / total


def ponder_record(
    label: str,
    index: int,
    problem: Question,
    body: Mapping[str, Any],
    latency_seconds: float,
) -> QueryRecord:
    """A record from a Ponder completion response body (OpenAI's, plus `ponder`)."""
    ponder: Mapping[str, Any] = body.get("ponder") or {}
    usage: Mapping[str, Any] = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    text = str(choices[0].get("text") or choices[0].get("message", {}).get("content") or "")
    answer = ponder.get("answer") or extract_answer(text)
    right = [
        is_correct(branch.get("answer"), problem.answer)
        for branch in ponder.get("branches", [])
        if branch.get("status") == "completed"
    ]
    return QueryRecord(
        label=label,
        system="ponder",
        problem_index=index,
        question=problem.question,
        truth=problem.answer,
        answer=answer,
        correct=is_correct(answer, problem.answer),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        latency_seconds=latency_seconds,
        branches=int(ponder.get("branches_launched", 1)),
        branches_saved=branches_saved(ponder),
        agreement=vote_share(ponder.get("votes") or {}, answer),
        any_branch_correct=any(right) if right else None,
        branch_accuracy=sum(right) / len(right) if right else None,
        shrunk=bool(ponder.get("plan", {}).get("shrunk", False)),
        grown=bool(ponder.get("plan", {}).get("grown", False)),
        deadline_exceeded=bool(ponder.get("deadline_exceeded", False)),
        tokens_after_answer=int(ponder.get("tokens_after_answer", 0)),
        early_exits=int(ponder.get("early_exits", 0)),
        probe_tokens=sum(int(b.get("probe_tokens", 0)) for b in ponder.get("branches", [])),
        probes=sum(int(b.get("probes", 0)) for b in ponder.get("branches", [])),
        capped_branches=sum(b.get("finish_reason") == "length" for b in ponder.get("branches", [])),
    )


def peer_record(
    label: str,
    system: str,
    index: int,
    problem: Question,
    body: Mapping[str, Any],
    latency_seconds: float,
    branches: int,
) -> QueryRecord:
    """A record from a plain OpenAI chat response (the peer proxy): the answer is extracted
    from the first choice's text; `branches` is what the peer's approach samples."""
    usage: Mapping[str, Any] = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    text = str(choices[0].get("message", {}).get("content") or choices[0].get("text") or "")
    answer = extract_answer(text)
    return QueryRecord(
        label=label,
        system=system,
        problem_index=index,
        question=problem.question,
        truth=problem.answer,
        answer=answer,
        correct=is_correct(answer, problem.answer),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_seconds=latency_seconds,
        branches=branches,
    )


def error_record(
    label: str, system: str, index: int, problem: Question, error: str, latency_seconds: float
) -> QueryRecord:
    """A query that got no answer (HTTP error, timeout): wrong, and its tokens unknown (0)."""
    return QueryRecord(
        label=label,
        system=system,
        problem_index=index,
        question=problem.question,
        truth=problem.answer,
        answer=None,
        correct=False,
        prompt_tokens=0,
        completion_tokens=0,
        latency_seconds=latency_seconds,
        branches=0,
        error=error,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) with linear interpolation between ranks; NaN if empty."""
    if not values:
        return math.nan
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be within [0, 1]")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def summarise(records: Sequence[QueryRecord]) -> Summary:
    """The row of one strategy (all records share a label). Errors count as wrong answers;
    token and branch means cover every query."""
    if not records:
        raise ValueError("no records to summarise")
    label, system = records[0].label, records[0].system
    latencies = [r.latency_seconds for r in records]
    agreements = [r.agreement for r in records if r.agreement is not None]
    oracle = [r.any_branch_correct for r in records if r.any_branch_correct is not None]
    shares = [r.branch_accuracy for r in records if r.branch_accuracy is not None]
    return Summary(
        label=label,
        system=system,
        queries=len(records),
        accuracy=_mean(float(r.correct) for r in records),
        mean_completion_tokens=_mean(r.completion_tokens for r in records),
        mean_total_tokens=_mean(r.prompt_tokens + r.completion_tokens for r in records),
        mean_branches=_mean(r.branches for r in records),
        p50_latency_seconds=percentile(latencies, 0.50),
        p95_latency_seconds=percentile(latencies, 0.95),
        mean_branches_saved=_mean(r.branches_saved for r in records),
        errors=sum(1 for r in records if r.error is not None),
        agreement=_mean(agreements) if agreements else None,
        oracle_accuracy=_mean(float(flag) for flag in oracle) if oracle else None,
        branch_accuracy=_mean(shares) if shares else None,
    )


def summarise_by_label(records: Sequence[QueryRecord]) -> list[Summary]:
    """One summary per label, in the order the labels first appear."""
    labels: dict[str, list[QueryRecord]] = {}
    for record in records:
        labels.setdefault(record.label, []).append(record)
    return [summarise(group) for group in labels.values()]


@dataclass(frozen=True)
class EfficiencyRatio:
    """Tokens of the cheapest candidate at least as accurate as the reference, over the
    reference's tokens (None when no candidate reaches its accuracy)."""

    reference: Summary
    candidate: Summary | None
    ratio: float | None
    best_candidate: Summary | None  # the most accurate candidate, for the report when none reach


def efficiency_ratio(reference: Summary, candidates: Sequence[Summary]) -> EfficiencyRatio:
    """ "Tokens of `candidates` / tokens of `reference` at equal or better accuracy"."""
    reaching = [c for c in candidates if c.accuracy >= reference.accuracy]
    best = max(candidates, key=lambda c: (c.accuracy, -c.generated_tokens), default=None)
    if not reaching:
        return EfficiencyRatio(reference, None, None, best)
    cheapest = min(reaching, key=lambda c: c.generated_tokens)
    ratio = cheapest.generated_tokens / reference.generated_tokens
    return EfficiencyRatio(reference, cheapest, ratio, best)


@dataclass(frozen=True)
class PeerComparison:
    """A peer's point against the best Ponder strategy that spends no more tokens."""

    peer: Summary
    ponder: Summary | None  # None: every Ponder strategy spends more tokens than the peer

    @property
    def ponder_wins(self) -> bool:
        return self.ponder is not None and self.ponder.accuracy > self.peer.accuracy


def compare_at_equal_tokens(
    peers: Sequence[Summary], ponder: Sequence[Summary]
) -> list[PeerComparison]:
    """For each peer point, the most accurate Ponder strategy with at most its mean generated
    tokens (ties: fewer tokens)."""
    comparisons = []
    for peer in peers:
        affordable = [p for p in ponder if p.generated_tokens <= peer.generated_tokens]
        best = max(affordable, key=lambda p: (p.accuracy, -p.generated_tokens), default=None)
        comparisons.append(PeerComparison(peer, best))
    return comparisons
