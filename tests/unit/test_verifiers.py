"""Verifiers against real HTTP peers: tiny aiohttp servers started by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from ponder.api.service_config import BeamConfig, VerifierConfig, VerifierKind
from ponder.api.wire import BranchResult, BranchStatus
from ponder.local.processes import free_port
from ponder.scheduler.strategies.base import BranchRequest, ScoreMode
from ponder.scheduler.verifiers import (
    HttpVerifier,
    LogprobVerifier,
    ProcessRewardModelVerifier,
    RewardModelVerifier,
    VerifierError,
    VerifierInput,
    make_verifier,
    verifier_input,
)
from tests.unit.recorded_branches import planned

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(path: str, handler: Handler) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering POST `path`; yields its base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def answer_scorer(received: list[dict[str, Any]]) -> Handler:
    """An HTTP verifier that trusts answer "54" only, and records what it was sent."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        return web.json_response({"score": 1.0 if body["answer"] == "54" else 0.25})

    return handle


async def test_http_verifier_posts_question_answer_steps_and_reads_the_score() -> None:
    received: list[dict[str, Any]] = []
    async with (
        serving("/verify", answer_scorer(received)) as base,
        HttpVerifier(f"{base}/verify", timeout_seconds=10) as verifier,
    ):
        score = await verifier.score("Q:23+48-17", "54", ["23+48=71", "71-17=54", "#54"])
    assert score == 1.0
    assert received == [
        {"question": "Q:23+48-17", "answer": "54", "steps": ["23+48=71", "71-17=54", "#54"]}
    ]


async def test_http_verifier_scores_many_in_order() -> None:
    received: list[dict[str, Any]] = []
    inputs = [VerifierInput("q", answer, ("s",)) for answer in ["54", "53", None, "54"]]
    async with (
        serving("/verify", answer_scorer(received)) as base,
        HttpVerifier(f"{base}/verify") as verifier,
    ):
        scores = await verifier.score_many(inputs)
    assert scores == [1.0, 0.25, 0.25, 1.0]
    assert len(received) == 4


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, "boom", "answered HTTP 500: boom"),
        (200, '{"verdict": 1}', 'expected {"score": float}'),
        (200, '{"score": "high"}', "expected a number"),
        (200, '{"score": true}', "expected a number"),
        (200, '{"score": 1.5}', "expected a probability in [0, 1]"),
        (200, "not json", "invalid JSON"),
    ],
)
async def test_http_verifier_bad_replies_raise_clear_errors(
    status: int, body: str, message: str
) -> None:
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    async with serving("/verify", handle) as base, HttpVerifier(f"{base}/verify") as verifier:
        with pytest.raises(VerifierError, match=message.replace("[", r"\[").replace("]", r"\]")):
            await verifier.score("q", "1", [])


async def test_http_verifier_times_out() -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({"score": 1.0})

    async with (
        serving("/verify", slow) as base,
        HttpVerifier(f"{base}/verify", timeout_seconds=0.2) as verifier,
    ):
        with pytest.raises(VerifierError, match=r"did not answer within 0\.2s"):
            await verifier.score("q", "1", [])


async def test_http_verifier_unreachable_peer() -> None:
    url = f"http://127.0.0.1:{free_port()}/verify"
    async with HttpVerifier(url, timeout_seconds=2) as verifier:
        with pytest.raises(VerifierError, match="unreachable"):
            await verifier.score("q", "1", [])


async def test_http_verifier_needs_async_with() -> None:
    with pytest.raises(VerifierError, match="async with"):
        await HttpVerifier("http://127.0.0.1:1/verify").score("q", "1", [])


