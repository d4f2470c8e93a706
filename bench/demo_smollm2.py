"""`make demo MODEL=smollm2`: the demo's arms and settings on the chat model SmolLM2-135M-Instruct.

The model is the one `python -m models.smollm2.build` converts (`built_model_dir()`), served
as in `models/smollm2/service.py`; there is no verifier, so the arms are the vote-only
strategies. Questions are `models.smollm2.questions` word problems, asked on
`/v1/chat/completions` (the model's own chat template renders the user turn), and the votes
read the last number of each reply. `bench.demo` runs them with the same progress bar, table
and plot as the arithmetic demo.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from bench.clients import PonderClient, StrategySpec
from bench.summary import QueryRecord
from models.smollm2.build import BUILD_COMMAND, built_model_dir, model_dir
from models.smollm2.questions import WordQuestion
from models.smollm2.service import service_config
from ponder.api.service_config import ExtractorKind, ServiceConfig
from ponder.local.dataplane import merge_overrides
from ponder.local.stack import LocalStack, local_stack

SERVICE_NAME = "demo-smollm2"
DEFAULT_QUESTIONS = 24
SHORT_QUESTIONS = 3
WORKERS = 2

EXTRACTOR = ExtractorKind.LAST_NUMBER
"""Greedy replies state the result last ("5 + 6 = 11 balloons now."). Measured on 60 questions
(max_tokens 96): the last number read 29 right, the number after the last `=` 30, answer-is 3
(the model seldom says "the answer is"); unlike the `=` regex, it also reads a bare number."""

TEMPERATURE = 0.3
"""Of the sampled arms. Measured on 60 questions, 8 branches each (max_tokens 64): per-branch
accuracy 0.40 and majority vote 35/60 at 0.3; 0.33 and 34/60 at 0.5; 0.16 and 16/60 at 0.8,
where the vote falls below greedy's 29/60."""

MAX_TOKENS = 96
"""Most replies end by 40 tokens; room for the ones that go on after their answer."""
SHORT_MAX_TOKENS = 32


def smollm2_specs(short: bool) -> list[StrategySpec]:
    """The arms, in table order: a plain list, so another arm is one more line (e.g. one that
    sends an early-exit option in its `options`)."""
    max_tokens = SHORT_MAX_TOKENS if short else MAX_TOKENS
    return [
        StrategySpec("single (greedy)", "single", temperature=0.0, max_tokens=max_tokens),
        StrategySpec(
            "self-consistency@4", "self-consistency", {"branches": 4}, max_tokens=max_tokens
        ),
        StrategySpec(
            "self-consistency@8", "self-consistency", {"branches": 8}, max_tokens=max_tokens
        ),
        StrategySpec(
            "adaptive-consistency",
            "adaptive-consistency",
            {"branches": 2, "max_branches": 8},
            max_tokens=max_tokens,
        ),
        StrategySpec(
            "self-consistency@8 +answer-probe",
            "self-consistency",
            {"branches": 8, "early_exit": "answer-probe"},
            max_tokens=max_tokens,
        ),
    ]


SLO_TARGET_MS = 120_000
"""The deadline a query gets. At the default 30 s the SLO-aware planner granted a third of the
self-consistency@8 queries 1-4 branches (two CPU cores, 16 queries in flight); the table
compares widths, so it must get the widths it asks for."""


def smollm2_config() -> ServiceConfig:
    """The demo's service: SmolLM2's, reading the last number, sampling at `TEMPERATURE`, with
    a deadline long enough that the planner does not shrink the arms."""
    config = service_config(SERVICE_NAME, extractor=EXTRACTOR)
    return merge_overrides(
        config,
        {"strategy": {"temperature": TEMPERATURE}, "slo": {"target_latency_ms": SLO_TARGET_MS}},
    )


def smollm2_model_dir() -> Path:
    """The converted model's directory; FileNotFoundError naming the set-up when it is absent."""
    directory = built_model_dir()
    if directory is None:
        raise FileNotFoundError(f"no converted SmolLM2 model at {model_dir()}: run {BUILD_COMMAND}")
    return directory


@contextlib.asynccontextmanager
async def smollm2_stack(model: Path, log_dir: Path) -> AsyncIterator[LocalStack]:
    """vLLM on `model`, NATS, the scheduler and the workers, without a verifier."""
    async with local_stack(
        smollm2_config(), model_dir=model, workers=WORKERS, log_dir=log_dir
    ) as stack:
        yield stack


async def ask_word_question(
    client: PonderClient, spec: StrategySpec, index: int, question: WordQuestion
) -> QueryRecord:
    """`question` as the user's chat message, asked with `spec`."""
    return await client.ask_chat(spec, index, question, question.prompt())
