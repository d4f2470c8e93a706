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
from collections.abc import Mapping, Sequence

import kopf

from ponder.operator.handlers import build_registry, configure
from ponder.operator.runtime import OperatorConfig, open_runtime

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_INTERVAL_SECONDS = 15.0
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ponder.operator",
        description="Reconcile ReasoningServices into workers, a scheduler and a job stream.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch this namespace (repeatable, globs allowed) [PONDER_NAMESPACES, comma list]",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--nats-url",
        default=environ.get("PONDER_NATS_URL", DEFAULT_NATS_URL),
        help=f"NATS of services without spec.nats.url [PONDER_NATS_URL; {DEFAULT_NATS_URL}]",
    )
    parser.add_argument(
        "--autoscale-interval-seconds",
        type=float,
        default=float(
            environ.get("PONDER_AUTOSCALE_INTERVAL_SECONDS", str(DEFAULT_INTERVAL_SECONDS))
        ),
        help="period of the autoscaler and status refresh "
        f"[PONDER_AUTOSCALE_INTERVAL_SECONDS; {DEFAULT_INTERVAL_SECONDS:g}]",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(environ.get("PONDER_RESYNC_SECONDS", "300")),
        help="re-apply unchanged children at least this often [PONDER_RESYNC_SECONDS; 300]",
    )
    parser.add_argument(
        "--liveness",
        default=environ.get("PONDER_LIVENESS", DEFAULT_LIVENESS),
        help=f"kopf liveness endpoint URL, or '' for none [PONDER_LIVENESS; {DEFAULT_LIVENESS}]",
    )
    parser.add_argument(
        "--log-level",
        default=environ.get("PONDER_LOG_LEVEL", "info"),
        help="debug, info, warning [PONDER_LOG_LEVEL; info]",
    )
    args = parser.parse_args(list(argv))
    if not args.namespace and not args.all_namespaces and environ.get("PONDER_NAMESPACES"):
        args.namespace = [ns for ns in environ["PONDER_NAMESPACES"].split(",") if ns]
    if args.autoscale_interval_seconds <= 0:
        parser.error("--autoscale-interval-seconds must be positive")
    return args


async def run(args: argparse.Namespace) -> None:
    config = OperatorConfig(
        nats_url=args.nats_url,
        autoscale_interval_seconds=args.autoscale_interval_seconds,
        resync_seconds=args.resync_seconds,
    )
    settings = kopf.OperatorSettings()
    configure(settings)
    async with open_runtime(config) as runtime:
        await kopf.operator(
            registry=build_registry(config),
            settings=settings,
            memo=kopf.Memo(runtime=runtime),
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
            liveness_endpoint=args.liveness or None,
        )


class _QuietRoutine(logging.Filter):
    """Drops kopf's line for every successful timer tick and child event: at that rate it says
    nothing (failures are still logged)."""

    ROUTINE = ("Timer 'autoscale' succeeded", "Handler 'child-changed' succeeded")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.ROUTINE)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per HTTP request is debugging detail, not operator news.
    for chatty in ("httpx", "httpx2", "httpcore", "aiohttp.access"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietRoutine())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(args.log_level)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
