"""The scheduler's API end to end: real NATS, real vLLM (random weights), 2 worker processes and
the scheduler process. vLLM's text is gibberish here: assert on counts, usage and shapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import openai
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from ponder.api.wire import SchedulerStats
from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer
from ponder.local.vllm import VllmServer
from tests.scrape import sample_sum

pytestmark = pytest.mark.vllm

MODEL = "ponder-arith"
PROMPT = "Q:12+34-5 A:"
SETTLE_SECONDS = 60.0
"""The longest a test waits for what must happen: only a hang exceeds it on a busy machine."""


@pytest_asyncio.fixture(scope="module")
async def plane(
    nats: NatsServer, vllm: VllmServer, stack_log_dir: Path
) -> AsyncIterator[Dataplane]:
    """Scheduler + 2 workers on the session's NATS and vLLM, for this module."""
    async with local_dataplane(
        name="sched-queries",
        nats_url=nats.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=2,
        log_dir=stack_log_dir,
    ) as started:
        yield started


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=2 * SETTLE_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def post_json(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any] | bytes
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json()


async def test_self_consistency_returns_every_branch_and_counts_all_their_tokens(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    status, body = await post_json(
        http,
        f"{plane.base_url}/v1/completions",
        {
            "model": MODEL,
            "prompt": PROMPT,
            # Too short for an answer ("#41"): no vote settles early, all 8 branches finish.
            "max_tokens": 4,
            "ponder": {"strategy": "self-consistency", "branches": 8},
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    assert ponder["strategy"] == "self-consistency"
    assert ponder["branches_launched"] == ponder["branches_completed"] == 8
    assert ponder["branches_cancelled"] == ponder["branches_failed"] == 0
    assert ponder["deadline_exceeded"] is False
    assert ponder["waves"] == 1
    branches = ponder["branches"]
    assert len({branch["id"] for branch in branches}) == 8
    assert all(branch["status"] == "completed" for branch in branches)
    assert all(0 < branch["completion_tokens"] <= 4 for branch in branches)
    usage = body["usage"]
    assert usage["completion_tokens"] == sum(b["completion_tokens"] for b in branches)
    assert usage["prompt_tokens"] == sum(b["prompt_tokens"] for b in branches)
    # Each job (k branches sharing one prompt) counts its prompt once.
    jobs = 8 // ponder["plan"]["branches_per_job"]
    assert usage["prompt_tokens"] == jobs * (len(PROMPT) + 1)  # one token per char, plus BOS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


async def test_openai_client_works_unchanged_with_ponder_options(plane: Dataplane) -> None:
    async with openai.AsyncOpenAI(
        base_url=plane.openai_base_url, api_key="unused", max_retries=0
    ) as client:
        models = await client.models.list()
        assert [model.id for model in models.data] == [MODEL]
        completion = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=12,
            temperature=0.7,
            seed=3,
            extra_body={"ponder": {"strategy": "best-of-n", "branches": 4}},
        )
    assert completion.usage is not None
    ponder = (completion.model_extra or {})["ponder"]
    assert ponder["strategy"] == "best-of-n"
    assert ponder["branches_launched"] == 4
    assert completion.usage.completion_tokens == sum(
        branch["completion_tokens"] for branch in ponder["branches"]
    )
    assert completion.choices[0].text


async def test_openai_client_streams_the_answer_as_chunks(plane: Dataplane) -> None:
    async with openai.AsyncOpenAI(
        base_url=plane.openai_base_url, api_key="unused", max_retries=0
    ) as client:
        stream = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ponder": {"strategy": "self-consistency", "branches": 4}},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(choice.text for chunk in chunks for choice in chunk.choices)
    finished = [c for chunk in chunks for c in chunk.choices if c.finish_reason is not None]
    assert text
    assert len(finished) == 1 and finished[0].finish_reason in ("stop", "length")
    (finishing,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    ponder: dict[str, Any] = (finishing.model_extra or {})["ponder"]
    assert ponder["branches_launched"] == 4
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == sum(b["completion_tokens"] for b in ponder["branches"])
    assert all(chunk.object == "text_completion" for chunk in chunks)


async def test_chat_completions_run_on_vllm_or_relay_its_refusal(plane: Dataplane) -> None:
    """The chat route goes through the workers to vLLM's chat endpoint. The tiny test model has
    no chat template, so vLLM refuses every branch; the client gets a 502 that says why."""
    async with openai.AsyncOpenAI(
        base_url=plane.openai_base_url, api_key="unused", max_retries=0
    ) as client:
        try:
            chat = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "12+34-5"}],
                max_tokens=8,
                extra_body={"ponder": {"strategy": "self-consistency", "branches": 2}},
            )
        except openai.APIStatusError as error:
            assert error.status_code == 502
            assert "chat template" in str(error.message)
            assert "none of 2 branches produced an answer" in str(error.message)
        else:
            assert chat.object == "chat.completion"
            assert (chat.model_extra or {})["ponder"]["branches_launched"] == 2


