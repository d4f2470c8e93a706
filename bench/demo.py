"""`make demo`: every strategy on the shipped arithmetic model, through the whole local stack.

    python -m bench.demo [--short] [--problems N] [--out DIR]

Starts the step verifier, `vllm serve` of `models/arith/ponder-arith`, NATS, two workers and the
scheduler (with the verifier as the service's HTTP verifier) through `ponder.local`, the launcher
of `python -m ponder.local up` (bench/stack.py holds the settings), then asks a fixed, seeded set of
held-out problems with each strategy in turn (a bounded number in flight), with a progress bar.
Prints a table (accuracy, tokens per query from `usage`, branches, p50/p95 latency, branches
saved by early stopping from the `ponder` object), and writes `results.json`, `table.txt` and
`accuracy_vs_tokens.png` under `out/demo/` (process logs under `logs/`). Ctrl-C stops every
process it started. `--short` (a few problems, smaller widths) is what CI runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from bench.clients import PonderClient, StrategySpec, run_bounded
from bench.report import (
    plot_accuracy_vs_tokens,
    summary_table,
    write_json,
    write_text,
)
from bench.stack import (
    MODEL_DIR,
    REPO_ROOT,
    BenchSettings,
    beam_branches,
    bench_stack,
    run_main,
)
from bench.summary import QueryRecord, Summary, summarise
from models.arith.task import Problem, generate_problems

DEMO_SEED = 20_250_101
"""The demo's problems: a seed that neither training (0) nor the model card's evaluation
(20_240_601) uses."""
DEFAULT_PROBLEMS = 100
SHORT_PROBLEMS = 8
CONCURRENCY = 16


def demo_specs(short: bool) -> list[StrategySpec]:
    """Every strategy once; `short` uses smaller widths."""
    width = 4 if short else 8
    beam_cap = beam_branches(demo_settings(short, MODEL_DIR))
    return [
        StrategySpec("single (greedy)", "single", temperature=0.0),
        StrategySpec(f"self-consistency@{width}", "self-consistency", {"branches": width}),
        StrategySpec(
            "adaptive-consistency",
            "adaptive-consistency",
            {"branches": 2, "max_branches": 2 * width},
        ),
        StrategySpec(f"best-of-n@{width}", "best-of-n", {"branches": width}),
        StrategySpec(f"weighted-vote@{width}", "weighted-vote", {"branches": width}),
        StrategySpec("beam-search", "beam-search", {"max_branches": beam_cap}),
        StrategySpec("refine", "refine", {"max_branches": 3 if short else 5}),
        StrategySpec("budget-forcing", "budget-forcing"),
    ]


def demo_settings(short: bool, model_dir: Path) -> BenchSettings:
    return BenchSettings(
        model_dir=model_dir,
        workers=2,
        beam_width=2 if short else 4,
        beam_expansions=2 if short else 4,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--short", action="store_true", help="few problems, smaller widths (CI)")
    parser.add_argument("--problems", type=int, help=f"problems per strategy [{DEFAULT_PROBLEMS}]")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "demo", help="output dir")
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="model directory")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="queries in flight")
    return parser


async def run_demo(
    specs: Sequence[StrategySpec],
    problems: Sequence[Problem],
    settings: BenchSettings,
    out_dir: Path,
    concurrency: int,
) -> tuple[list[Summary], list[QueryRecord], float]:
    """Start the stack, ask every problem with every spec; (summaries, records, startup s)."""
    started = time.monotonic()
    print(f"Starting the local data plane (logs: {out_dir / 'logs'}) ...", file=sys.stderr)
    async with bench_stack(settings, out_dir / "logs") as stack:
        startup = time.monotonic() - started
        print(
            f"Ready in {startup:.0f}s: scheduler {stack.openai_base_url}, vLLM {stack.vllm_url}, "
            f"{settings.workers} workers, verifier {stack.verifier_url}",
            file=sys.stderr,
        )
        client = PonderClient(stack.openai_base_url, stack.served_name)
        summaries: list[Summary] = []
        records: list[QueryRecord] = []
        try:
            with tqdm(
                total=len(specs) * len(problems), unit="query", file=sys.stderr, dynamic_ncols=True
            ) as bar:
                for spec in specs:
                    bar.set_description(spec.label)

                    async def ask(index: int, problem: Problem, spec: StrategySpec = spec):
                        return await client.ask(spec, index, problem)

                    batch = await run_bounded(
                        problems, ask, concurrency, on_record=lambda _: bar.update(1)
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
            await client.close()
    return summaries, records, startup


async def main_async(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    count = args.problems or (SHORT_PROBLEMS if args.short else DEFAULT_PROBLEMS)
    problems = generate_problems(DEMO_SEED, count)
    specs = demo_specs(args.short)
    settings = demo_settings(args.short, args.model)
    out_dir: Path = args.out
    began = time.monotonic()
    summaries, records, startup = await run_demo(
        specs, problems, settings, out_dir, args.concurrency
    )
    elapsed = time.monotonic() - began
    table = summary_table(summaries)
    title = (
        f"Ponder demo: {count} held-out problems (seed {DEMO_SEED}) per strategy, "
        f"temperature {settings.temperature}"
    )
    print(f"\n{title}\n\n{table}\n")
    print(
        "gen tok/q: completion tokens per query (usage); tok/q: prompt + completion; "
        "saved/q: branches early stopping spared per query"
    )
    table_path = write_text(out_dir / "table.txt", f"{title}\n\n{table}")
    plot_path = plot_accuracy_vs_tokens(
        summaries, out_dir / "accuracy_vs_tokens.png", f"Ponder demo ({count} problems)"
    )
    json_path = write_json(
        out_dir / "results.json",
        {
            "command": ["python", "-m", "bench.demo", *argv],
            "problems": {"seed": DEMO_SEED, "count": count},
            "settings": {**asdict(settings), "model_dir": str(settings.model_dir)},
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
