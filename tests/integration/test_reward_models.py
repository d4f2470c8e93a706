"""The shipped learned reward models served by real vLLM, scored through the scheduler's
reward-model verifiers: the outcome model on /score, the process model on /pooling.

vLLM must see exactly what the models were trained on (the serving templates, <bos> once, a
score at every step's closing newline): its scores match the model run in-process. How well the
models separate right from wrong is their model cards' business (measured on held-out samples),
not a timed test's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from transformers import LlamaForSequenceClassification

from bench.stack import ORM_SCHEDULER, PRM_SCHEDULER, REWARD_MODELS
from models.arith.reward import labelled, solution_steps
from models.arith.task import parse_question
from models.arith.train_reward import Scored, scored
from ponder.api.service_config import VerifierConfig, VerifierKind
from ponder.local import shipped
from ponder.local.checkout import checkout_root
from ponder.local.vllm import VllmServer, vllm_server
from ponder.scheduler.verifiers import (
    ProcessRewardModelVerifier,
    RewardModelVerifier,
    VerifierInput,
    make_verifier,
)

pytestmark = pytest.mark.vllm

QUESTION = "23+48-17"
RIGHT = "23+48=71 71-17=54 #54"
WRONG_LAST_STEP = "23+48=71 71-17=53 #53"
WRONG_FIRST_STEP = "23+48=61 61-17=44 #44"


def model_dir(relative: Path) -> Path:
    root = checkout_root()
    assert root is not None
    return root / relative


@contextlib.asynccontextmanager
async def serve(scheduler: str, log_dir: Path) -> AsyncIterator[VllmServer]:
    """A shipped reward model on vLLM, served as `shipped.reward_model_args` says (the models
    the benchmarks' `scheduler` replica uses)."""
    kind, relative, name = REWARD_MODELS[scheduler]
    directory = model_dir(relative)
    async with vllm_server(
        directory,
        served_name=name,
        log_dir=log_dir,
        extra_args=shipped.reward_model_args(kind, directory),
        warm=False,
    ) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def orm_server(stack_log_dir: Path) -> AsyncIterator[VllmServer]:
    async with serve(ORM_SCHEDULER, stack_log_dir) as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def prm_server(stack_log_dir: Path) -> AsyncIterator[VllmServer]:
    async with serve(PRM_SCHEDULER, stack_log_dir) as server:
        yield server


def in_process(relative: Path, completions: list[str]) -> list[Scored]:
    """The model's probabilities (at each step tag, at the last token), run by transformers here."""
    problem = parse_question(QUESTION)
    assert problem is not None
    model = LlamaForSequenceClassification.from_pretrained(str(model_dir(relative)))
    return scored(model, [labelled(problem, text) for text in completions])


def inputs(*completions: str) -> list[VerifierInput]:
    return [VerifierInput(QUESTION, None, tuple(solution_steps(text))) for text in completions]


async def test_outcome_model_on_vllm_scores_as_trained_and_prefers_the_right_answer(
    orm_server: VllmServer,
) -> None:
    completions = [RIGHT, WRONG_LAST_STEP, WRONG_FIRST_STEP]
    config = VerifierConfig(
        kind=VerifierKind.REWARD_MODEL, url=orm_server.base_url, model=orm_server.served_name
    )
    verifier = make_verifier(config)
    assert isinstance(verifier, RewardModelVerifier)
    async with verifier:
        scores = await verifier.score_many(inputs(*completions))
    expected = [s.last for s in in_process(shipped.OUTCOME_REWARD_MODEL_PATH, completions)]
    assert scores == pytest.approx(expected, abs=1e-3)


async def test_process_model_on_vllm_scores_every_step_as_trained(
    prm_server: VllmServer,
) -> None:
    completions = [RIGHT, WRONG_LAST_STEP, WRONG_FIRST_STEP]
    config = VerifierConfig(
        kind=VerifierKind.PROCESS_REWARD_MODEL,
        url=prm_server.base_url,
        model=prm_server.served_name,
    )
    verifier = make_verifier(config)
    assert isinstance(verifier, ProcessRewardModelVerifier)
    async with verifier:
        steps = [
            await verifier.step_scores(QUESTION, "\n".join(solution_steps(text)))
            for text in completions
        ]
        scores = await verifier.score_many(inputs(*completions))
    expected = in_process(shipped.PROCESS_REWARD_MODEL_PATH, completions)
    for served, computed in zip(steps, expected, strict=True):
        assert served == pytest.approx(computed.steps, abs=1e-3)
    assert [len(row) for row in steps] == [3, 3, 3]
    assert scores == pytest.approx([min(row) for row in steps])


async def test_process_model_scores_a_partial_solution_for_beam_search(
    prm_server: VllmServer,
) -> None:
    """Beam search scores a prefix (no answer yet): one score per step so far, as trained."""
    async with ProcessRewardModelVerifier(prm_server.base_url, prm_server.served_name) as verifier:
        prefix = await verifier.step_scores(QUESTION, "23+48=71")
        score = await verifier.score(QUESTION, None, ["23+48=71"])
    (expected,) = in_process(shipped.PROCESS_REWARD_MODEL_PATH, ["23+48=71"])
    assert prefix == pytest.approx(expected.steps, abs=1e-3)
    assert len(prefix) == 1
    assert score == pytest.approx(prefix[0])