async def test_chat_budget_forcing_continues_the_reply_inside_the_assistant_message(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    """Budget forcing on the chat route: the thinking branch stops at max_tokens without an
    answer, so the strategy forces one by continuing the chain ("...Final Answer:") as a final
    assistant message, which vLLM continues in place. The session's chat template
    (`bench/arith_chat_template.jinja`) closes a finished reply with EOS and continuing leaves
    it out, so that branch's prompt is BOS + question + the chain so far, one token per
    character (the tokenizer is character-level)."""
    status, body = await post_json(
        http,
        f"{plane.base_url}/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 4,
            "ponder": {"strategy": "budget-forcing"},
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    assert ponder["branches_launched"] == ponder["branches_completed"] == 2
    assert ponder["branches_failed"] == ponder["branches_cancelled"] == 0
    thinking, forced = ponder["branches"]
    assert thinking["prompt_tokens"] == len(PROMPT) + 1
    # The answer is the chain: the thinking text, the answer prompt, then what was forced.
    content = body["choices"][0]["message"]["content"]
    chain = content[: content.index("Final Answer:") + len("Final Answer:")]
    assert forced["prompt_tokens"] == 1 + len(PROMPT) + len(chain)
    assert body["usage"]["prompt_tokens"] == thinking["prompt_tokens"] + forced["prompt_tokens"]


async def test_adaptive_consistency_at_temperature_zero_stops_after_its_first_wave(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    status, body = await post_json(
        http,
        f"{plane.base_url}/v1/completions",
        {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": 12,
            "temperature": 0,
            "ponder": {"strategy": "adaptive-consistency", "branches": 4, "max_branches": 16},
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    assert ponder["waves"] == 1
    assert ponder["branches_launched"] == ponder["branches_completed"] <= 4
    assert ponder["branches_launched"] < ponder["plan"]["max_branches"] == 16


async def test_deep_conf_online_stops_unconfident_branches_below_the_warmups_threshold(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    status, body = await post_json(
        http,
        f"{plane.base_url}/v1/completions",
        {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": 8,
            "ponder": {"strategy": "deep-conf", "branches": 4, "max_branches": 16},
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    branches = ponder["branches"]
    # The warm-up wave ran to the end, measured: every later wave waits for it.
    warmup = branches[:4]
    assert all(b["status"] == "completed" and not b["low_confidence"] for b in warmup)
    assert all(0 < b["confidence"] <= 1 for b in warmup)
    # keepPercent 10 of 4 keeps the most confident: its confidence is the threshold.
    threshold = max(b["confidence"] for b in warmup)
    for later in branches[4:]:
        if later["low_confidence"]:
            # Stopped by its worker at a window below the threshold, its tokens still counted.
            assert later["status"] == "cancelled" and later["confidence"] < threshold
            assert 4 <= later["completion_tokens"] <= 8  # at least one full window of 4
        elif later["status"] == "completed":
            assert later["confidence"] >= threshold or later["completion_tokens"] < 4
    assert ponder["low_confidence_stops"] == sum(b["low_confidence"] for b in branches)
    assert body["usage"]["completion_tokens"] == sum(b["completion_tokens"] for b in branches)


@pytest.mark.parametrize("rule", ["window", "confidence"])
async def test_adaptive_consistency_stops_by_the_rule_the_request_names(
    plane: Dataplane, http: aiohttp.ClientSession, rule: str
) -> None:
    status, body = await post_json(
        http,
        f"{plane.base_url}/v1/completions",
        {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": 48,
            "ponder": {
                "strategy": "adaptive-consistency",
                "branches": 2,
                "max_branches": 8,
                "stopping_rule": rule,
            },
        },
    )
    assert status == 200, body
    ponder = body["ponder"]
    assert ponder["plan"]["stopping_rule"] == rule
    waves = [b for b in ponder["branches"] if b["status"] == "completed"]
    assert waves and ponder["branches_launched"] <= 8
    if rule == "confidence":
        # The workers measured every branch; the answer's confidence is its share of weight.
        assert all(0 < b["confidence"] <= 1 for b in waves), waves
        weight = sum(b["confidence"] for b in waves if b["answer"] is not None)
        leader = sum(b["confidence"] for b in waves if b["answer"] == ponder["answer"])
        assert ponder["confidence"] == pytest.approx(leader / weight)
    else:
        assert all(b.get("confidence") is None for b in waves)
        # It stopped before the cap only on a unanimous wave: the last two answered alike.
        if ponder["branches_launched"] < 8 and not ponder["gave_up"]:
            last = ponder["branches"][-2:]
            assert last[0]["answer"] is not None and last[0]["answer"] == last[1]["answer"]


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        (b'{"model": "ponder-arith", "prompt": ', 400, None, "not valid JSON"),
        (
            {"model": MODEL, "prompt": PROMPT, "ponder": {"strategy": "tree-of-thought"}},
            400,
            "ponder.strategy",
            "unknown strategy 'tree-of-thought'",
        ),
        (
            {"model": MODEL, "prompt": PROMPT, "ponder": {"branches": 64}},
            400,
            "ponder.branches",
            "ponder.branches=64 exceeds spec.strategy.maxBranches=32",
        ),
        (
            {"model": MODEL, "prompt": PROMPT, "ponder": {"budget_tokens": -100}},
            400,
            "ponder.budget_tokens",
            "ponder.budget_tokens=-100 must be at least 1",
        ),
        (
            {"model": MODEL, "prompt": PROMPT, "ponder": {"branchez": 4}},
            400,
            "ponder.branchez",
            "unknown parameter",
        ),
        ({"model": MODEL, "prompt": PROMPT, "frobnicate": 1}, 400, "frobnicate", "unknown"),
        ({"model": MODEL, "prompt": PROMPT, "logprobs": 3}, 400, "logprobs", "not supported"),
        ({"model": MODEL, "prompt": PROMPT, "echo": True}, 400, "echo", "not supported"),
        (
            {"model": MODEL, "prompt": PROMPT, "best_of": 4, "ponder": {"strategy": "single"}},
            400,
            "best_of",
            "best_of=4 asks for ponder.strategy=best-of-n, not single",
        ),
        (
            {"model": MODEL, "prompt": PROMPT, "frequency_penalty": 3},
            400,
            "frequency_penalty",
            "less than or equal to 2",
        ),
        (
            {"model": MODEL, "prompt": PROMPT, "logit_bias": {"seven": 1}},
            400,
            "logit_bias",
            "logit_bias key 'seven' is not a token id",
        ),
        ({"model": MODEL, "prompt": PROMPT, "n": 3}, 400, "n", "ask for more samples"),
        ({"model": MODEL}, 400, "prompt", "Field required"),
        ({"model": "gpt-4", "prompt": PROMPT}, 404, "model", "`gpt-4` does not exist"),
    ],
)
async def test_bad_requests_get_openai_errors_that_name_the_problem(
    plane: Dataplane,
    http: aiohttp.ClientSession,
    body: dict[str, Any] | bytes,
    status: int,
    param: str | None,
    message: str,
) -> None:
    got_status, error = await post_json(http, f"{plane.base_url}/v1/completions", body)
    assert got_status == status
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["param"] == param
    assert message in error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error"


async def test_chat_tools_are_refused_not_ignored(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    status, error = await post_json(
        http,
        f"{plane.base_url}/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "1+2"}], "tools": [tool]},
    )
    assert status == 400, error
    assert error["error"]["param"] == "tools" and error["error"]["code"] == "unsupported"
    assert "tools is not supported by Ponder" in error["error"]["message"]


async def test_sampling_options_reach_vllm_for_every_branch(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    # Greedy, the model starts its reply with one token; banned by logit_bias, it cannot.
    greedy = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0.0}
    status, plain = await post_json(
        http, f"{plane.base_url}/v1/completions", {**greedy, "ponder": {"strategy": "single"}}
    )
    assert status == 200, plain
    first = plain["choices"][0]["text"][:1]
    async with http.post(
        f"{plane.vllm_url}/tokenize", json={"model": MODEL, "prompt": first}
    ) as response:
        tokens = (await response.json())["tokens"]
    banned = str(tokens[-1])  # the character's own token, after any BOS
    status, biased = await post_json(
        http,
        f"{plane.base_url}/v1/completions",
        {
            **greedy,
            "logit_bias": {banned: -100},
            "frequency_penalty": 0.5,
            "top_k": 5,
            "min_p": 0.01,
            "ponder": {"strategy": "self-consistency", "branches": 2},
        },
    )
    assert status == 200, biased
    for branch in biased["ponder"]["branches"]:
        assert branch["status"] == "completed", branch
    assert not biased["choices"][0]["text"].startswith(first), (first, biased)
    # best_of is best-of-n over that many branches.
    status, best = await post_json(
        http, f"{plane.base_url}/v1/completions", {**greedy, "best_of": 3}
    )
    assert status == 200, best
    assert best["ponder"]["strategy"] == "best-of-n"
    assert best["ponder"]["branches_launched"] == 3


async def test_models_health_readiness_and_metrics_are_served(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{plane.base_url}/v1/models") as response:
        assert response.status == 200
        assert [m["id"] for m in (await response.json())["data"]] == [MODEL]
    async with http.get(f"{plane.base_url}/healthz") as response:
        assert response.status == 200
    async with http.get(f"{plane.base_url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
    async with http.get(f"{plane.base_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for name in (
        "ponder_queries_total",
        "ponder_query_latency_seconds_bucket",
        "ponder_branches_total",
        "ponder_queue_depth_branches",
        "ponder_slo_attainment_ratio",
    ):
        assert name in text
    assert 'ponder_branches_total{event="launched"}' in text


async def test_scheduler_publishes_its_load_and_latency_for_the_autoscaler(
    plane: Dataplane,
) -> None:
    received: asyncio.Queue[SchedulerStats] = asyncio.Queue()

    async def on_stats(msg: Msg) -> None:
        received.put_nowait(SchedulerStats.model_validate_json(msg.data))

    nc = await nats.connect(plane.nats_url)
    try:
        await nc.subscribe(plane.subjects.stats, cb=on_stats)
        # Published every second (the plane's stats interval); a busy machine may be late.
        stats = await asyncio.wait_for(received.get(), timeout=SETTLE_SECONDS)
    finally:
        await nc.close()
    assert stats.scheduler_id == plane.scheduler.scheduler_id
    # Earlier tests of this module ran queries: the window has latencies.
    assert stats.queries_total > 0
    assert stats.p95_latency_seconds is not None and stats.p95_latency_seconds > 0
    assert stats.slo_attainment == 1.0
    assert stats.branches_outstanding == stats.queries_in_flight == 0
    # What kubectl get rsvc -o wide shows, from the same window (semantics: unit tests).
    assert stats.tokens_per_query is not None and stats.tokens_per_query > 0
    assert stats.early_stop_rate is not None and 0.0 <= stats.early_stop_rate <= 1.0
    # What the autoscaler's queueing estimate sizes the pool from: the slot time the real
    # worker reported for the branches before, and a rate (0 once they left its 30 s window).
    assert stats.branch_seconds is not None and stats.branch_seconds > 0
    assert stats.branches_per_second is not None


async def test_openapi_document_lists_exactly_the_served_routes(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{plane.base_url}/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    operations = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    assert operations == {
        ("/v1/chat/completions", "POST"),
        ("/v1/completions", "POST"),
        ("/v1/models", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
    }
    for path, method in operations:
        async with http.request(method, f"{plane.base_url}{path}", json={}) as response:
            assert response.status not in (404, 405, 422, 500), (path, method)
    assert "422" not in json.dumps(document["paths"])
    schemas = document["components"]["schemas"]
    assert "PonderOptions" in schemas and "ErrorResponse" in schemas
    async with http.get(f"{plane.base_url}/v1/nothing-here") as response:
        assert response.status == 404
        assert set(await response.json()) == {"error"}


async def test_test_time_compute_series_count_what_each_answer_says(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    # Each series is read before and after real queries, and must move by exactly what the
    # responses' `ponder` objects say (the branches in arrival order, their answers and
    # tokens, the confidence, whether the strategy stopped early and what it saved).
    async def metrics_text() -> str:
        async with http.get(f"{plane.base_url}/metrics") as response:
            return await response.text()

    strategy = 'strategy="adaptive-consistency"'
    series = [
        "ponder_branches_to_consensus_count",
        "ponder_branches_to_consensus_sum",
        "ponder_tokens_before_final_answer_count",
        "ponder_tokens_before_final_answer_sum",
        "ponder_confidence_at_stop_count",
        "ponder_confidence_at_stop_sum",
        "ponder_early_stops_total",
        "ponder_tokens_saved_total",
    ]
    before_text = await metrics_text()
    before = {name: sample_sum(before_text, name, strategy) for name in series}
    expected = dict.fromkeys(series, 0.0)
    for seed in range(3):
        status, body = await post_json(
            http,
            f"{plane.base_url}/v1/completions",
            {
                "model": MODEL,
                "prompt": PROMPT,
                "max_tokens": 32,  # a whole worked solution of the character-level model
                "seed": seed,
                "ponder": {"strategy": "adaptive-consistency", "max_branches": 8},
            },
        )
        assert status == 200, body
        ponder = body["ponder"]
        final, to_consensus, spent, before_final = ponder["answer"], None, 0, None
        answered: dict[str, int] = {}
        for index, branch in enumerate(b for b in ponder["branches"] if b["answer"] is not None):
            answered[branch["answer"]] = answered.get(branch["answer"], 0) + 1
            if to_consensus is None and answered.get(final, 0) == max(answered.values()):
                to_consensus = index + 1
        for branch in ponder["branches"]:
            spent += branch["completion_tokens"]
            if before_final is None and final is not None and branch["answer"] == final:
                before_final = spent
        if to_consensus is not None:
            expected["ponder_branches_to_consensus_count"] += 1
            expected["ponder_branches_to_consensus_sum"] += to_consensus
        if before_final is not None:
            expected["ponder_tokens_before_final_answer_count"] += 1
            expected["ponder_tokens_before_final_answer_sum"] += before_final
        if ponder["confidence"] is not None:
            expected["ponder_confidence_at_stop_count"] += 1
            expected["ponder_confidence_at_stop_sum"] += ponder["confidence"]
        expected["ponder_early_stops_total"] += 1 if ponder["stopped_early"] else 0
        expected["ponder_tokens_saved_total"] += ponder["tokens_saved"]
        if ponder["stopped_early"]:
            plan = ponder["plan"]
            ceiling = min(
                plan["budget_tokens"], plan["max_branches"] * plan["max_tokens_per_branch"]
            )
            assert ponder["tokens_saved"] == ceiling - body["usage"]["completion_tokens"]
    after_text = await metrics_text()
    # Not vacuous: the queries had answers, so every histogram moved.
    assert expected["ponder_branches_to_consensus_count"] == 3, expected
    for name in series:
        moved = sample_sum(after_text, name, strategy) - before[name]
        assert moved == pytest.approx(expected[name]), name
