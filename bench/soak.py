"""Soak: a long steady load at about 80 % of capacity, watching every process for leaks.

    python -m bench.soak [--minutes 30] [--sample-seconds 30] [--warmup-minutes 5]
                         [--load-fraction 0.8] [--seed N] [--rate QPS] [--check] [--out DIR]

On one local stack (`bench.stack`: NATS, vLLM on the CPU with the shipped arithmetic model, the
scheduler, two workers), self-consistency@8 queries of seeded held-out problems:

1. **capacity**: a short closed loop (`--probe-seconds`, `--probe-concurrency` in flight)
   measures the queries per second the stack answers when it is never idle (`--rate` skips it);
2. **soak**: open-loop Poisson arrivals (`bench.ramp.arrival_offsets`) at `--load-fraction` of
   that for `--minutes`. Every `--sample-seconds` one row is printed: the queries sent,
   answered and failed (by code) in the window with the p50 and p95 latency of those answered,
   and the RSS and open file descriptors of the scheduler, of each worker and of vLLM
   (`bench.process_usage`; vLLM with its engine process).

At the end, the growth of each process's RSS and descriptors from the first sample at
`--warmup-minutes` to the last, against the target: under 10 % for the scheduler and each
worker. By the baseline, caches and pools have filled, among them the workers' memory of recent
cancels, which keeps each for the service's max deadline (300 s in `bench.stack`). The growth is
that of the trend through every sample in between (`bench.soak_stats.trend_growth`), so a burst
of connections in the last sample is not a leak; the raw samples at both ends are printed beside
it. vLLM is reported, not judged: it is not Ponder's code.

`--minutes 2 --warmup-minutes 0.5 --sample-seconds 10` is a quick check that the benchmark
runs, not evidence: only the full 30 minutes can show a slow leak, and on a busy machine the
rates and latencies move with whatever else runs. Writes `results.json` and `table.txt` under
`--out`, process logs under `logs/`. `--check` exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.clients import PonderClient, StrategySpec
from bench.process_usage import tree_usage
from bench.ramp import arrival_offsets
from bench.report import fmt, load_line, write_json, write_text
from bench.soak_stats import (
    GROWTH_LIMIT,
    Finished,
    Growth,
    Sample,
    WindowStats,
    failure_code,
    failures_text,
    growth_of,
    growth_table,
    progress_header,
    progress_row,
    sample_ticks,
    target_misses,
    window_stats,
)
from bench.stack import MODEL_DIR, REPO_ROOT, BenchSettings, bench_stack, run_main
from models.arith.task import Problem, iter_problems
from ponder.local.stack import LocalStack

SOAK_SEED = 20_250_404
"""Held out: not the training (0, validation 7), evaluation (20_240_601), demo (20_250_101),
efficiency (20_250_202), SLO (20_250_303) or chaos (10) problems."""
SPEC = StrategySpec("SC@8", "self-consistency", {"branches": 8})
"""The issue's load: self-consistency@8, the service's default deadline (its 30 s SLO)."""
VLLM = "vllm"
"""The process reported but not judged."""
DEFAULT_MINUTES = 30.0
DEFAULT_SAMPLE_SECONDS = 30.0
DEFAULT_WARMUP_MINUTES = 5.0
DEFAULT_LOAD_FRACTION = 0.8
DEFAULT_PROBE_SECONDS = 30.0
DEFAULT_PROBE_CONCURRENCY = 16
"""Twice the queries the pool holds at once (2 workers x 32 slots / 8 branches): never idle."""
REQUEST_TIMEOUT_SECONDS = 60.0
"""Twice the default deadline: a query the scheduler does not end by then counts as failed."""
MAX_ARRIVALS = 1_000_000


@dataclass(frozen=True)
class Capacity:
    """What a closed loop of `concurrency` queries in flight got answered in `seconds`."""

    concurrency: int
    seconds: float
    answered: int
    failed: int

    @property
    def rate_per_second(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else math.nan


@dataclass
class SoakRun:
    """What the soak saw, filled in as it goes."""

    sent_seconds: list[float] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    windows: list[WindowStats] = field(default_factory=list)
    ended_seconds: float = 0.0
    """When the last query in flight at the end had finished."""


def watched_processes(stack: LocalStack) -> dict[str, int]:
    """name -> pid of the scheduler, each worker and (when this stack started it) vLLM."""
    plane = stack.plane
    pids = {"scheduler": plane.scheduler.process.pid}
    pids.update({worker.worker_id: worker.process.pid for worker in plane.workers})
    if plane.vllm_process is not None:
        pids[VLLM] = plane.vllm_process.pid
    return pids


def read_sample(elapsed_seconds: float, processes: Mapping[str, int]) -> Sample:
    """Every watched process's usage now (blocking: run it in a thread)."""
    return Sample(elapsed_seconds, {name: tree_usage(pid) for name, pid in processes.items()})


