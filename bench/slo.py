"""Latency SLO under a rising open-loop load: static SC@8, shrink-only, shrink-and-grow.

The three arms are `spec.slo.loadAdaptation` Static, Shrink and ShrinkAndGrow.

    python -m bench.slo [--rates 4,8,16,24,32] [--step-seconds 25] [--slo-ms 2500] [--out DIR]

One local stack (vLLM, NATS, the workers) and three scheduler replicas on its stream, one per
policy. At each rate step (Poisson arrivals, a bounded number per step) the same seeded problems
are sent to each arm in turn, one arm after the other, each the same self-consistency query:
the service's default of 8 branches (no `ponder.branches`, so that ShrinkAndGrow may grow it),
at most `GROW_MAX_BRANCHES`, and the same `deadline_ms` (a little under the SLO) for every arm.
At the deadline the runner answers with the best vote so far (docs/architecture.md, "Request
flow"), whatever the policy:

- `static SC@8`: Static: 8 branches whatever the load (what a fixed-width test-time-compute
  server does), cut at the deadline when the queue holds them back;
- `shrink-only`: Shrink (the default): fewer branches when the observed load would push 8 past
  the deadline;
- `shrink-and-grow`: ShrinkAndGrow: that, and up to `GROW_MAX_BRANCHES` while the pool has idle
  slots and one round fits the deadline.

Per step and arm: SLO attainment (answered within the SLO), accuracy, goodput (right answers
within the SLO per second), p50/p95 latency, branches, and how many plans were shrunk and grown.
Prints a table and writes `results.json`, `table.txt` and `slo.png` under `out/slo/`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from itertools import cycle
from pathlib import Path

from tqdm import tqdm

from bench.clients import PonderClient, StrategySpec, wait_until_idle
from bench.ramp import StepResult, arrival_offsets, step_result
from bench.report import fmt, format_table, plot_series, write_json, write_text
from bench.stack import MODEL_DIR, REPO_ROOT, BenchSettings, bench_stack, run_main
from bench.summary import QueryRecord
from models.arith.heldout import SLO
from models.arith.task import Problem
from ponder.api.service_config import LoadAdaptation, ServiceConfig
from ponder.local.dataplane import merge_overrides

ARRIVAL_SEED = 5
DEFAULT_RATES = (4.0, 8.0, 16.0, 24.0, 32.0)
DEFAULT_STEP_SECONDS = 25.0
DEFAULT_SLO_MS = 2500
DEADLINE_SHARE_OF_SLO = 0.85
"""Every arm's deadline: under the SLO by the time an answer takes to travel back."""
DEFAULT_BRANCHES = 8
"""The service's `strategy.branches`: what every arm's query asks for by leaving it out."""
GROW_MAX_BRANCHES = 16
"""Every query's `ponder.max_branches`: how far ShrinkAndGrow may widen it."""
MAX_REQUESTS_PER_STEP = 1000
IDLE_TIMEOUT_SECONDS = 60.0
"""Longest wait between steps for the pool to finish what the last step left behind."""
STATIC, SHRINK, GROW = "static SC@8", "shrink-only", "shrink-and-grow"
ARM_ADAPTATIONS: dict[str, LoadAdaptation] = {
    STATIC: LoadAdaptation.STATIC,
    SHRINK: LoadAdaptation.SHRINK,
    GROW: LoadAdaptation.SHRINK_AND_GROW,
}
"""Each arm's policy; each arm has its own scheduler replica (`arm_scheduler`)."""


def arm_deadline_ms(slo_ms: int) -> int:
    """The `deadline_ms` every arm's queries carry."""
    return int(slo_ms * DEADLINE_SHARE_OF_SLO)


def arm_scheduler(label: str) -> str:
    """The scheduler replica id that answers arm `label`."""
    return f"scheduler-{ARM_ADAPTATIONS[label].value}"


