"""The worker's settings: the service's `ServiceConfig` file plus per-process options.

The options shared with the scheduler and the operator are declared in `ponder.api.settings`;
the worker's own are declared below in the same shape. Precedence: command line, then
environment (`PONDER_*`), then the config file, then defaults. The operator mounts the
ServiceConfig JSON from a ConfigMap and sets the rest in the pod spec.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.api.service_config import ServiceConfig
from ponder.api.settings import (
    CONFIG,
    DEFAULT_HTTP_HOST,
    DEFAULT_MAX_WORKERS,
    ENSURE_STREAM,
    HTTP_HOST,
    HTTP_PORT,
    LOG_LEVEL,
    MAX_WORKERS,
    NATS_CA,
    NATS_CREDS,
    NATS_URL,
    WORKER_ID,
    Option,
    add_options,
    default_component_id,
    service_config_from,
)
from ponder.api.subjects import ServiceSubjects
from ponder.workers.engine_watch import CHECK_INTERVAL_SECONDS

DEFAULT_DRAIN_SECONDS = 25.0
"""Kubernetes waits 30 s (terminationGracePeriodSeconds) before SIGKILL; 25 s leaves time to
hand the unfinished jobs back."""

DEFAULT_VLLM_URL = "http://127.0.0.1:8000"
DEFAULT_PORT = 8081

PORT = HTTP_PORT.with_default(DEFAULT_PORT)
WORKER_NATS_URL = NATS_URL.from_config("nats_url")
VLLM_URL: Option[str] = Option(
    "--vllm-url", "PONDER_VLLM_URL", DEFAULT_VLLM_URL, "vLLM base URL", str
)
SLOTS: Option[int] = Option(
    "--slots", "PONDER_SLOTS", None, "Branches generated at once", int
).from_config("slots_per_worker")
DRAIN_SECONDS: Option[float] = Option(
    "--drain-seconds",
    "PONDER_DRAIN_SECONDS",
    DEFAULT_DRAIN_SECONDS,
    "Grace for in-flight jobs on SIGTERM before they are handed back",
    float,
)
ENGINE_CHECK_SECONDS: Option[float] = Option(
    "--engine-check-seconds",
    "PONDER_ENGINE_CHECK_SECONDS",
    CHECK_INTERVAL_SECONDS,
    "How often the engine's health is checked; no jobs are taken while it is down",
    float,
)

OPTIONS: tuple[Option[Any], ...] = (
    CONFIG,
    WORKER_NATS_URL,
    NATS_CREDS,
    NATS_CA,
    VLLM_URL,
    WORKER_ID,
    SLOTS,
    HTTP_HOST,
    PORT,
    DRAIN_SECONDS,
    ENGINE_CHECK_SECONDS,
    ENSURE_STREAM,
    MAX_WORKERS,
    LOG_LEVEL,
)
"""Every option `python -m ponder.workers` takes, in `--help` order."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything one worker process needs."""

    service: ServiceConfig
    nats_url: str
    vllm_url: str
    worker_id: str
    slots: int
    """Branches generated at once (vLLM sequences); the service's `slots_per_worker` unless
    overridden."""
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_PORT
    nats_creds: Path | None = None
    """This service's worker credentials, when NATS requires them."""
    nats_ca: Path | None = None
    """The CA bundle the NATS server's certificate is verified with, when NATS requires TLS."""
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    ensure_stream: bool = False
    """Create or update the stream and consumer at start (local runs; the operator does it in
    Kubernetes)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    """Pool size the consumer's MaxAckPending is sized for, with `ensure_stream`."""
    log_level: str = "info"
    retry_delay_seconds: float = 1.0
    """Delay before a job handed back after an engine outage is delivered again."""
    engine_check_seconds: float = CHECK_INTERVAL_SECONDS
    """How often the engine's health is checked (ponder.workers.engine_watch)."""
    fetch_timeout_seconds: float = 1.0
    """Longest a pull request waits for jobs; also the longest a stop waits for a fetch."""

    @property
    def subjects(self) -> ServiceSubjects:
        return ServiceSubjects(self.service.namespace, self.service.name)

    @property
    def heartbeat_seconds(self) -> float:
        """How often a running job tells JetStream it is in progress: a third of the ack wait,
        so two heartbeats may be lost before the job is redelivered."""
        return self.service.job_ack_wait_seconds / 3


def build_parser() -> argparse.ArgumentParser:
    """The worker's command line: every option in `OPTIONS`, with its variable and default."""
    parser = argparse.ArgumentParser(
        prog="python -m ponder.workers",
        description="Ponder worker: pulls branch jobs from JetStream and runs them on vLLM.",
    )
    add_options(parser, OPTIONS)
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerSettings:
    """Settings from the command line and environment; exits with usage on bad input."""
    parser = build_parser()
    options = vars(parser.parse_args(list(argv)))
    service = service_config_from(parser, options, environ)
    try:
        return settings_from(service, options, environ)
    except ValueError as error:
        parser.error(str(error))


def settings_from(
    service: ServiceConfig, options: Mapping[str, object], environ: Mapping[str, str]
) -> WorkerSettings:
    """Merge command-line `options` (None when absent) over `environ` over `service` (pure)."""
    slots = SLOTS.given(options, environ)
    settings = WorkerSettings(
        service=service,
        nats_url=WORKER_NATS_URL.given(options, environ) or service.nats_url,
        vllm_url=VLLM_URL.value(options, environ),
        worker_id=WORKER_ID.given(options, environ) or default_component_id(),
        slots=service.slots_per_worker if slots is None else slots,
        http_host=HTTP_HOST.value(options, environ),
        http_port=PORT.value(options, environ),
        nats_creds=NATS_CREDS.given(options, environ),
        nats_ca=NATS_CA.given(options, environ),
        drain_seconds=DRAIN_SECONDS.value(options, environ),
        engine_check_seconds=ENGINE_CHECK_SECONDS.value(options, environ),
        ensure_stream=ENSURE_STREAM.value(options, environ),
        max_workers=MAX_WORKERS.value(options, environ),
        log_level=LOG_LEVEL.value(options, environ),
    )
    if settings.slots < 1:
        raise ValueError(f"slots={settings.slots} must be at least 1")
    if settings.drain_seconds < 0:
        raise ValueError(f"drain_seconds={settings.drain_seconds} must not be negative")
    if settings.engine_check_seconds <= 0:
        raise ValueError(
            f"engine_check_seconds={settings.engine_check_seconds} must be greater than 0"
        )
    if settings.max_workers < 1:
        raise ValueError(f"max_workers={settings.max_workers} must be at least 1")
    return settings
