"""`make demo`: every strategy on the shipped arithmetic model, through the whole local stack.

    python -m bench.demo [--model arith|smollm2] [--short] [--problems N] [--out DIR]

Starts the step verifier, `vllm serve` of `models/arith/ponder-arith`, NATS, two workers and the
scheduler (with the verifier as the service's HTTP verifier) through `ponder.local`, the launcher
of `python -m ponder.local up` (bench/stack.py holds the settings), then the learned outcome and
process reward models (each on its own vLLM) with a scheduler replica each, and one replica
without a verifier (`bench.stack.start_verifier_schedulers`). It asks a fixed, seeded set of
held-out problems with each strategy in turn (a bounded number in flight), with a progress bar.
Each row names what scores its branches: nothing (a vote), the learned outcome model (ORM), the
learned process model (PRM), or the step verifier, which recomputes the arithmetic and so knows
the answer ("oracle": a ceiling, never a figure of what test-time compute buys).
Prints a table (accuracy, tokens per query from `usage`, branches, p50/p95 latency, branches
saved by early stopping from the `ponder` object), and writes `results.json`, `table.txt` and
`accuracy_vs_tokens.png` under `out/demo/` (process logs under `logs/`). Ctrl-C stops every
process it started. `--short` (a few problems, smaller widths) is what CI runs.

`--model smollm2` runs a shorter table on the real chat model SmolLM2-135M-Instruct instead
(bench/demo_smollm2.py holds its arms and settings): word-arithmetic questions on the chat
path, the vote-only strategies, no verifier, the same bar, table and plot under
`out/demo-smollm2/`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic

from tqdm import tqdm

from bench import demo_smollm2 as smollm2
from bench.clients import Asked, PonderClient, StrategySpec, run_bounded
from bench.report import (
    plot_accuracy_vs_tokens,
    summary_table,
    write_json,
    write_text,
)
from bench.stack import (
    MODEL_DIR,
    ORACLE_SCHEDULER,
    ORM_SCHEDULER,
    PRM_SCHEDULER,
    REPO_ROOT,
    VOTE_SCHEDULER,
    BenchSettings,
    beam_branches,
    bench_stack,
    run_main,
    start_verifier_schedulers,
)
from bench.summary import QueryRecord, Summary, summarise
from models.arith.heldout import DEMO
from models.arith.task import Problem
from models.smollm2.questions import DEMO_SEED as QUESTIONS_SEED
from models.smollm2.questions import WordQuestion, word_questions
from ponder.local.stack import LocalStack

DEFAULT_PROBLEMS = 100
"""The demo's problems: the first of the held-out demo set (``models.arith.heldout.DEMO``)."""
SHORT_PROBLEMS = 8
CONCURRENCY = 16
MODELS = ("arith", "smollm2")


def demo_specs(short: bool) -> list[StrategySpec]:
    """Every strategy once, each on the scheduler whose verifier its label names
    (`bench.stack.start_verifier_schedulers`): none, the learned outcome or process reward
    model, and the oracle last, as the ceiling that no user's verifier reaches. `short` uses
    smaller widths."""
    width = 4 if short else 8
    beam_cap = beam_branches(demo_settings(short, MODEL_DIR))
    refine_cap = 3 if short else 5
    return [
        StrategySpec("single (greedy)", "single", temperature=0.0, scheduler=VOTE_SCHEDULER),
        StrategySpec(
            f"self-consistency@{width}",
            "self-consistency",
            {"branches": width},
            scheduler=VOTE_SCHEDULER,
        ),
        StrategySpec(
            "adaptive-consistency",
            "adaptive-consistency",
            {"branches": 2, "max_branches": 2 * width},
            scheduler=VOTE_SCHEDULER,
        ),
        StrategySpec(
            "adaptive+ORM",
            "adaptive-consistency",
            {"branches": 2, "max_branches": 2 * width},
            scheduler=ORM_SCHEDULER,
        ),
        StrategySpec(
            f"best-of-n@{width} ORM", "best-of-n", {"branches": width}, scheduler=ORM_SCHEDULER
        ),
        StrategySpec(
            f"best-of-n@{width} PRM", "best-of-n", {"branches": width}, scheduler=PRM_SCHEDULER
        ),
        StrategySpec(
            f"weighted-vote@{width} ORM",
            "weighted-vote",
            {"branches": width},
            scheduler=ORM_SCHEDULER,
        ),
        StrategySpec(
            "beam-search PRM", "beam-search", {"max_branches": beam_cap}, scheduler=PRM_SCHEDULER
        ),
        StrategySpec("refine ORM", "refine", {"max_branches": refine_cap}, scheduler=ORM_SCHEDULER),
        StrategySpec("budget-forcing", "budget-forcing", scheduler=VOTE_SCHEDULER),
        StrategySpec(
            "deep-conf online",
            "deep-conf",
            {"branches": width, "max_branches": 2 * width},
            scheduler=VOTE_SCHEDULER,
        ),
        *(
            []
            if short
            else [
                StrategySpec(
                    f"deep-conf offline@{2 * width}",
                    "deep-conf",
                    {"branches": 2 * width, "max_branches": 2 * width, "deep_conf_mode": "offline"},
                    scheduler=VOTE_SCHEDULER,
                )
            ]
        ),
        StrategySpec(
            f"best-of-n@{width} oracle",
            "best-of-n",
            {"branches": width},
            scheduler=ORACLE_SCHEDULER,
        ),
    ]