def arms(slo_ms: int) -> list[StrategySpec]:
    """The three arms: the same query (the default 8 branches, at most `GROW_MAX_BRANCHES`,
    the same deadline), each to the scheduler of its policy."""
    options = {"deadline_ms": arm_deadline_ms(slo_ms), "max_branches": GROW_MAX_BRANCHES}
    return [
        StrategySpec(label, "self-consistency", options, scheduler=arm_scheduler(label))
        for label in ARM_ADAPTATIONS
    ]


def arm_config(config: ServiceConfig, label: str) -> ServiceConfig:
    """The stack's service config with arm `label`'s `slo.load_adaptation`."""
    return merge_overrides(config, {"slo": {"load_adaptation": ARM_ADAPTATIONS[label].value}})


def bench_settings(model_dir: Path, slo_ms: int) -> BenchSettings:
    """The stack of this benchmark: the default branch count pinned to `DEFAULT_BRANCHES`."""
    return BenchSettings(
        model_dir=model_dir,
        slo_target_ms=slo_ms,
        extra={"strategy": {"branches": DEFAULT_BRANCHES}},
    )


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.slo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates",
        type=_floats,
        default=DEFAULT_RATES,
        help="queries per second of each step, comma-separated [4,8,16,24,32]",
    )
    parser.add_argument("--step-seconds", type=float, default=DEFAULT_STEP_SECONDS)
    parser.add_argument("--slo-ms", type=int, default=DEFAULT_SLO_MS, help="latency SLO")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "slo", help="output dir")
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="model directory")
    return parser


