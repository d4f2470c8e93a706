"""The whole local data plane: NATS, vLLM, N workers and the scheduler, as real processes.

    async with local_dataplane(model_dir, workers=2, log_dir=logs) as plane:
        client = openai.AsyncOpenAI(base_url=plane.openai_base_url, api_key="unused")
        ...
        plane.kill_worker(0)            # SIGKILL, as a crashed pod
        await plane.restart_worker(0)   # a fresh process under the same worker id

Parts that are already running (a session's NATS or vLLM) are passed by URL and reused; the
others are started here and stopped on exit, in reverse order. The integration tests use it
directly; `ponder.local.stack.local_stack` (what `python -m ponder.local up`, `make demo` and the
benchmarks run) adds a verifier server in front of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from ponder.api.jetstream import ensure_stream
from ponder.api.nats_tls import client_tls
from ponder.api.nats_urls import nats_servers
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.local.nats import NatsAuth, nats_server
from ponder.local.scheduler import SchedulerProcess, scheduler_process
from ponder.local.vllm import vllm_server
from ponder.local.worker import WorkerProcess, worker_process
from ponder.operator.nats_trust import SCHEDULER_CREDS, WORKER_CREDS

DEFAULT_SERVED_NAME = "ponder-arith"
DEFAULT_MAX_MODEL_LEN = 256


@dataclass
class Dataplane:
    """Handles and URLs of a running local data plane."""

    config: ServiceConfig
    nats_url: str
    vllm_url: str
    scheduler: SchedulerProcess
    workers: list[WorkerProcess]
    log_dir: Path | None
    _stack: contextlib.AsyncExitStack = field(repr=False)
    vllm_process: subprocess.Popen[bytes] | None = None
    """The `vllm serve` this plane started (its API server; the engine runs as its child),
    None when it reuses one by URL."""
    worker_extra_args: tuple[str, ...] = ()
    """What every worker's command line adds (its NATS credentials with authentication on, the
    NATS CA with TLS on)."""

    @property
    def base_url(self) -> str:
        """The scheduler's `http://127.0.0.1:<port>` (`/readyz`, `/metrics`, `/v1/...`)."""
        return self.scheduler.base_url

    @property
    def openai_base_url(self) -> str:
        """What the `openai` client takes as `base_url` (`.../v1`)."""
        return self.scheduler.openai_base_url

    @property
    def subjects(self) -> ServiceSubjects:
        """The NATS subjects of this service."""
        return ServiceSubjects(self.config.namespace, self.config.name)

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker `index` (its whole process group): no drain, no acks."""
        process = self.workers[index].process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    async def restart_worker(self, index: int) -> WorkerProcess:
        """Start a fresh worker in place of worker `index` (after `kill_worker`)."""
        old = self.workers[index]
        worker = await self._stack.enter_async_context(
            worker_process(
                self.config,
                nats_url=self.nats_url,
                vllm_url=self.vllm_url,
                worker_id=old.worker_id,
                log_dir=self.log_dir,
                extra_args=self.worker_extra_args,
            )
        )
        self.workers[index] = worker
        return worker


def merge_overrides(config: ServiceConfig, overrides: Mapping[str, Any] | None) -> ServiceConfig:
    """`config` with `overrides` merged in by section: a mapping updates its section's keys
    (`{"strategy": {"branches_per_job": 4}}` keeps the other strategy fields), anything else
    replaces the field. Raises pydantic's ValidationError if the result is not a ServiceConfig."""
    merged: dict[str, Any] = config.model_dump(mode="json")
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return ServiceConfig.model_validate(merged)


