"""The worker's settings: the service's `ServiceConfig` file plus per-process overrides.

Precedence: command line, then environment (`PONDER_*`), then the config file, then defaults.
The operator mounts the ServiceConfig JSON from a ConfigMap and sets the rest in the pod spec.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.api.service_config import ServiceConfig
from ponder.api.settings_sources import option_flag, option_value, service_config_from
from ponder.api.subjects import ServiceSubjects

DEFAULT_DRAIN_SECONDS = 25.0
"""Kubernetes waits 30 s (terminationGracePeriodSeconds) before SIGKILL; 25 s leaves time to
hand the unfinished jobs back."""

DEFAULT_VLLM_URL = "http://127.0.0.1:8000"
DEFAULT_PORT = 8081
DEFAULT_MAX_WORKERS = 16


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
    http_host: str = "0.0.0.0"
    http_port: int = DEFAULT_PORT
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    ensure_stream: bool = False
    """Create or update the stream and consumer at start (local runs; the operator does it in
    Kubernetes)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    """Pool size the consumer's MaxAckPending is sized for, with `ensure_stream`."""
    retry_delay_seconds: float = 1.0
    """Delay before a job handed back after an engine outage is delivered again."""
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


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ponder.workers",
        description="Ponder worker: pulls branch jobs from JetStream and runs them on vLLM.",
    )
    parser.add_argument(
        "--config", type=Path, help="ServiceConfig JSON file [PONDER_CONFIG] (required)"
    )
    parser.add_argument("--nats-url", help="NATS server [PONDER_NATS_URL; config's nats_url]")
    parser.add_argument("--vllm-url", help=f"vLLM base URL [PONDER_VLLM_URL; {DEFAULT_VLLM_URL}]")
    parser.add_argument("--worker-id", help="Name in results and logs [PONDER_WORKER_ID; host-pid]")
    parser.add_argument(
        "--slots", type=int, help="Branches at once [PONDER_SLOTS; config's slots_per_worker]"
    )
    parser.add_argument("--host", help="HTTP bind address [PONDER_HTTP_HOST; 0.0.0.0]")
    parser.add_argument(
        "--port", type=int, help=f"HTTP port of /healthz, /metrics [PONDER_PORT; {DEFAULT_PORT}]"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        help=f"Grace for in-flight jobs on SIGTERM [PONDER_DRAIN_SECONDS; {DEFAULT_DRAIN_SECONDS}]",
    )
    parser.add_argument(
        "--ensure-stream",
        action="store_true",
        default=None,
        help="Create/update the stream and consumer at start [PONDER_ENSURE_STREAM=1]",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        help=f"Pool size for the consumer's MaxAckPending [PONDER_MAX_WORKERS; "
        f"{DEFAULT_MAX_WORKERS}]",
    )
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerSettings:
    """Settings from the command line and environment; exits with usage on bad input."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    service = service_config_from(parser, args.config, environ)
    try:
        return settings_from(service, vars(args), environ)
    except ValueError as error:
        parser.error(str(error))


def settings_from(
    service: ServiceConfig, options: Mapping[str, object], environ: Mapping[str, str]
) -> WorkerSettings:
    """Merge command-line `options` (None when absent) over `environ` over `service` (pure)."""

    def pick(option: str, env: str) -> str | None:
        return option_value(options, environ, option, env)

    slots = pick("slots", "PONDER_SLOTS")
    port = pick("port", "PONDER_PORT")
    drain = pick("drain_seconds", "PONDER_DRAIN_SECONDS")
    max_workers = pick("max_workers", "PONDER_MAX_WORKERS")
    ensure = option_flag(options, environ, "ensure_stream", "PONDER_ENSURE_STREAM")
    settings = WorkerSettings(
        service=service,
        nats_url=pick("nats_url", "PONDER_NATS_URL") or service.nats_url,
        vllm_url=pick("vllm_url", "PONDER_VLLM_URL") or DEFAULT_VLLM_URL,
        worker_id=pick("worker_id", "PONDER_WORKER_ID") or default_worker_id(),
        slots=int(slots) if slots else service.slots_per_worker,
        http_host=pick("host", "PONDER_HTTP_HOST") or "0.0.0.0",
        http_port=int(port) if port else DEFAULT_PORT,
        drain_seconds=float(drain) if drain else DEFAULT_DRAIN_SECONDS,
        ensure_stream=ensure,
        max_workers=int(max_workers) if max_workers else DEFAULT_MAX_WORKERS,
    )
    if settings.slots < 1:
        raise ValueError(f"slots={settings.slots} must be at least 1")
    if settings.drain_seconds < 0:
        raise ValueError(f"drain_seconds={settings.drain_seconds} must not be negative")
    if settings.max_workers < 1:
        raise ValueError(f"max_workers={settings.max_workers} must be at least 1")
    return settings