def demo_settings(short: bool, model_dir: Path) -> BenchSettings:
    return BenchSettings(
        model_dir=model_dir,
        workers=2,
        beam_width=2 if short else 4,
        beam_expansions=2 if short else 4,
    )


def demo_parser() -> argparse.ArgumentParser:
    """The command line of `python -m bench.demo`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=MODELS[0],
        help="arith: the shipped model, every strategy; smollm2: SmolLM2-135M-Instruct "
        "(python -m models.smollm2.build first), the vote-only strategies [arith]",
    )
    parser.add_argument("--short", action="store_true", help="few problems, smaller widths (CI)")
    parser.add_argument(
        "--problems",
        type=int,
        help=f"problems per strategy [{DEFAULT_PROBLEMS}; smollm2 {smollm2.DEFAULT_QUESTIONS}]",
    )
    parser.add_argument("--out", type=Path, help="output dir [out/demo, smollm2: out/demo-smollm2]")
    parser.add_argument(
        "--model-dir", type=Path, help="model directory [the shipped or the converted one]"
    )
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="queries in flight")
    return parser


@dataclass(frozen=True)
class DemoPlan(Generic[Asked]):
    """One model's demo: its arms, what it asks and how, and the stack it runs on."""

    title: str
    plot_title: str
    specs: list[StrategySpec]
    questions: Sequence[Asked]
    ask: Callable[[PonderClient, StrategySpec, int, Asked], Awaitable[QueryRecord]]
    open_stack: Callable[[Path], AbstractAsyncContextManager[LocalStack]]
    facts: dict[str, Any]
    """What results.json records of the questions and the settings."""
    out_dir: Path
    schedulers: Callable[[LocalStack], Awaitable[dict[str, str]]] | None = None
    """Starts more scheduler replicas on the stack; their OpenAI base URLs by the names the
    specs' `scheduler` uses. None: the stack's own scheduler answers every spec."""


def arith_plan(args: argparse.Namespace) -> DemoPlan[Problem]:
    """Every strategy on the shipped arithmetic model, with the step verifier."""
    count = args.problems or (SHORT_PROBLEMS if args.short else DEFAULT_PROBLEMS)
    settings = demo_settings(args.short, args.model_dir or MODEL_DIR)

    async def ask(
        client: PonderClient, spec: StrategySpec, index: int, problem: Problem
    ) -> QueryRecord:
        return await client.ask(spec, index, problem)

    return DemoPlan(
        title=(
            f"Ponder demo: {count} held-out problems (seed {DEMO.seed}) per strategy, "
            f"temperature {settings.temperature}"
        ),
        plot_title=f"Ponder demo ({count} problems)",
        specs=demo_specs(args.short),
        questions=DEMO.problems(count),
        ask=ask,
        open_stack=lambda log_dir: bench_stack(settings, log_dir),
        facts={
            "problems": {"seed": DEMO.seed, "count": count},
            "settings": {**asdict(settings), "model_dir": str(settings.model_dir)},
        },
        out_dir=REPO_ROOT / "out" / "demo",
        schedulers=start_verifier_schedulers,
    )