async def measure_capacity(
    client: PonderClient,
    problems: Iterator[tuple[int, Problem]],
    seconds: float,
    concurrency: int,
) -> Capacity:
    """Answered queries per second of a closed loop of `concurrency` clients for `seconds`
    (each asks again as soon as it has its answer, so the pool never waits for work)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes: Counter[bool] = Counter()

    async def one_client() -> None:
        while loop.time() < started + seconds:
            index, problem = next(problems)
            record = await client.ask(SPEC, index, problem)
            outcomes[record.error is None] += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(one_client())
    return Capacity(concurrency, loop.time() - started, outcomes[True], outcomes[False])


async def run_soak(
    client: PonderClient,
    problems: Iterator[tuple[int, Problem]],
    processes: Mapping[str, int],
    rate_per_second: float,
    duration_seconds: float,
    sample_seconds: float,
    rng: random.Random,
) -> SoakRun:
    """Open-loop arrivals at `rate_per_second` for `duration_seconds`, a printed row every
    `sample_seconds`; returns when the last query has ended."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    run = SoakRun()
    names = list(processes)

    def since() -> float:
        return loop.time() - began

    async def ask(index: int, problem: Problem) -> None:
        record = await client.ask(SPEC, index, problem)
        code = None if record.error is None else failure_code(record.error)
        run.finished.append(Finished(since(), record.latency_seconds, code))

    async def send(group: asyncio.TaskGroup) -> None:
        for offset in arrival_offsets(rate_per_second, duration_seconds, rng, MAX_ARRIVALS):
            await asyncio.sleep(max(0.0, began + offset - loop.time()))
            index, problem = next(problems)
            run.sent_seconds.append(since())
            group.create_task(ask(index, problem))

    async def watch() -> None:
        print(f"RSS MiB/open fds per process; queries per {sample_seconds:g} s window")
        print(progress_header(names), flush=True)
        previous: float | None = None
        for tick in sample_ticks(duration_seconds, sample_seconds):
            await asyncio.sleep(max(0.0, began + tick - loop.time()))
            now = since()
            sample = await asyncio.to_thread(read_sample, now, processes)
            window = None
            if previous is not None:
                window = window_stats(run.finished, run.sent_seconds, previous, now)
                run.windows.append(window)
            run.samples.append(sample)
            print(progress_row(sample, window, names), flush=True)
            previous = now

    async with asyncio.TaskGroup() as group:
        group.create_task(send(group))
        group.create_task(watch())
    run.ended_seconds = since()
    return run


def process_line(sample: Sample, processes: Mapping[str, int]) -> str:
    """`scheduler pid 12 (1 process), ..., vllm pid 40 (3 processes, not judged)`."""
    parts = []
    for name, pid in processes.items():
        usage = sample.usage.get(name)
        count = (
            "gone"
            if usage is None
            else f"{usage.processes} process" + ("es" if usage.processes != 1 else "")
        )
        parts.append(f"{name} pid {pid} ({count}{', not judged' if name == VLLM else ''})")
    return "Watching " + ", ".join(parts)


async def offered_rate(
    client: PonderClient, problems: Iterator[tuple[int, Problem]], args: argparse.Namespace
) -> tuple[float, Capacity | None]:
    """The soak's arrival rate: `--rate`, else `--load-fraction` of the measured capacity."""
    if args.rate is not None:
        print(f"Soaking at {args.rate:.2f} queries/s (given; no capacity probe)")
        return args.rate, None
    print(
        f"Capacity: closed loop, {args.probe_concurrency} {SPEC.label} queries in flight for "
        f"{args.probe_seconds:g} s ...",
        flush=True,
    )
    capacity = await measure_capacity(client, problems, args.probe_seconds, args.probe_concurrency)
    rate = capacity.rate_per_second * args.load_fraction
    print(
        f"Capacity {capacity.rate_per_second:.2f} queries/s ({capacity.answered} answered, "
        f"{capacity.failed} failed in {capacity.seconds:.1f} s); soaking at "
        f"{args.load_fraction:.0%} of it: {rate:.2f}/s"
    )
    return rate, capacity