def dataplane_config(
    *,
    name: str,
    model: str,
    max_model_len: int | None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """A ServiceConfig for a local data plane; `overrides` merge into its sections
    (e.g. `{"slots_per_worker": 4, "strategy": {"branches_per_job": 4}}`)."""
    return merge_overrides(
        ServiceConfig(name=name, model=model, max_model_len=max_model_len), overrides
    )


@contextlib.asynccontextmanager
async def local_dataplane(
    model_dir: Path | None = None,
    *,
    workers: int = 2,
    name: str = "dataplane",
    served_name: str = DEFAULT_SERVED_NAME,
    max_model_len: int | None = DEFAULT_MAX_MODEL_LEN,
    config_overrides: Mapping[str, Any] | None = None,
    config: ServiceConfig | None = None,
    nats_url: str | None = None,
    vllm_url: str | None = None,
    vllm_args: Sequence[str] = (),
    scheduler_id: str = "scheduler-1",
    log_dir: Path | None = None,
    nats_auth: NatsAuth | None = None,
    nats_ca: Path | None = None,
) -> AsyncIterator[Dataplane]:
    """Start what is missing (NATS unless `nats_url`, vLLM on `model_dir` unless `vllm_url`),
    then the scheduler (it creates the stream) and `workers` workers; ready on entry.

    The service is `config` when given (its `model` is the served name, its `max_model_len`
    vLLM's), else one built from `name`, `served_name`, `max_model_len` and
    `config_overrides`. Its `nats_url` is replaced by the NATS in use. `vllm_args` go to the
    vLLM this starts.

    With `nats_auth` (a NATS server that requires credentials, given by `nats_url`) the plane
    runs as the operator runs it: the stream is set up with the operator's credentials, and
    the scheduler and workers get only their service's own (`ponder.api.nats_permissions`).
    With `nats_ca` (a NATS server that requires TLS) every connection verifies the server's
    certificate with that CA (`--nats-ca`).
    """
    if vllm_url is None and model_dir is None:
        raise ValueError("give model_dir (to start vLLM) or vllm_url (to reuse one)")
    if config is None:
        config = dataplane_config(
            name=name, model=served_name, max_model_len=max_model_len, overrides=config_overrides
        )
    async with contextlib.AsyncExitStack() as stack:
        if nats_url is None:
            nats_url = (await stack.enter_async_context(nats_server(log_dir))).url
        vllm_process = None
        if vllm_url is None:
            assert model_dir is not None
            server = await stack.enter_async_context(
                vllm_server(
                    model_dir,
                    served_name=config.model,
                    max_model_len=config.max_model_len,
                    log_dir=log_dir,
                    extra_args=vllm_args,
                )
            )
            vllm_url = server.base_url
            vllm_process = server.process
        config = config.model_copy(update={"nats_url": nats_url})
        scheduler_extra: tuple[str, ...] = ()
        worker_extra: tuple[str, ...] = ()
        if nats_auth is not None:
            scheduler_extra, worker_extra = await _service_credentials(
                stack, nats_auth, config, max_workers=max(workers, 1), nats_ca=nats_ca
            )
        if nats_ca is not None:
            scheduler_extra += ("--nats-ca", str(nats_ca))
            worker_extra += ("--nats-ca", str(nats_ca))
        scheduler = await stack.enter_async_context(
            scheduler_process(
                config,
                scheduler_id=scheduler_id,
                ensure_stream=nats_auth is None,
                max_workers=max(workers, 1),
                stats_interval_seconds=1.0,
                log_dir=log_dir,
                extra_args=scheduler_extra,
            )
        )
        started = [
            await stack.enter_async_context(
                worker_process(
                    config,
                    nats_url=nats_url,
                    vllm_url=vllm_url,
                    worker_id=f"worker-{index + 1}",
                    log_dir=log_dir,
                    extra_args=worker_extra,
                )
            )
            for index in range(workers)
        ]
        yield Dataplane(
            config=config,
            nats_url=nats_url,
            vllm_url=vllm_url,
            scheduler=scheduler,
            workers=started,
            log_dir=log_dir,
            _stack=stack,
            vllm_process=vllm_process,
            worker_extra_args=worker_extra,
        )


async def _service_credentials(
    stack: contextlib.AsyncExitStack,
    auth: NatsAuth,
    config: ServiceConfig,
    *,
    max_workers: int,
    nats_ca: Path | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the operator does for a service on an authenticating NATS: its stream and consumer,
    set up with the operator's credentials, and a credentials file per role. Returns the
    scheduler's and the workers' extra arguments."""
    subjects = ServiceSubjects(config.namespace, config.name)
    admin = await nats.connect(
        nats_servers(config.nats_url),
        user_credentials=str(auth.admin_creds),
        tls=client_tls(nats_ca),
    )
    try:
        await ensure_stream(admin.jetstream(), subjects, config, max_workers)
    finally:
        await admin.close()
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ponder-creds-")))
    paths = {}
    for key, text in auth.trust.service_creds(subjects, int(time.time())).items():
        paths[key] = folder / key
        paths[key].write_text(text)
    scheduler, worker = paths[SCHEDULER_CREDS], paths[WORKER_CREDS]
    return ("--nats-creds", str(scheduler)), ("--nats-creds", str(worker))
