"""`python -m ponder.local {up,config,cluster}`: run Ponder on this machine, without Kubernetes.

    python -m ponder.local up [--model DIR] [--workers N] [--config FILE | --from-rsvc YAML]
    python -m ponder.local config [--model DIR | --config FILE | --from-rsvc YAML] [-o FILE]
    python -m ponder.local cluster [--workdir DIR] [--gpu-nodes N] [--cpu-nodes N]

`up` starts NATS, `vllm serve`, the workers, the scheduler and a verifier server as processes on
loopback and serves until Ctrl-C; `config` prints the ServiceConfig JSON that the scheduler and
the workers read (`--config`); `cluster` is the local Kubernetes control plane of the e2e tests
(`make cluster`). Bad options exit 2 with a one-line message; a failed start exits 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ponder.local.config_sources import DEFAULT_NATS_URL, ConfigError
from ponder.local.interrupts import run_main
from ponder.local.shipped import shipped_model_dir
from ponder.local.up import PROG, ConfigSource, VerifierChoice, plan_up, resolve_config, serve

USAGE_EXIT = 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_mutually_exclusive_group()
    sources.add_argument(
        "--config", type=Path, metavar="FILE", help="a ServiceConfig JSON file to serve"
    )
    sources.add_argument(
        "--from-rsvc",
        type=Path,
        metavar="YAML",
        help="a ReasoningService YAML, translated as the operator does",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m ponder.local`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run Ponder on this machine, without Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the whole stack on loopback and serve until Ctrl-C",
        description=(
            "Start NATS, vLLM, the workers, the scheduler and a verifier as local processes on "
            "free ports, print the OpenAI base URL and a line to try, and serve until Ctrl-C or "
            "SIGTERM, which stop everything started. Without --verifier options, the shipped "
            "model's step verifier starts when serving the shipped model from a checkout and "
            "the service config asks for an HTTP verifier."
        ),
    )
    up.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="Hugging Face model folder for vLLM (default: the checkout's "
        "models/arith/ponder-arith; required in an installed package)",
    )
    up.add_argument("--workers", type=_positive, default=2, metavar="N", help="workers [2]")
    _add_source_options(up)
    up.add_argument(
        "--vllm-url",
        metavar="URL",
        help="use the vLLM server at URL instead of starting one (it must serve the "
        "config's model name)",
    )
    up.add_argument(
        "--vllm-args",
        default="",
        metavar="ARGS",
        help="more vLLM flags, after the CPU defaults (e.g. '--dtype auto' on a GPU)",
    )
    verifiers = up.add_mutually_exclusive_group()
    verifiers.add_argument(
        "--verifier",
        metavar="MODULE",
        help="start `python -m MODULE --port P` as the service's verifier",
    )
    verifiers.add_argument(
        "--verifier-command",
        metavar="CMD",
        help="start CMD as the service's verifier or reward model ({port} is its port; "
        "--port {port} is appended if CMD names none)",
    )
    verifiers.add_argument("--no-verifier", action="store_true", help="start no verifier server")
    up.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        help="where each process logs [a new temporary folder, kept]",
    )

    config = commands.add_parser(
        "config",
        help="print the ServiceConfig JSON the scheduler and workers read",
        description=(
            "Print the ServiceConfig JSON that `python -m ponder.scheduler --config` and "
            "`python -m ponder.workers --config` read: from a ReasoningService YAML (the "
            "operator's own translation), a ServiceConfig file (checked), or a model folder's "
            "defaults (the shipped model by default in a checkout)."
        ),
    )
    config.add_argument("--model", type=Path, metavar="DIR", help="the defaults for this model")
    _add_source_options(config)
    config.add_argument(
        "--nats-url",
        metavar="URL",
        help=f"the NATS server [{DEFAULT_NATS_URL}; a ReasoningService's spec.nats.url wins]",
    )
    config.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here [stdout]")

    commands.add_parser(
        "cluster",
        help="the local Kubernetes control plane with fake GPU nodes, until Ctrl-C",
        add_help=False,
    )
    return parser


def run_up(args: argparse.Namespace) -> int:
    """`up`: plan, then serve under run_main (Ctrl-C and SIGTERM stop everything)."""
    source = ConfigSource(config_file=args.config, rsvc_file=args.from_rsvc, model_dir=args.model)
    verifier = VerifierChoice(args.verifier, args.verifier_command, args.no_verifier)
    plan = plan_up(
        source,
        workers=args.workers,
        vllm_url=args.vllm_url,
        verifier=verifier,
        vllm_args=args.vllm_args,
    )
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="ponder-local-"))
    return run_main(serve(plan, log_dir))


def run_config(args: argparse.Namespace) -> int:
    """`config`: the ServiceConfig JSON to stdout or `--output`."""
    if args.model is not None and (args.config or args.from_rsvc):
        raise ConfigError("give one of --model, --config and --from-rsvc")
    model_dir = args.model
    if model_dir is None and not (args.config or args.from_rsvc):
        model_dir = shipped_model_dir()
    source = ConfigSource(args.config, args.from_rsvc, model_dir, args.nats_url)
    text = resolve_config(source).model_dump_json(indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text)
        except OSError as error:
            raise ConfigError(f"--output {args.output}: {error.strerror or error}") from error
    return 0


def run_cluster(argv: Sequence[str]) -> int:
    """`cluster`: ponder.local.cluster.local_cluster's own command line."""
    from ponder.local.cluster.local_cluster import main as cluster_main

    cluster_main([*argv], prog=f"{PROG} cluster")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status (2 for bad options, with a one-line message)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["cluster"]:
        # The cluster parses its own options (and --help); importing it needs no Kubernetes.
        return run_cluster(arguments[1:])
    args = build_parser().parse_args(arguments)
    try:
        if args.command == "up":
            return run_up(args)
        return run_config(args)
    except ConfigError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return USAGE_EXIT