def final_report(
    run: SoakRun,
    rate_per_second: float,
    growths: Sequence[Growth],
    misses: Sequence[str],
    warmup_minutes: float,
) -> str:
    """The queries over the whole soak, the growth table and the verdict."""
    last = run.samples[-1].elapsed_seconds
    drained = window_stats(run.finished, run.sent_seconds, last, math.inf)
    total = window_stats(run.finished, run.sent_seconds, 0.0, math.inf)
    soaked = max(run.ended_seconds, 1e-9)
    baseline = next((g.baseline_seconds for g in growths if g.baseline_seconds is not None), 0.0)
    verdict = "met." if not misses else "NOT met: " + "; ".join(misses) + "."
    return "\n".join(
        [
            f"{total.sent} sent at {rate_per_second:.2f}/s offered; {total.answered} answered "
            f"({total.answered / soaked:.2f}/s), failed: {failures_text(total.failures)}; "
            f"p50 {fmt(total.p50_latency_seconds)} s, p95 {fmt(total.p95_latency_seconds)} s",
            f"In flight at the last sample: {drained.answered + drained.failed}, ended within "
            f"{soaked - last:.1f} s after it",
            "",
            growth_table(growths),
            f"(base: the sample at {baseline:.0f} s; growth: of the Theil-Sen trend through "
            "every sample from there to the end)",
            "",
            f"Target: RSS and open fds of the scheduler and each worker grow < {GROWTH_LIMIT:.0%} "
            f"from minute {warmup_minutes:g} to the end ({VLLM} not judged): {verdict}",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="soak length")
    parser.add_argument("--sample-seconds", type=float, default=DEFAULT_SAMPLE_SECONDS)
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=DEFAULT_WARMUP_MINUTES,
        help="the growth baseline: the first sample at or after this",
    )
    parser.add_argument(
        "--load-fraction", type=float, default=DEFAULT_LOAD_FRACTION, help="of the capacity"
    )
    parser.add_argument("--seed", type=int, default=SOAK_SEED, help="problems and arrivals")
    parser.add_argument(
        "--rate", type=float, default=None, help="queries per second; skips the capacity probe"
    )
    parser.add_argument("--probe-seconds", type=float, default=DEFAULT_PROBE_SECONDS)
    parser.add_argument("--probe-concurrency", type=int, default=DEFAULT_PROBE_CONCURRENCY)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "soak", help="output dir")
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="model directory")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with its bounds checked (argparse's exit 2 on a bad one)."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.probe_seconds <= 0:
        parser.error("--minutes, --sample-seconds and --probe-seconds must be positive")
    if not 0 <= args.warmup_minutes < args.minutes:
        parser.error(f"--warmup-minutes must be within [0, --minutes={args.minutes:g})")
    if args.load_fraction <= 0 or (args.rate is not None and args.rate <= 0):
        parser.error("--load-fraction and --rate must be positive")
    if args.probe_concurrency < 1:
        parser.error("--probe-concurrency must be at least 1")
    return args


async def main_async(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    settings = BenchSettings(model_dir=args.model)
    out_dir: Path = args.out
    problems = enumerate(iter_problems(args.seed))
    arrivals = random.Random(f"soak-arrivals-{args.seed}")
    began = time.monotonic()
    print(f"Starting the local data plane (logs: {out_dir / 'logs'}) ...", file=sys.stderr)
    print(load_line())
    async with bench_stack(settings, out_dir / "logs") as stack:
        client = PonderClient(
            stack.openai_base_url, stack.served_name, timeout_seconds=REQUEST_TIMEOUT_SECONDS
        )
        processes = watched_processes(stack)
        try:
            rate, capacity = await offered_rate(client, problems, args)
            if not rate > 0:
                print("The capacity probe got nothing answered: no load to soak at.")
                return 1
            print(f"{SPEC.label} for {args.minutes:g} min, Poisson arrivals, seed {args.seed}")
            run = await run_soak(
                client,
                problems,
                processes,
                rate,
                args.minutes * 60.0,
                args.sample_seconds,
                arrivals,
            )
        finally:
            await client.close()
    warmup_seconds = args.warmup_minutes * 60.0
    growths = [growth_of(run.samples, name, warmup_seconds, name != VLLM) for name in processes]
    misses = target_misses(growths)
    report = final_report(run, rate, growths, misses, args.warmup_minutes)
    print(f"\n{process_line(run.samples[0], processes)}\n{load_line()}\n\n{report}\n")
    elapsed = time.monotonic() - began
    table_path = write_text(out_dir / "table.txt", report)
    json_path = write_json(
        out_dir / "results.json",
        {
            "command": ["python", "-m", "bench.soak", *argv],
            "problems": {"seed": args.seed, "spec": SPEC.ponder_options()},
            "settings": {**asdict(settings), "model_dir": str(settings.model_dir)},
            "capacity": None
            if capacity is None
            else {**asdict(capacity), "rate_per_second": capacity.rate_per_second},
            "rate_per_second": rate,
            "processes": processes,
            "samples": run.samples,
            "windows": run.windows,
            "growth": growths,
            "target_met": not misses,
            "misses": misses,
            "elapsed_seconds": round(elapsed, 1),
        },
    )
    print(f"Table: {table_path}\nJSON:  {json_path}")
    print(f"Finished in {elapsed:.0f}s; every process stopped.")
    return 1 if args.check and misses else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(main_async(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
