"""`python -m ponder.operator`: run the ReasoningService operator (see --help).

The Kubernetes credentials come from the environment as usual: in-cluster service account, else
KUBECONFIG, else ~/.kube/config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf

from ponder.api.settings import (
    LOG_LEVEL,
    NATS_CA,
    NATS_URL,
    OPERATOR_ID,
    Option,
    add_options,
    comma_list,
    default_component_id,
)
from ponder.operator.handlers import build_registry, configure
from ponder.operator.metrics import DEFAULT_METRICS_PORT, metrics_server
from ponder.operator.nats_credentials import (
    DEFAULT_LIFETIME_HOURS,
    MAX_LIFETIME_HOURS,
    MIN_LIFETIME_HOURS,
    parse_secret_ref,
)
from ponder.operator.peering import DEFAULT_LIFETIME_SECONDS, peering_of
from ponder.operator.peering_watch import watch_activity
from ponder.operator.runtime import OperatorConfig, open_runtime

_CONFIG_DEFAULTS = OperatorConfig()

NAMESPACES: Option[list[str]] = Option(
    "--namespace",
    "PONDER_NAMESPACES",
    None,
    "Namespace to watch (repeatable, globs allowed; the variable takes a comma list)",
    comma_list,
    default_text="every namespace",
    short="-n",
)
AUTOSCALE_INTERVAL: Option[float] = Option(
    "--autoscale-interval-seconds",
    "PONDER_AUTOSCALE_INTERVAL_SECONDS",
    _CONFIG_DEFAULTS.autoscale_interval_seconds,
    "Period of the autoscaler and status refresh",
    float,
)
RESYNC: Option[float] = Option(
    "--resync-seconds",
    "PONDER_RESYNC_SECONDS",
    _CONFIG_DEFAULTS.resync_seconds,
    "Re-apply unchanged children at least this often",
    float,
)
LIVENESS: Option[str] = Option(
    "--liveness",
    "PONDER_LIVENESS",
    "http://0.0.0.0:8080/healthz",
    "kopf liveness endpoint URL, or '' for none",
    str,
    empty_is_value=True,
)
METRICS_PORT: Option[int] = Option(
    "--metrics-port",
    "PONDER_METRICS_PORT",
    DEFAULT_METRICS_PORT,
    "Port of the operator's Prometheus metrics (/metrics on every interface), 0 for none",
    int,
)
PEERING: Option[str] = Option(
    "--peering",
    "PONDER_PEERING",
    None,
    "Peering object shared with the other replicas: one is active, the rest stand by",
    str,
    default_text="none (standalone)",
)
PRIORITY: Option[int] = Option(
    "--priority",
    "PONDER_PEERING_PRIORITY",
    None,
    "Peering priority: the highest live one is active (with --peering)",
    int,
    default_text="earliest start highest",
)
PEERING_LIFETIME: Option[int] = Option(
    "--peering-lifetime-seconds",
    "PONDER_PEERING_LIFETIME_SECONDS",
    DEFAULT_LIFETIME_SECONDS,
    "A killed active replica's standby takes over within this (with --peering)",
    int,
)
NATS_TRUST_SECRET: Option[str] = Option(
    "--nats-trust-secret",
    "PONDER_NATS_TRUST_SECRET",
    None,
    "namespace/name of the Secret with the NATS trust (created when absent): NATS requires "
    "credentials and each service gets its own",
    str,
    default_text="none (NATS without credentials)",
)
NATS_CREDS_LIFETIME: Option[int] = Option(
    "--nats-creds-lifetime-hours",
    "PONDER_NATS_CREDS_LIFETIME_HOURS",
    DEFAULT_LIFETIME_HOURS,
    f"Hours the NATS users issued to each service stay valid, {MIN_LIFETIME_HOURS} to "
    f"{MAX_LIFETIME_HOURS}: renewed with a third left; a deleted service's end by then "
    "(with --nats-trust-secret)",
    int,
)
STREAM_REPLICAS: Option[int] = Option(
    "--stream-replicas",
    "PONDER_STREAM_REPLICAS",
    _CONFIG_DEFAULTS.stream_replicas,
    "Copies JetStream keeps of every service's job stream, 1 to 5: 3 on a three-node NATS "
    "cluster (the chart's nats.cluster.enabled)",
    int,
)
OPERATOR_NATS_URL = NATS_URL.with_default(_CONFIG_DEFAULTS.nats_url)

OPTIONS: tuple[Option[Any], ...] = (
    NAMESPACES,
    OPERATOR_NATS_URL,
    NATS_TRUST_SECRET,
    NATS_CREDS_LIFETIME,
    NATS_CA,
    STREAM_REPLICAS,
    AUTOSCALE_INTERVAL,
    RESYNC,
    LIVENESS,
    METRICS_PORT,
    PEERING,
    PRIORITY,
    PEERING_LIFETIME,
    LOG_LEVEL,
    OPERATOR_ID,
)
"""Every option `python -m ponder.operator` takes besides --all-namespaces, in `--help` order."""


def build_parser() -> argparse.ArgumentParser:
    """The operator's command line: every option in `OPTIONS`, with its variable and default."""
    parser = argparse.ArgumentParser(
        prog="python -m ponder.operator",
        description="Reconcile ReasoningServices into workers, a scheduler and a job stream.",
    )
    scope = parser.add_mutually_exclusive_group()
    NAMESPACES.add_to(scope)
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help=f"Watch every namespace (the default), whatever {NAMESPACES.env} says",
    )
    add_options(parser, OPTIONS[1:])
    return parser