def vllm_score_server(received: list[dict[str, Any]]) -> Handler:
    """Replies like vLLM's /score (ScoreResponse): data[] of {index, object, score}, here in
    reverse order, each score derived from its text_2."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        texts = body["text_2"] if isinstance(body["text_2"], list) else [body["text_2"]]
        data = [
            {"index": i, "object": "score", "score": 0.9 if text.endswith("#54") else 0.1}
            for i, text in enumerate(texts)
        ]
        return web.json_response(
            {
                "id": "score-1",
                "object": "list",
                "created": 0,
                "model": body.get("model", "prm"),
                "data": data[::-1],
                "usage": {"prompt_tokens": 10, "total_tokens": 10},
            }
        )

    return handle


async def test_reward_model_batches_solutions_per_question() -> None:
    received: list[dict[str, Any]] = []
    inputs = [
        VerifierInput("Q:23+48-17", "54", ("23+48=71", "71-17=54", "#54")),
        VerifierInput("Q:1+1", "3", ("1+1=3", "#3")),
        VerifierInput("Q:23+48-17", "53", ("23+48=70", "70-17=53", "#53")),
    ]
    async with (
        serving("/score", vllm_score_server(received)) as base,
        RewardModelVerifier(base, model="prm", timeout_seconds=10) as verifier,
    ):
        scores = await verifier.score_many(inputs)
    assert scores == [0.9, 0.1, 0.1]
    by_question = {body["text_1"]: body for body in received}
    assert by_question["Q:23+48-17"] == {
        "model": "prm",
        "text_1": "Q:23+48-17",
        "text_2": ["23+48=71\n71-17=54\n#54", "23+48=70\n70-17=53\n#53"],
    }
    assert len(received) == 2


async def test_reward_model_scores_one_solution_under_a_v1_base_url() -> None:
    received: list[dict[str, Any]] = []
    async with (
        serving("/v1/score", vllm_score_server(received)) as base,
        RewardModelVerifier(f"{base}/v1/") as verifier,
    ):
        assert await verifier.score("Q:23+48-17", "54", []) == 0.1  # no steps: the bare answer
    assert received == [{"text_1": "Q:23+48-17", "text_2": ["54"]}]


async def test_reward_model_reply_with_missing_scores_is_an_error() -> None:
    async def short(_request: web.Request) -> web.Response:
        return web.json_response({"data": [{"index": 0, "score": 0.5}]})

    async with serving("/score", short) as base, RewardModelVerifier(base) as verifier:
        with pytest.raises(VerifierError, match="expected data"):
            await verifier.score_many([VerifierInput("q", "1", ()), VerifierInput("q", "2", ())])


async def test_reward_model_404_names_the_endpoint() -> None:
    async def missing(_request: web.Request) -> web.Response:
        return web.Response(status=404, text='{"detail":"Not Found"}')

    async with serving("/other", missing) as base, RewardModelVerifier(base) as verifier:
        with pytest.raises(VerifierError, match=r"/score answered HTTP 404"):
            await verifier.score("q", "1", [])


def vllm_pooling_server(received: list[dict[str, Any]]) -> Handler:
    """Replies like vLLM's /pooling with step pooling (PoolingResponse): one [p] per solution
    line, 0.9 for a line that is a right step of 23+48-17 and 0.2 for any other."""
    right = {"23+48=71", "71-17=54", "#54"}

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        lines = [line for line in body["messages"][1]["content"].split("\n") if line]
        steps = [[0.9 if line in right else 0.2] for line in lines]
        return web.json_response(
            {"object": "list", "data": [{"index": 0, "object": "pooling", "data": steps}]}
        )

    return handle


async def test_process_reward_model_scores_a_solution_by_its_weakest_step() -> None:
    received: list[dict[str, Any]] = []
    inputs = [
        VerifierInput("23+48-17", "54", ("23+48=71", "71-17=54", "#54")),
        VerifierInput("23+48-17", "53", ("23+48=71", "71-17=53", "#53")),
        VerifierInput("23+48-17", None, ()),
    ]
    async with (
        serving("/pooling", vllm_pooling_server(received)) as base,
        ProcessRewardModelVerifier(base, model="prm", timeout_seconds=10) as verifier,
    ):
        scores = await verifier.score_many(inputs)
        steps = await verifier.step_scores("23+48-17", "23+48=71\n71-17=53\n#53")
    assert scores == [0.9, 0.2, 0.0]
    assert steps == [0.9, 0.2, 0.2]
    assert received[0] == {
        "model": "prm",
        "task": "token_classify",
        "messages": [
            {"role": "user", "content": "23+48-17"},
            {"role": "assistant", "content": "23+48=71\n71-17=54\n#54"},
        ],
    }


async def test_process_reward_model_reply_without_step_scores_names_the_pooler() -> None:
    async def embedding(_request: web.Request) -> web.Response:
        return web.json_response({"data": [{"index": 0, "embedding": [0.1, 0.2]}]})

    async with (
        serving("/v1/pooling", embedding) as base,
        ProcessRewardModelVerifier(f"{base}/v1") as verifier,
    ):
        with pytest.raises(VerifierError, match="step pooling"):
            await verifier.score("q", "1", ["1+0=1"])


async def test_process_reward_model_score_outside_0_1_is_an_error() -> None:
    async def logits(_request: web.Request) -> web.Response:
        return web.json_response({"data": [{"index": 0, "data": [[2.5]]}]})

    async with serving("/pooling", logits) as base, ProcessRewardModelVerifier(base) as verifier:
        with pytest.raises(VerifierError, match="probability"):
            await verifier.score("q", "1", ["1+0=1"])


@pytest.mark.parametrize(
    ("mean_logprob", "expected"),
    [(0.0, 1.0), (-0.5, math.exp(-0.5)), (-50.0, math.exp(-50.0)), (None, 0.0), (0.1, 1.0)],
)
async def test_logprob_verifier_maps_mean_logprob_to_a_probability(
    mean_logprob: float | None, expected: float
) -> None:
    async with LogprobVerifier() as verifier:
        assert verifier.needs_logprobs
        score = await verifier.score("q", "1", [], mean_logprob=mean_logprob)
        many = await verifier.score_many([VerifierInput("q", "1", (), mean_logprob)])
    assert score == pytest.approx(expected)
    assert many == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (VerifierConfig(), None),
        (VerifierConfig(kind=VerifierKind.LOGPROB), LogprobVerifier),
        (VerifierConfig(kind=VerifierKind.HTTP, url="http://v/verify"), HttpVerifier),
        (VerifierConfig(kind=VerifierKind.REWARD_MODEL, url="http://rm"), RewardModelVerifier),
        (
            VerifierConfig(kind=VerifierKind.PROCESS_REWARD_MODEL, url="http://prm"),
            ProcessRewardModelVerifier,
        ),
    ],
)
def test_make_verifier_builds_the_configured_kind(
    config: VerifierConfig, kind: type | None
) -> None:
    verifier = make_verifier(config)
    assert (verifier is None) if kind is None else isinstance(verifier, kind)


def test_make_verifier_passes_url_model_and_timeout() -> None:
    config = VerifierConfig(
        kind=VerifierKind.REWARD_MODEL, url="http://rm:8000", model="prm", timeout_seconds=3
    )
    verifier = make_verifier(config)
    assert isinstance(verifier, RewardModelVerifier)
    assert (verifier.url, verifier.model, verifier.timeout_seconds) == (
        "http://rm:8000/score",
        "prm",
        3,
    )


def test_verifier_input_for_a_step_holds_the_prefix_and_the_new_step() -> None:
    query = planned(question="Q:23+48-17", beam=BeamConfig(step_delimiter=" "))
    request = BranchRequest(n=2, max_tokens=16, continuation="23+48=71 ", score=ScoreMode.STEP)
    result = BranchResult(
        query_id="q1",
        job_id="j",
        branch_id="b",
        status=BranchStatus.COMPLETED,
        text="71-17=54",
        mean_logprob=-0.2,
    )
    assert verifier_input(query, request, result, None) == VerifierInput(
        question="Q:23+48-17", answer=None, steps=("23+48=71", "71-17=54"), mean_logprob=-0.2
    )
