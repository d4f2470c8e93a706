"""The arithmetic step verifier as Ponder's HTTP verifier (``VerifierKind.HTTP``).

``python -m models.arith.verifier_server --port P`` serves:

- ``POST /verify`` with ``{"question": str, "answer": str | null, "steps": [str]}`` →
  ``{"score": float}`` in [0, 1] (``models.arith.task.score_solution``). ``question`` is the chain
  (``23+48-17``) or its prompt (``Q:23+48-17 A:``). Steps are ``a±b=c`` strings; a step string
  holding several space-separated steps, or the final ``#54``, is split, and a ``#54`` found there
  is the answer when ``answer`` is null. With no answer the request scores a partial solution
  (a process reward for beam search): 1.0 when every step so far is right. With an answer, 1.0
  only when every step and the answer are right. Bad input → 400 ``{"error": ...}``.
- ``GET /healthz`` → ``{"status": "ok"}``.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from models.arith.task import extract_answer, parse_question, score_solution, split_steps


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    question: str
    answer: str | None = None
    steps: list[str]


def score_request(request: VerifyRequest) -> float:
    """The score of one verify request; ValueError if the question is not a +/- chain."""
    problem = parse_question(request.question)
    if problem is None:
        raise ValueError(f"question is not a +/- chain such as 23+48-17: {request.question!r}")
    text = " ".join(request.steps)
    answer = request.answer if request.answer is not None else extract_answer(text)
    return score_solution(problem, split_steps(text), answer)


def bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def verify(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        return bad_request(f"body is not JSON: {error}")
    try:
        parsed = VerifyRequest.model_validate(body)
        score = score_request(parsed)
    except ValidationError as error:
        return bad_request(f"expected {{question, answer, steps}}: {error.errors()}")
    except ValueError as error:
        return bad_request(str(error))
    return web.json_response({"score": score})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app() -> web.Application:
    """The aiohttp application (routes only; no state)."""
    app = web.Application()
    app.router.add_post("/verify", verify)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    web.run_app(build_app(), host=arguments.host, port=arguments.port, print=None)


if __name__ == "__main__":
    main()
