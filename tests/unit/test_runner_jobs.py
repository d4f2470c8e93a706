"""Branch requests -> jobs (ids, k-grouping, seeds, prompts) and result collection (pure)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from ponder.api.service_config import (
    AnswerProbe,
    BeamConfig,
    BudgetForcingConfig,
    DeepConfConfig,
    ExtractorKind,
    TokenConfidence,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import (
    AnswerReading,
    BranchResult,
    BranchStatus,
    ChatMessage,
    ConfidenceWatch,
    Endpoint,
)
from ponder.scheduler.dispatch import QueryCollector
from ponder.scheduler.jobs import JobContext, build_jobs
from ponder.scheduler.strategies.base import BranchRequest, PlannedQuery

QUERY = PlannedQuery(
    query_id="q7",
    strategy=StrategyName.SELF_CONSISTENCY,
    endpoint=Endpoint.COMPLETIONS,
    question="1+2",
    prompt="Q:1+2 A:",
    messages=None,
    branches=8,
    max_branches=8,
    budget_tokens=1000,
    max_tokens_per_branch=40,
    temperature=0.7,
    top_p=0.9,
    stop=("\n",),
    seed=100,
    confidence=0.9,
    extractor=ExtractorKind.AUTO,
    has_verifier=False,
    beam=BeamConfig(),
    budget_forcing=BudgetForcingConfig(),
    wave_size=8,
)


def context(query: PlannedQuery = QUERY, k: int = 4, **fields: object) -> JobContext:
    return JobContext(
        query=query,
        model="tiny",
        reply_subject="ponder.default.math.results.s1",
        deadline_at=1000.0,
        branches_per_job=k,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("n", "k", "first", "groups"),
    [
        (8, 4, 0, [["q7-0", "q7-1", "q7-2", "q7-3"], ["q7-4", "q7-5", "q7-6", "q7-7"]]),
        (5, 2, 0, [["q7-0", "q7-1"], ["q7-2", "q7-3"], ["q7-4"]]),
        (2, 4, 8, [["q7-8", "q7-9"]]),
        (1, 1, 3, [["q7-3"]]),
    ],
)
def test_branches_are_grouped_into_jobs_of_k_with_query_wide_ids(
    n: int, k: int, first: int, groups: list[list[str]]
) -> None:
    jobs = build_jobs(context(k=k), BranchRequest(n=n, max_tokens=40), first)
    assert [job.branch_ids for job in jobs] == groups
    assert [job.job_id for job in jobs] == [f"q7-j{group[0].split('-')[1]}" for group in groups]
    # A seeded query gives the job starting at branch i the seed base + i.
    assert [job.sampling.seed for job in jobs] == [100 + int(g[0].split("-")[1]) for g in groups]
    assert all(job.deadline_at == 1000.0 for job in jobs)
    assert all(job.reply_subject == "ponder.default.math.results.s1" for job in jobs)


def test_sampling_comes_from_the_request_or_else_the_query() -> None:
    (job,) = build_jobs(context(), BranchRequest(n=1, max_tokens=12), 0)
    sampling = job.sampling
    assert (sampling.max_tokens, sampling.temperature, sampling.top_p) == (12, 0.7, 0.9)
    assert (sampling.stop, sampling.logprobs, sampling.ignore_eos) == (["\n"], False, False)
    request = BranchRequest(n=1, max_tokens=5, temperature=0.0, stop=("#",), logprobs=True)
    (job,) = build_jobs(context(ignore_eos=True), request, 0)
    assert (job.sampling.temperature, job.sampling.stop, job.sampling.logprobs) == (
        0.0,
        ["#"],
        True,
    )
    assert job.sampling.ignore_eos
    (job,) = build_jobs(context(logprobs=True), BranchRequest(n=1, max_tokens=5), 0)
    assert job.sampling.logprobs  # a logprob verifier needs them on every branch


def test_unseeded_queries_send_no_seed() -> None:
    jobs = build_jobs(context(replace(QUERY, seed=None)), BranchRequest(n=8, max_tokens=4), 0)
    assert all(job.sampling.seed is None for job in jobs)


@pytest.mark.parametrize(
    ("request_", "prompt"),
    [
        (BranchRequest(n=1, max_tokens=4), "Q:1+2 A:"),
        (BranchRequest(n=1, max_tokens=4, continuation="1+2=3 Wait"), "Q:1+2 A:1+2=3 Wait"),
        (BranchRequest(n=1, max_tokens=4, prompt_override="Critique: 1+2=4"), "Critique: 1+2=4"),
    ],
)
def test_completion_prompts_extend_or_replace_the_query_prompt(
    request_: BranchRequest, prompt: str
) -> None:
    (job,) = build_jobs(context(), request_, 0)
    assert (job.endpoint, job.prompt, job.messages) == (Endpoint.COMPLETIONS, prompt, None)


def test_chat_continuations_become_a_final_assistant_message() -> None:
    conversation = (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="1+2?"),
    )
    chat = replace(QUERY, endpoint=Endpoint.CHAT, prompt=None, messages=conversation)
    (plain,) = build_jobs(context(chat), BranchRequest(n=1, max_tokens=4), 0)
    assert plain.messages == list(conversation)
    (continued,) = build_jobs(
        context(chat), BranchRequest(n=1, max_tokens=4, continuation="1+2=3"), 0
    )
    assert continued.messages == [*conversation, ChatMessage(role="assistant", content="1+2=3")]
    (overridden,) = build_jobs(
        context(chat), BranchRequest(n=1, max_tokens=4, prompt_override="Check 1+2=3"), 0
    )
    assert overridden.messages == [
        conversation[0],
        ChatMessage(role="user", content="Check 1+2=3"),
    ]
    assert continued.prompt is None


def branch_result(branch: str, status: BranchStatus = BranchStatus.COMPLETED) -> BranchResult:
    return BranchResult(query_id="q7", job_id="q7-j0", branch_id=branch, status=status)


async def test_collector_keeps_the_first_terminal_result_of_each_branch() -> None:
    collector = QueryCollector("q7")
    collector.expect(["q7-0", "q7-1"])
    assert collector.offer(branch_result("q7-0"))
    # A redelivered job reports the branch again: dropped and counted.
    assert not collector.offer(branch_result("q7-0", BranchStatus.FAILED))
    # Not a branch of this query's launches.
    assert not collector.offer(branch_result("q7-9"))
    assert collector.outstanding == {"q7-1"}
    assert collector.offer(branch_result("q7-1", BranchStatus.CANCELLED))
    batch = await asyncio.wait_for(collector.next_batch(), timeout=10)
    assert [(r.branch_id, r.status) for r in batch] == [
        ("q7-0", BranchStatus.COMPLETED),
        ("q7-1", BranchStatus.CANCELLED),
    ]
    assert collector.duplicates == 1
    assert collector.outstanding == set()
    assert collector.drain() == []


async def test_collector_takes_a_jobs_results_message_and_drops_a_redelivered_one() -> None:
    collector = QueryCollector("q7")
    collector.expect(["q7-0", "q7-1", "q7-2"])
    collector.offer_all([branch_result("q7-0"), branch_result("q7-1")])
    first = await asyncio.wait_for(collector.next_batch(), timeout=10)
    assert [r.branch_id for r in first] == ["q7-0", "q7-1"]
    # The same job again (redelivered after a lost ack): nothing new, no wake-up.
    collector.offer_all([branch_result("q7-0", BranchStatus.FAILED), branch_result("q7-1")])
    assert collector.duplicates == 2
    assert collector.drain() == []
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(collector.next_batch(), timeout=0.05)
    assert collector.outstanding == {"q7-2"}


def test_jobs_carry_a_confidence_watch_when_the_request_asks() -> None:
    settings = DeepConfConfig(token_confidence=TokenConfidence.TOP_K, top_k=7, window_tokens=9)
    query = replace(QUERY, deep_conf=settings)
    plain = build_jobs(context(query), BranchRequest(n=2, max_tokens=8), 0)[0]
    assert plain.confidence is None
    watched = BranchRequest(n=2, max_tokens=8, confidence=True)
    assert build_jobs(context(query), watched, 0)[0].confidence == ConfidenceWatch(
        token=TokenConfidence.TOP_K, top_k=7, window_tokens=9
    )
    stopping = replace(watched, confidence_stop_below=0.42)
    watch = build_jobs(context(query), stopping, 0)[0].confidence
    assert watch is not None and watch.stop_below == 0.42


def test_jobs_carry_the_answer_reading_and_the_querys_probe() -> None:
    plain = build_jobs(context(), BranchRequest(n=2, max_tokens=8), 0)[0]
    assert plain.answer == AnswerReading(extractor=ExtractorKind.AUTO) and plain.probe is None
    probe = AnswerProbe(every_tokens=16)
    regex = replace(QUERY, extractor=ExtractorKind.REGEX, answer_pattern=r"= (\d+)", probe=probe)
    probed = build_jobs(context(regex), BranchRequest(n=2, max_tokens=8), 0)[0]
    assert probed.answer == AnswerReading(extractor=ExtractorKind.REGEX, pattern=r"= (\d+)")
    assert probed.probe == probe