def parse_args(
    argv: Sequence[str], environ: Mapping[str, str], started_at_ns: int | None = None
) -> argparse.Namespace:
    """The operator's settings: command line over `environ` over defaults; exits with usage on
    bad input. `args.peer` is the `Peering` (None: standalone), its default priority from
    `started_at_ns` (now when not given)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    given = dict(vars(args))
    try:
        for option in OPTIONS:
            setattr(args, option.dest, option.resolve(given, environ))
    except ValueError as error:
        parser.error(str(error))
    if args.all_namespaces or args.namespace is None:
        args.namespace = []
    args.operator_id = args.operator_id or default_component_id()
    if args.autoscale_interval_seconds <= 0:
        parser.error("--autoscale-interval-seconds must be positive")
    if not 1 <= args.stream_replicas <= 5:
        parser.error(f"--stream-replicas={args.stream_replicas} must be 1 to 5 (JetStream's)")
    if not MIN_LIFETIME_HOURS <= args.nats_creds_lifetime_hours <= MAX_LIFETIME_HOURS:
        parser.error(
            f"--nats-creds-lifetime-hours={args.nats_creds_lifetime_hours} must be "
            f"{MIN_LIFETIME_HOURS} to {MAX_LIFETIME_HOURS}"
        )
    if args.nats_trust_secret:
        try:
            parse_secret_ref(args.nats_trust_secret)
        except ValueError as error:
            parser.error(f"--nats-trust-secret: {error}")
    try:
        args.peer = peering_of(
            args.peering,
            args.priority,
            args.peering_lifetime_seconds,
            time.time_ns() if started_at_ns is None else started_at_ns,
        )
    except ValueError as error:
        parser.error(str(error))
    return args


async def run(args: argparse.Namespace) -> None:
    """Run kopf with the operator's handlers and runtime until it stops."""
    config = OperatorConfig(
        nats_url=args.nats_url,
        stream_replicas=args.stream_replicas,
        autoscale_interval_seconds=args.autoscale_interval_seconds,
        resync_seconds=args.resync_seconds,
        nats_trust_secret=args.nats_trust_secret,
        nats_creds_lifetime_seconds=args.nats_creds_lifetime_hours * 3600,
        nats_ca=args.nats_ca,
    )
    settings = kopf.OperatorSettings()
    configure(settings, args.peer)
    async with (
        open_runtime(config) as runtime,
        metrics_server(runtime.metrics, "0.0.0.0", args.metrics_port),
    ):
        # Whether this replica is the active one, for /metrics, while kopf runs (paused or not).
        activity = asyncio.create_task(
            watch_activity(
                runtime.kube,
                args.peer,
                args.operator_id,
                runtime.metrics.active,
                args.namespace[0] if args.namespace else None,
            )
        )
        try:
            await kopf.operator(
                registry=build_registry(config),
                settings=settings,
                memo=kopf.Memo(runtime=runtime),
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                # The peering record names this operator as its logs do (kopf's Identity is a
                # str).
                identity=cast(Any, args.operator_id),
                liveness_endpoint=args.liveness or None,
            )
        finally:
            activity.cancel()


class _QuietRoutine(logging.Filter):
    """Drops kopf's line for every successful timer tick and child event: at that rate it says
    nothing (failures are still logged)."""

    ROUTINE = ("Timer 'autoscale' succeeded", "Handler 'child-changed' succeeded")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.ROUTINE)


def configure_logging(level: str, operator_id: str) -> None:
    """Log at `level`, each line naming this operator, without kopf's routine chatter."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s operator={operator_id} %(name)s: %(message)s",
    )
    # One line per HTTP request is debugging detail, not operator news.
    for chatty in ("httpx", "httpx2", "httpcore", "aiohttp.access"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietRoutine())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until interrupted; 130 after Ctrl-C."""
    args = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(args.log_level, args.operator_id)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