async def run_step(
    client: PonderClient,
    spec: StrategySpec,
    problems: Sequence[tuple[int, Problem]],
    offsets: Sequence[float],
    bar: tqdm,
) -> list[QueryRecord]:
    """Send `problems[i]` at `offsets[i]` (open loop) and wait for every answer."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks: list[asyncio.Task[QueryRecord]] = []

    async def one(index: int, problem: Problem) -> QueryRecord:
        record = await client.ask(spec, index, problem)
        bar.update(1)
        return record

    async with asyncio.TaskGroup() as group:
        for offset, (index, problem) in zip(offsets, problems, strict=False):
            await asyncio.sleep(max(0.0, started + offset - loop.time()))
            tasks.append(group.create_task(one(index, problem)))
    return [task.result() for task in tasks]


async def run_ramp(
    rates: Sequence[float],
    step_seconds: float,
    slo_ms: int,
    settings: BenchSettings,
    out_dir: Path,
) -> tuple[list[StepResult], list[QueryRecord]]:
    slo_seconds = slo_ms / 1000.0
    specs = arms(slo_ms)
    pool = list(enumerate(SLO.problems(MAX_REQUESTS_PER_STEP)))
    rng = random.Random(ARRIVAL_SEED)
    schedule = [arrival_offsets(rate, step_seconds, rng, MAX_REQUESTS_PER_STEP) for rate in rates]
    results: list[StepResult] = []
    records: list[QueryRecord] = []
    print(f"Starting the local data plane (logs: {out_dir / 'logs'}) ...", file=sys.stderr)
    async with bench_stack(settings, out_dir / "logs") as stack:
        # Requests that outlive this are misses anyway; the scheduler cancels a query whose
        # client went away, so a timeout also frees the pool.
        timeout = max(10.0, 6 * slo_seconds)
        clients: dict[str, PonderClient] = {}
        for spec in specs:
            scheduler = await stack.add_scheduler(
                arm_config(stack.config, spec.label), spec.scheduler
            )
            clients[spec.scheduler] = PonderClient(
                scheduler.openai_base_url, stack.served_name, timeout_seconds=timeout
            )
        total = len(specs) * sum(len(offsets) for offsets in schedule)
        try:
            with tqdm(total=total, unit="query", file=sys.stderr, dynamic_ncols=True) as bar:
                for rate, offsets in zip(rates, schedule, strict=True):
                    problems = [p for p, _ in zip(cycle(pool), offsets, strict=False)]
                    for spec in specs:
                        bar.set_description(f"{rate:g}/s {spec.label}")
                        client = clients[spec.scheduler]
                        batch = await run_step(client, spec, problems, offsets, bar)
                        result = step_result(spec.label, rate, step_seconds, batch, slo_seconds)
                        results.append(result)
                        records.extend(batch)
                        bar.write(
                            f"{rate:5.1f}/s {spec.label:<15} SLO {result.slo_attainment:.2f}  "
                            f"accuracy {result.accuracy:.2f}  goodput "
                            f"{result.goodput_per_second:.2f}/s  p95 "
                            f"{result.p95_latency_seconds:.2f}s  branches "
                            f"{result.mean_branches:.1f}"
                        )
                        if not await wait_until_idle(stack.vllm_url, IDLE_TIMEOUT_SECONDS):
                            bar.write(f"vLLM still busy {IDLE_TIMEOUT_SECONDS:.0f}s after a step")
        finally:
            for client in clients.values():
                await client.close()
    return results, records


def slo_table(results: Sequence[StepResult]) -> str:
    headers = (
        "arm",
        "rate/s",
        "requests",
        "SLO att",
        "accuracy",
        "goodput/s",
        "p50 s",
        "p95 s",
        "branches",
        "shrunk",
        "grown",
        "at deadline",
        "errors",
    )
    rows = [
        [
            r.arm,
            fmt(r.rate_per_second, 1),
            r.requests,
            r.slo_attainment,
            r.accuracy,
            r.goodput_per_second,
            r.p50_latency_seconds,
            r.p95_latency_seconds,
            fmt(r.mean_branches, 1),
            r.shrunk_share,
            r.grown_share,
            r.deadline_share,
            r.errors,
        ]
        for r in results
    ]
    return format_table(headers, rows, left_columns=1)


async def main_async(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    settings = bench_settings(args.model, args.slo_ms)
    out_dir: Path = args.out
    began = time.monotonic()
    results, records = await run_ramp(args.rates, args.step_seconds, args.slo_ms, settings, out_dir)
    elapsed = time.monotonic() - began
    title = (
        f"Open-loop ramp, {args.step_seconds:g}s per step, SLO {args.slo_ms} ms "
        f"(every arm's deadline {arm_deadline_ms(args.slo_ms)} ms); "
        "goodput = right answers within the SLO per second"
    )
    table = slo_table(results)
    print(f"\n{title}\n\n{table}\n")
    rates = list(args.rates)

    def series(attribute: str) -> dict[str, list[float | None]]:
        return {
            arm: [getattr(r, attribute) for r in results if r.arm == arm] for arm in ARM_ADAPTATIONS
        }

    plot_path = plot_series(
        out_dir / "slo.png",
        f"Static SC@8, shrink-only and shrink-and-grow (SLO {args.slo_ms} ms)",
        "offered load (queries/s)",
        rates,
        [
            ("SLO attainment", series("slo_attainment")),
            ("goodput (right answers in SLO / s)", series("goodput_per_second")),
            ("accuracy", series("accuracy")),
            ("p95 latency (s)", series("p95_latency_seconds")),
        ],
        unit_interval=(True, False, True, False),
    )
    table_path = write_text(out_dir / "table.txt", f"{title}\n\n{table}")
    json_path = write_json(
        out_dir / "results.json",
        {
            "command": ["python", "-m", "bench.slo", *argv],
            "problems": {"seed": SLO.seed},
            "settings": {**asdict(settings), "model_dir": str(settings.model_dir)},
            "slo_ms": args.slo_ms,
            "deadline_ms": arm_deadline_ms(args.slo_ms),
            "arms": {
                label: {"load_adaptation": adaptation.value, "ponder": spec.ponder_options()}
                for (label, adaptation), spec in zip(
                    ARM_ADAPTATIONS.items(), arms(args.slo_ms), strict=True
                )
            },
            "step_seconds": args.step_seconds,
            "elapsed_seconds": round(elapsed, 1),
            "steps": results,
            "records": records,
        },
    )
    print(f"Table: {table_path}\nPlot:  {plot_path}\nJSON:  {json_path}")
    print(f"Finished in {elapsed:.0f}s; every process stopped.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(main_async(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
