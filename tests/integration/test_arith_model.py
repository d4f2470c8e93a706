"""The shipped arithmetic model served by real vLLM, and the HTTP step verifier."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from models.arith.task import extract_answer, format_prompt, is_verified
from ponder.local.verifier import VerifierServer
from ponder.local.vllm import VllmServer

# Problems the shipped model solves greedily (checked when it was trained); a retrained model
# that fails them has lost the task.
KNOWN_PROBLEMS = [
    ("23+48-17", "23+48=71 71-17=54 #54"),
    ("41+36", "41+36=77 #77"),
    ("17-99+5", "17-99=-82 -82+5=-77 #-77"),
]


async def post_vllm(server: VllmServer, route: str, **body: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}{route}", json={"model": server.served_name, **body}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def completions(server: VllmServer, **body: Any) -> dict[str, Any]:
    return await post_vllm(server, "/v1/completions", **body)


@pytest.mark.vllm
@pytest.mark.parametrize(("question", "solution"), KNOWN_PROBLEMS)
async def test_shipped_model_solves_a_known_problem_at_temperature_zero(
    arith_vllm: VllmServer, question: str, solution: str
) -> None:
    result = await completions(
        arith_vllm, prompt=format_prompt(question), temperature=0.0, max_tokens=48
    )
    choice = result["choices"][0]
    assert choice["text"] == solution
    assert choice["finish_reason"] == "stop"
    assert is_verified(question, choice["text"])


@pytest.mark.vllm
async def test_prompt_tokens_include_the_bos_the_model_was_trained_with(
    arith_vllm: VllmServer,
) -> None:
    prompt = format_prompt("23+48-17")
    result = await completions(arith_vllm, prompt=prompt, max_tokens=1, temperature=0.0)
    assert result["usage"]["prompt_tokens"] == len(prompt) + 1


@pytest.mark.vllm
async def test_chat_route_renders_the_task_prompt_with_one_bos(arith_vllm: VllmServer) -> None:
    """The session serves with `bench/arith_chat_template.jinja` (the user message is the whole
    task prompt, as the peer proxy and Ponder's chat route send it), not the model's own
    template (which wraps a bare question in `Q:... A:`)."""
    result = await post_vllm(
        arith_vllm,
        "/v1/chat/completions",
        messages=[{"role": "user", "content": "Q:23+48-17 A:"}],
        temperature=0.0,
        max_tokens=48,
    )
    assert result["choices"][0]["message"]["content"] == "23+48=71 71-17=54 #54"
    assert result["usage"]["prompt_tokens"] == len("Q:23+48-17 A:") + 1


@pytest.mark.vllm
async def test_chat_route_continues_a_partial_solution(arith_vllm: VllmServer) -> None:
    result = await post_vllm(
        arith_vllm,
        "/v1/chat/completions",
        messages=[
            {"role": "user", "content": "Q:23+48-17 A:"},
            {"role": "assistant", "content": "23+48=71 "},
        ],
        add_generation_prompt=False,
        continue_final_message=True,
        temperature=0.0,
        max_tokens=48,
    )
    assert result["choices"][0]["message"]["content"] == "71-17=54 #54"


@pytest.mark.vllm
async def test_sixteen_samples_carry_the_right_answer_with_logprobs(arith_vllm: VllmServer) -> None:
    result = await completions(
        arith_vllm,
        prompt=format_prompt("23+48-17"),
        n=16,
        temperature=0.7,
        max_tokens=48,
        logprobs=1,
        seed=7,
    )
    choices = result["choices"]
    assert len(choices) == 16
    assert "54" in [extract_answer(choice["text"]) for choice in choices]
    assert all(len(choice["logprobs"]["tokens"]) > 0 for choice in choices)
    assert result["usage"]["completion_tokens"] == sum(
        len(choice["logprobs"]["tokens"]) for choice in choices
    )


async def post_verify(server: VerifierServer, body: object) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/verify", json=body) as response,
    ):
        return response.status, dict(await response.json())


@pytest.mark.parametrize(
    ("body", "score"),
    [
        ({"question": "Q:23+48-17 A:", "answer": "54", "steps": ["23+48=71", "71-17=54"]}, 1.0),
        ({"question": "23+48-17", "answer": "55", "steps": ["23+48=71", "71-17=55"]}, 1 / 3),
        ({"question": "23+48-17", "answer": None, "steps": ["23+48=71"]}, 1.0),
        ({"question": "23+48-17", "answer": None, "steps": ["23+48=72"]}, 0.0),
    ],
)
async def test_verifier_server_scores_steps(
    arith_verifier: VerifierServer, body: dict[str, object], score: float
) -> None:
    status, result = await post_verify(arith_verifier, body)
    assert status == 200
    assert result["score"] == pytest.approx(score)


@pytest.mark.parametrize(
    "body",
    [
        {"question": "what is love?", "answer": "54", "steps": []},
        {"answer": "54", "steps": []},
        {"question": "23+48", "answer": "71", "steps": "23+48=71"},
        ["not", "an", "object"],
    ],
)
async def test_verifier_server_rejects_bad_requests_with_400(
    arith_verifier: VerifierServer, body: object
) -> None:
    status, result = await post_verify(arith_verifier, body)
    assert status == 400
    assert result["error"]


async def test_verifier_server_reports_healthy(arith_verifier: VerifierServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{arith_verifier.url}/healthz") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
