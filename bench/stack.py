"""The benchmarks' settings of the local stack, and how a benchmark process starts and stops.

    async with bench_stack(BenchSettings(...), log_dir) as stack:
        client = PonderClient(stack.openai_base_url, stack.served_name)

runs `ponder.local.stack.local_stack` (what `python -m ponder.local up` runs) on the shipped
arithmetic model with the benchmarks' service settings: the step verifier, `vllm serve`, NATS,
the scheduler (the verifier as the service's HTTP verifier) and the workers. Everything is
stopped on exit, in reverse order, also when the run is cancelled. `run_main`
(`ponder.local.interrupts`) makes Ctrl-C and SIGTERM cancel a benchmark's coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.arith.task import MAX_TERMS
from ponder.api.service_config import ServiceConfig, VerifierKind
from ponder.local import shipped
from ponder.local.dataplane import dataplane_config, merge_overrides
from ponder.local.interrupts import run_main
from ponder.local.stack import LocalStack, local_stack

__all__ = [
    "MODEL_DIR",
    "REPO_ROOT",
    "BenchSettings",
    "beam_branches",
    "bench_stack",
    "run_main",
    "service_overrides",
    "start_verifier_schedulers",
    "without_verifier",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / shipped.MODEL_PATH
CHAT_TEMPLATE = REPO_ROOT / "bench" / "arith_chat_template.jinja"
SERVED_NAME = shipped.SERVED_NAME
MAX_MODEL_LEN = shipped.MAX_MODEL_LEN
MAX_BRANCHES = shipped.MAX_BRANCHES
STEP_DELIMITER = shipped.STEP_DELIMITER


@dataclass(frozen=True)
class BenchSettings:
    """What differs between the benchmarks' stacks."""

    model_dir: Path = MODEL_DIR
    workers: int = 2
    temperature: float = 0.8
    beam_width: int = 4
    beam_expansions: int = 4
    branches_per_job: int = 8
    slots_per_worker: int = 32
    slo_target_ms: int = 30_000
    chat_template: bool = False
    """Serve the chat template too (the peer proxy speaks chat completions only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More ServiceConfig overrides, merged over the ones above by section."""


def beam_branches(settings: BenchSettings) -> int:
    """The branch cap a beam search needs: B x K per step, for the longest solution the task
    admits (`MAX_TERMS - 1` steps `a±b=c`, then `#n`)."""
    return min(MAX_BRANCHES, settings.beam_width * settings.beam_expansions * MAX_TERMS)


def service_overrides(settings: BenchSettings, verifier_url: str | None) -> dict[str, Any]:
    """ServiceConfig overrides for the arithmetic model; no verifier when `verifier_url` is
    None (a vote-only scheduler)."""
    verifier: dict[str, Any] = (
        {"kind": "http", "url": verifier_url, "timeout_seconds": shipped.VERIFIER_TIMEOUT_SECONDS}
        if verifier_url
        else {"kind": "none"}
    )
    overrides: dict[str, Any] = {
        "slots_per_worker": settings.slots_per_worker,
        "strategy": {
            "max_branches": MAX_BRANCHES,
            "branches_per_job": settings.branches_per_job,
            "temperature": settings.temperature,
            "extractor": "hashes",
            "verifier": verifier,
            "beam": {
                "width": settings.beam_width,
                "expansions": settings.beam_expansions,
                "step_delimiter": STEP_DELIMITER,
                "max_steps": 8,
            },
        },
        "budget": {"default_tokens": 4096, "max_tokens": 32768, "max_tokens_per_branch": 256},
        "slo": {"target_latency_ms": settings.slo_target_ms, "max_deadline_ms": 300_000},
    }
    for section, values in settings.extra.items():
        if isinstance(values, dict) and isinstance(overrides.get(section), dict):
            overrides[section] = {**overrides[section], **values}
        else:
            overrides[section] = values
    return overrides


def bench_config(settings: BenchSettings) -> ServiceConfig:
    """The benchmarks' service, its verifier where the step verifier is run by hand (the
    stack points it at the one it starts)."""
    return dataplane_config(
        name="bench",
        model=SERVED_NAME,
        max_model_len=MAX_MODEL_LEN,
        overrides=service_overrides(settings, shipped.VERIFIER_URL),
    )