def smollm2_plan(args: argparse.Namespace) -> DemoPlan[WordQuestion]:
    """A shorter table on SmolLM2-135M-Instruct: word-arithmetic questions, no verifier."""
    count = args.problems or (smollm2.SHORT_QUESTIONS if args.short else smollm2.DEFAULT_QUESTIONS)
    model = args.model_dir or smollm2.smollm2_model_dir()
    specs = smollm2.smollm2_specs(args.short)
    max_tokens = max(spec.max_tokens for spec in specs)
    return DemoPlan(
        title=(
            f"Ponder demo on SmolLM2-135M-Instruct: {count} word-arithmetic questions "
            f"(seed {QUESTIONS_SEED}) per strategy, temperature {smollm2.TEMPERATURE}, "
            f"max_tokens {max_tokens}, extractor {smollm2.EXTRACTOR.value}"
        ),
        plot_title=f"Ponder demo on SmolLM2-135M-Instruct ({count} questions)",
        specs=specs,
        questions=word_questions(count, QUESTIONS_SEED),
        ask=smollm2.ask_word_question,
        open_stack=lambda log_dir: smollm2.smollm2_stack(model, log_dir),
        facts={
            "problems": {"seed": QUESTIONS_SEED, "count": count, "kind": "word-arithmetic"},
            "settings": {
                "model": "SmolLM2-135M-Instruct",
                "model_dir": str(model),
                "workers": smollm2.WORKERS,
                "temperature": smollm2.TEMPERATURE,
                "max_tokens": max_tokens,
                "extractor": smollm2.EXTRACTOR.value,
                "verifier": "none",
            },
        },
        out_dir=REPO_ROOT / "out" / "demo-smollm2",
    )


async def run_demo(
    plan: DemoPlan[Asked], out_dir: Path, concurrency: int
) -> tuple[list[Summary], list[QueryRecord], float]:
    """Start the plan's stack, ask every question with every arm; (summaries, records,
    startup s)."""
    started = time.monotonic()
    print(f"Starting the local data plane (logs: {out_dir / 'logs'}) ...", file=sys.stderr)
    async with plan.open_stack(out_dir / "logs") as stack:
        startup = time.monotonic() - started
        print(
            f"Ready in {startup:.0f}s: scheduler {stack.openai_base_url}, vLLM {stack.vllm_url}, "
            f"{len(stack.plane.workers)} workers, verifier {stack.verifier_url or 'none'}",
            file=sys.stderr,
        )
        urls = {"default": stack.openai_base_url}
        if plan.schedulers is not None:
            urls |= await plan.schedulers(stack)
        clients = {name: PonderClient(url, stack.served_name) for name, url in urls.items()}
        summaries: list[Summary] = []
        records: list[QueryRecord] = []
        try:
            with tqdm(
                total=len(plan.specs) * len(plan.questions),
                unit="query",
                file=sys.stderr,
                dynamic_ncols=True,
            ) as bar:
                for spec in plan.specs:
                    bar.set_description(spec.label)

                    async def ask(
                        index: int, question: Asked, spec: StrategySpec = spec
                    ) -> QueryRecord:
                        return await plan.ask(clients[spec.scheduler], spec, index, question)

                    batch = await run_bounded(
                        plan.questions, ask, concurrency, on_record=lambda _: bar.update(1)
                    )
                    summary = summarise(batch)
                    summaries.append(summary)
                    records.extend(batch)
                    bar.write(
                        f"{summary.label:<24} accuracy {summary.accuracy:.2f}  "
                        f"{summary.mean_completion_tokens:7.1f} gen tokens/query  "
                        f"p50 {summary.p50_latency_seconds:.2f}s  errors {summary.errors}"
                    )
        finally:
            for client in clients.values():
                await client.close()
    return summaries, records, startup


async def main_async(argv: Sequence[str]) -> int:
    args = demo_parser().parse_args(list(argv))
    try:
        plan: DemoPlan[Any] = smollm2_plan(args) if args.model == "smollm2" else arith_plan(args)
    except FileNotFoundError as missing:
        print(missing, file=sys.stderr)
        return 2
    out_dir: Path = args.out or plan.out_dir
    began = time.monotonic()
    summaries, records, startup = await run_demo(plan, out_dir, args.concurrency)
    elapsed = time.monotonic() - began
    table = summary_table(summaries)
    print(f"\n{plan.title}\n\n{table}\n")
    print(
        "gen tok/q: completion tokens per query (usage); tok/q: prompt + completion; "
        "saved/q: branches early stopping spared per query"
    )
    table_path = write_text(out_dir / "table.txt", f"{plan.title}\n\n{table}")
    plot_path = plot_accuracy_vs_tokens(
        summaries, out_dir / "accuracy_vs_tokens.png", plan.plot_title
    )
    json_path = write_json(
        out_dir / "results.json",
        {
            "command": ["python", "-m", "bench.demo", *argv],
            **plan.facts,
            "concurrency": args.concurrency,
            "startup_seconds": round(startup, 1),
            "elapsed_seconds": round(elapsed, 1),
            "summaries": summaries,
            "records": records,
        },
    )
    print(f"\nTable: {table_path}\nPlot:  {plot_path}\nJSON:  {json_path}")
    print(f"Finished in {elapsed:.0f}s (stack start-up {startup:.0f}s); every process stopped.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(main_async(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
