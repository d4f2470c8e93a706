"""The local stack: a verifier server if the service has one to start, then the data plane.

    async with local_stack(config, model_dir=model, verifier=command, log_dir=logs) as stack:
        client = openai.AsyncOpenAI(base_url=stack.openai_base_url, api_key="unused")

starts the verifier (when `verifier` names a command), NATS, `vllm serve` of `model_dir` (unless
`vllm_url` names a running one), the scheduler and the workers, all on loopback with free ports,
and points the service's verifier at the server it started. Everything is stopped on exit, in
reverse order, also when the block is cancelled (Ctrl-C or SIGTERM under
`ponder.local.interrupts.run_main`) or a part fails to start. `python -m ponder.local up`,
`make demo` and the benchmarks all start their processes here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ponder.api.service_config import (
    REMOTE_VERIFIER_KINDS,
    ServiceConfig,
    VerifierConfig,
    VerifierKind,
)
from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.scheduler import SchedulerProcess, scheduler_process
from ponder.local.verifier import ServerCommand, VerifierServer, verifier_server
from ponder.local.vllm import VllmServer, vllm_server

VERIFY_PATH = "/verify"
"""The route of an HTTP verifier that a config names no URL for (the step verifier's)."""


def with_verifier(config: ServiceConfig, server_url: str) -> ServiceConfig:
    """`config` with its verifier moved to `server_url` (`http://127.0.0.1:<port>`).

    An HTTP verifier or reward model keeps its kind, path, model and timeout; a config without
    a remote verifier (none, logprob) gets the HTTP verifier at `{server_url}/verify`.
    """
    verifier = config.strategy.verifier
    if verifier.kind in REMOTE_VERIFIER_KINDS and verifier.url:
        parts = urlsplit(verifier.url)
        query = f"?{parts.query}" if parts.query else ""
        moved = verifier.model_copy(update={"url": f"{server_url}{parts.path}{query}"})
    else:
        moved = VerifierConfig(
            kind=VerifierKind.HTTP,
            url=f"{server_url}{VERIFY_PATH}",
            timeout_seconds=verifier.timeout_seconds,
        )
    strategy = config.strategy.model_copy(update={"verifier": moved})
    return config.model_copy(update={"strategy": strategy})


@dataclass
class LocalStack:
    """The running stack: its service config (with the URLs in use) and its processes."""

    plane: Dataplane
    verifier: VerifierServer | None
    log_dir: Path | None
    _stack: contextlib.AsyncExitStack = field(repr=False)

    @property
    def config(self) -> ServiceConfig:
        """The service config the scheduler and workers run with."""
        return self.plane.config

    @property
    def openai_base_url(self) -> str:
        """What the `openai` client takes as `base_url` (the scheduler's `.../v1`)."""
        return self.plane.openai_base_url

    @property
    def served_name(self) -> str:
        """The model name clients ask for."""
        return self.plane.config.model

    @property
    def vllm_url(self) -> str:
        """The vLLM server's `http://127.0.0.1:<port>`."""
        return self.plane.vllm_url

    @property
    def nats_url(self) -> str:
        """The NATS server's `nats://127.0.0.1:<port>`."""
        return self.plane.nats_url

    @property
    def verifier_url(self) -> str | None:
        """The URL the service calls its verifier at, when this stack started one."""
        return self.config.strategy.verifier.url if self.verifier else None

    async def add_reward_model(
        self, model_dir: Path, served_name: str, vllm_args: Sequence[str]
    ) -> VllmServer:
        """A reward model served by another vLLM (a pooling model: no warm-up completion),
        ready on return, stopped with the stack; point a verifier config at its `base_url`."""
        return await self._stack.enter_async_context(
            vllm_server(
                model_dir,
                served_name=served_name,
                log_dir=self.log_dir,
                extra_args=vllm_args,
                warm=False,
            )
        )

    async def add_scheduler(self, config: ServiceConfig, scheduler_id: str) -> SchedulerProcess:
        """Another scheduler replica on this stack's NATS (the same stream and workers when
        `config` names the same service), ready on return, stopped with the stack."""
        return await self._stack.enter_async_context(
            scheduler_process(
                config.model_copy(update={"nats_url": self.nats_url}),
                nats_url=self.nats_url,
                scheduler_id=scheduler_id,
                stats_interval_seconds=1.0,
                log_dir=self.log_dir,
            )
        )


@contextlib.asynccontextmanager
async def local_stack(
    config: ServiceConfig,
    *,
    model_dir: Path | None = None,
    vllm_url: str | None = None,
    workers: int = 2,
    verifier: ServerCommand | None = None,
    vllm_args: Sequence[str] = (),
    log_dir: Path | None = None,
) -> AsyncIterator[LocalStack]:
    """Verifier (if `verifier`), NATS, vLLM (on `model_dir` unless `vllm_url`), scheduler and
    `workers` workers serving `config`; ready on entry, stopped on exit."""
    if log_dir is not None:
        await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        server = None
        if verifier is not None:
            server = await stack.enter_async_context(verifier_server(verifier, log_dir))
            config = with_verifier(config, server.url)
        plane = await stack.enter_async_context(
            local_dataplane(
                model_dir,
                config=config,
                vllm_url=vllm_url,
                vllm_args=vllm_args,
                workers=workers,
                log_dir=log_dir,
            )
        )
        yield LocalStack(plane=plane, verifier=server, log_dir=log_dir, _stack=stack)