def without_verifier(config: ServiceConfig) -> ServiceConfig:
    """The same service with no verifier: a vote-only scheduler replica beside the default one
    (`LocalStack.add_scheduler`), on the same stream and workers."""
    return merge_overrides(config, {"strategy": {"verifier": {"kind": "none"}}})


ORACLE_SCHEDULER = "default"
"""The stack's own scheduler: the exact step verifier, which knows the answer (the oracle)."""
ORM_SCHEDULER = "orm"
"""A replica scoring with the learned outcome reward model."""
PRM_SCHEDULER = "prm"
"""A replica scoring with the learned process reward model."""
VOTE_SCHEDULER = "vote"
"""A replica without a verifier."""

REWARD_MODELS = {
    ORM_SCHEDULER: (
        VerifierKind.REWARD_MODEL,
        shipped.OUTCOME_REWARD_MODEL_PATH,
        shipped.OUTCOME_REWARD_MODEL_NAME,
    ),
    PRM_SCHEDULER: (
        VerifierKind.PROCESS_REWARD_MODEL,
        shipped.PROCESS_REWARD_MODEL_PATH,
        shipped.PROCESS_REWARD_MODEL_NAME,
    ),
}


LEARNED_ACCEPT_SCORE = 0.7
"""What counts as verified for the learned reward models' schedulers (adaptive stopping, the vote
among verified branches, refine's pass): the exact checker's 0.99 is out of a learned model's
reach; their scores top out near 0.8, and about 70% of the solutions they score 0.7 or more are
right (the calibration tables in models/arith/ponder-arith-{orm,prm}/README.md)."""


async def start_verifier_schedulers(stack: LocalStack) -> dict[str, str]:
    """Beside the stack's scheduler (the oracle's), a scheduler replica per learned reward
    model, each served by its own vLLM, and one without a verifier, all on the same stream and
    workers. Returns every scheduler's OpenAI base URL by name (`ORACLE_SCHEDULER`,
    `ORM_SCHEDULER`, `PRM_SCHEDULER`, `VOTE_SCHEDULER`)."""
    urls = {ORACLE_SCHEDULER: stack.openai_base_url}
    servers = {}
    async with asyncio.TaskGroup() as group:  # the reward models' vLLMs start side by side
        for name, (kind, path, served_name) in REWARD_MODELS.items():
            model_dir = REPO_ROOT / path
            args = shipped.reward_model_args(kind, model_dir)
            servers[name] = group.create_task(stack.add_reward_model(model_dir, served_name, args))
    for name, (kind, _, served_name) in REWARD_MODELS.items():
        verifier = {
            "kind": kind.value,
            "url": servers[name].result().base_url,
            "model": served_name,
            "timeout_seconds": shipped.VERIFIER_TIMEOUT_SECONDS,
            "accept_score": LEARNED_ACCEPT_SCORE,
        }
        config = merge_overrides(stack.config, {"strategy": {"verifier": verifier}})
        urls[name] = (await stack.add_scheduler(config, f"scheduler-{name}")).openai_base_url
    vote = await stack.add_scheduler(without_verifier(stack.config), f"scheduler-{VOTE_SCHEDULER}")
    urls[VOTE_SCHEDULER] = vote.openai_base_url
    return urls


@contextlib.asynccontextmanager
async def bench_stack(settings: BenchSettings, log_dir: Path) -> AsyncIterator[LocalStack]:
    """Verifier, vLLM, NATS, scheduler and workers, ready on entry, stopped on exit."""
    await asyncio.to_thread(_prepare, settings.model_dir, log_dir)
    vllm_args = ["--chat-template", str(CHAT_TEMPLATE)] if settings.chat_template else []
    async with local_stack(
        bench_config(settings),
        model_dir=settings.model_dir,
        workers=settings.workers,
        verifier=shipped.verifier_command(),
        vllm_args=vllm_args,
        log_dir=log_dir,
    ) as local:
        yield local


def _prepare(model_dir: Path, log_dir: Path) -> None:
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"no model at {model_dir}: train it with `python -m models.arith.train`"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
