"""The local stack every benchmark runs against, and how a benchmark process starts and stops.

    async with bench_stack(BenchSettings(...), log_dir) as stack:
        client = PonderClient(stack.openai_base_url, stack.served_name)

starts the HTTP step verifier (`models.arith.verifier_server`), `vllm serve` of the shipped
arithmetic model, then NATS, the scheduler (with the verifier configured as the service's HTTP
verifier) and the workers (`tests.stack.dataplane.local_dataplane`). Everything is stopped on
exit, in reverse order, also when the run is cancelled.

`run_main` runs a benchmark's coroutine so that Ctrl-C (SIGINT) and SIGTERM cancel it: the
cancellation unwinds every `async with` above, which stops every process the run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.api.service_config import ServiceConfig
from tests.stack.dataplane import Dataplane, local_dataplane
from tests.stack.scheduler import SchedulerProcess, scheduler_process
from tests.stack.verifier import verifier_server
from tests.stack.vllm import vllm_server

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "models" / "arith" / "ponder-arith"
CHAT_TEMPLATE = REPO_ROOT / "bench" / "arith_chat_template.jinja"
SERVED_NAME = "ponder-arith"
MAX_MODEL_LEN = 512
"""The model's max_position_embeddings: room for refine's critique and revision prompts."""

MAX_BRANCHES = 64
"""Room for beam search: B x K branches per step over the task's up to four steps."""

STEP_DELIMITER = " "
"""The arithmetic model writes `23+48=71 71-17=54 #54`: one step per space."""


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
    """The branch cap a beam search needs: B x K per step, four steps (3 `a+b=c` and `#54`)."""
    return min(MAX_BRANCHES, settings.beam_width * settings.beam_expansions * 4)


def service_overrides(settings: BenchSettings, verifier_url: str | None) -> dict[str, Any]:
    """ServiceConfig overrides for the arithmetic model; no verifier when `verifier_url` is
    None (a vote-only scheduler)."""
    verifier: dict[str, Any] = (
        {"kind": "http", "url": verifier_url, "timeout_seconds": 10.0}
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


@dataclass
class BenchStack:
    """The running stack: the scheduler's OpenAI URL, vLLM's, the verifier's."""

    plane: Dataplane
    vllm_url: str
    verifier_url: str
    log_dir: Path
    settings: BenchSettings
    _stack: contextlib.AsyncExitStack = field(repr=False)

    @property
    def openai_base_url(self) -> str:
        return self.plane.openai_base_url

    @property
    def served_name(self) -> str:
        return self.plane.config.model

    @property
    def config(self) -> ServiceConfig:
        return self.plane.config

    async def add_scheduler(self, scheduler_id: str, verifier: bool) -> SchedulerProcess:
        """Another scheduler replica of the same service (same stream and workers), e.g. one
        without the verifier; stopped with the stack."""
        overrides = service_overrides(self.settings, self.verifier_url if verifier else None)
        base = self.config.model_dump(mode="json")
        for section, values in overrides.items():
            base[section] = {**base[section], **values} if isinstance(values, dict) else values
        config = ServiceConfig.model_validate(base)
        return await self._stack.enter_async_context(
            scheduler_process(
                config,
                nats_url=self.plane.nats_url,
                scheduler_id=scheduler_id,
                stats_interval_seconds=1.0,
                log_dir=self.log_dir,
            )
        )


@contextlib.asynccontextmanager
async def bench_stack(settings: BenchSettings, log_dir: Path) -> AsyncIterator[BenchStack]:
    """Verifier, vLLM, NATS, scheduler and workers, ready on entry, stopped on exit."""
    await asyncio.to_thread(_prepare, settings.model_dir, log_dir)
    extra_args = ["--chat-template", str(CHAT_TEMPLATE)] if settings.chat_template else []
    async with contextlib.AsyncExitStack() as stack:
        verifier = await stack.enter_async_context(verifier_server(log_dir))
        verifier_url = f"{verifier.url}/verify"
        vllm = await stack.enter_async_context(
            vllm_server(
                settings.model_dir,
                served_name=SERVED_NAME,
                max_model_len=MAX_MODEL_LEN,
                log_dir=log_dir,
                extra_args=extra_args,
            )
        )
        plane = await stack.enter_async_context(
            local_dataplane(
                vllm_url=vllm.base_url,
                workers=settings.workers,
                name="bench",
                served_name=SERVED_NAME,
                max_model_len=MAX_MODEL_LEN,
                config_overrides=service_overrides(settings, verifier_url),
                log_dir=log_dir,
            )
        )
        yield BenchStack(
            plane=plane,
            vllm_url=vllm.base_url,
            verifier_url=verifier_url,
            log_dir=log_dir,
            settings=settings,
            _stack=stack,
        )


def _prepare(model_dir: Path, log_dir: Path) -> None:
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"no model at {model_dir}: train it with `python -m models.arith.train`"
        )
    log_dir.mkdir(parents=True, exist_ok=True)


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` to its exit code; Ctrl-C or SIGTERM cancel it, which stops every process it
    started (their `async with` blocks unwind), then exit 130 or 143."""
    terminated = False

    async def guarded() -> int:
        nonlocal terminated
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        return await main

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        print("\ninterrupted: every process this run started was stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        if not terminated:
            raise
        print("\nterminated: every process this run started was stopped", file=sys.stderr)
        return 143
