"""`make bench-overthinking`: how much SmolLM2 generates after its answer, and what the
answer-probe early exit cuts, on simple word-arithmetic questions.

    python -m bench.overthinking [--questions N] [--styles short,explain,check] [--every T]
                                 [--window W] [--probe-tokens K] [--max-tokens M]
                                 [--vllm-url URL]

Starts vLLM on the converted SmolLM2-135M-Instruct (`make model-smollm2`; or uses the one
serving it as `smollm2-135m-instruct` at `--vllm-url`), NATS, two workers
and the scheduler through `ponder.local`, with the SmolLM2 demo's service settings
(`bench.demo_smollm2`: the last number read as the answer, sampling at its temperature). Then it
asks the same questions (`BENCH_SEED`, never the demo's) in three styles — "Answer with just
the number." (`short`: the model mostly stops soon after its answer), "Explain your answer."
(`explain`: it states the answer, then talks on) and "Solve it step by step, then check your
answer." (`check`: it reaches an answer, then "checks" it at length, the overthinking users
see) — with self-consistency at 1 (greedy), 4 and 8 branches, each without and with
`ponder.early_exit = "answer-probe"`: one run, one vLLM, the same questions and deadline for
every arm, and one cap per style (`STYLE_MAX_TOKENS`, `--max-tokens` for all). Answers are
judged against the known answer; there is no verifier.

Prints, per arm: accuracy, generated tokens per query (`usage`, probes included), tokens
generated after the answers had settled (`ponder.tokens_after_answer`), probe tokens and tokens
per probe, the share of branches the probe stopped and of those cut at the cap, p50 latency,
errors and queries cut short (shrunk or at their deadline); then, per style and branch count,
the early exit's token cut and accuracy change, next to the "hindsight cut": what stopping
every branch exactly where its answer settled would have saved, the most any early exit could
cut there. Writes
`results.json` and `table.txt` under `out/bench/overthinking/`. The figures are measured, never
asserted; the target (a cut of at least 40% at no lower accuracy) is printed as met or not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.clients import PonderClient, StrategySpec, run_bounded
from bench.demo_smollm2 import WORKERS, smollm2_config, smollm2_model_dir
from bench.report import fmt, format_table, write_json, write_text
from bench.summary import QueryRecord, percentile
from models.smollm2.questions import (
    ANSWER_INSTRUCTION,
    BENCH_SEED,
    CHECK_INSTRUCTION,
    EXPLAIN_INSTRUCTION,
    WordQuestion,
    word_questions,
)
from models.smollm2.service import SERVED_NAME
from ponder.api.service_config import AnswerProbe, EarlyExitConfig, ServiceConfig
from ponder.local.interrupts import run_main
from ponder.local.stack import local_stack

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "out" / "bench" / "overthinking"
BRANCH_COUNTS = (1, 4, 8)
STYLES = {"short": ANSWER_INSTRUCTION, "explain": EXPLAIN_INSTRUCTION, "check": CHECK_INSTRUCTION}
"""Prompt style -> the instruction after each question."""
STYLE_MAX_TOKENS = {"short": 192, "explain": 192, "check": 512}
"""Prompt style -> its branches' cap. Asked to check, greedy SmolLM2 averaged about 260 tokens
on 20 of these questions at a cap of 512, and 6 of the 20 still reached the cap (loops that
repeat a line); a cap of 192 would cut most of its replies short."""
TARGET_CUT = 0.40
"""The target: the early exit generates at least 40% fewer tokens, at no lower accuracy."""
DEFAULT_QUESTIONS = 30
DEADLINE_MS = 900_000
"""Long enough that no arm is cut by its deadline on a busy 2-core machine (a `check` branch
of 512 tokens among 48 in flight on two shared cores took over 200 s): the arms differ only in
the early exit, and no query is cut short by the machine's speed. The service admits it
(`bench_service`), and the client waits `CLIENT_SLACK_SECONDS` longer."""
CLIENT_SLACK_SECONDS = 60.0
CONCURRENCY = 6


@dataclass(frozen=True)
class Arm:
    """One row of the benchmark: a prompt style and a strategy spec."""

    style: str
    spec: StrategySpec

    @property
    def branches(self) -> int:
        return int(self.spec.options.get("branches", 1))

    @property
    def early_exit(self) -> bool:
        return self.spec.options.get("early_exit") == "answer-probe"


@dataclass(frozen=True)
class ArmRow:
    """One arm's figures over the questions."""

    label: str
    style: str
    branches: int
    early_exit: bool
    queries: int
    accuracy: float
    tokens_per_query: float
    after_answer_per_query: float
    probe_tokens_per_query: float
    tokens_per_probe: float
    early_exit_share: float
    capped_share: float
    """The share of branches that stopped at `max_tokens`."""
    p50_latency_s: float
    errors: int
    cut_short: int = 0
    """Queries shrunk by the planner or answered at their deadline: neither should happen."""


@dataclass(frozen=True)
class Cut:
    """What the early exit changed for one style at one branch count."""

    style: str
    branches: int
    token_cut: float
    accuracy_change: float
    hindsight_cut: float
    """The cut had every branch of the arm without the exit stopped right where its answer
    settled: the share of its tokens generated after the answer (no probe can do better)."""

    @property
    def meets_target(self) -> bool:
        return self.token_cut >= TARGET_CUT and self.accuracy_change >= 0.0


def style_caps(styles: Sequence[str], max_tokens: int | None) -> dict[str, int]:
    """Each style's cap: `max_tokens` for all when given, else the style's own."""
    return {style: max_tokens or STYLE_MAX_TOKENS[style] for style in styles}


def arms(styles: Sequence[str], max_tokens: int | None = None) -> list[Arm]:
    """Per style, self-consistency at each branch count (greedy at 1), without and with the
    early exit, at the style's cap (`style_caps`)."""
    caps = style_caps(styles, max_tokens)
    found = []
    for style in styles:
        for branches in BRANCH_COUNTS:
            greedy = branches == 1
            for early in (False, True):
                width = "greedy" if greedy else f"sc@{branches}"
                spec = StrategySpec(
                    f"{style}: {width}{' +probe' if early else ''}",
                    "single" if greedy else "self-consistency",
                    {
                        **({} if greedy else {"branches": branches}),
                        "early_exit": "answer-probe" if early else "none",
                        "deadline_ms": DEADLINE_MS,
                    },
                    temperature=0.0 if greedy else None,
                    max_tokens=caps[style],
                )
                found.append(Arm(style, spec))
    return found


def arm_row(arm: Arm, records: Sequence[QueryRecord]) -> ArmRow:
    """The figures of one arm's records (an errored query counts as wrong, 0 tokens)."""
    count = max(1, len(records))
    branches = sum(record.branches for record in records)
    return ArmRow(
        label=arm.spec.label,
        style=arm.style,
        branches=arm.branches,
        early_exit=arm.early_exit,
        queries=len(records),
        accuracy=sum(record.correct for record in records) / count,
        tokens_per_query=sum(record.completion_tokens for record in records) / count,
        after_answer_per_query=sum(record.tokens_after_answer for record in records) / count,
        probe_tokens_per_query=sum(record.probe_tokens for record in records) / count,
        tokens_per_probe=sum(record.probe_tokens for record in records)
        / max(1, sum(record.probes for record in records)),
        early_exit_share=sum(record.early_exits for record in records) / max(1, branches),
        capped_share=sum(record.capped_branches for record in records) / max(1, branches),
        p50_latency_s=percentile([record.latency_seconds for record in records], 0.5),
        errors=sum(record.error is not None for record in records),
        cut_short=sum(record.shrunk or record.deadline_exceeded for record in records),
    )


def cuts(rows: Sequence[ArmRow]) -> list[Cut]:
    """Per style and branch count: 1 - tokens(with) / tokens(without), accuracy(with) -
    accuracy(without), and the hindsight cut of the arm without."""
    pairs: dict[tuple[str, int], dict[bool, ArmRow]] = {}
    for row in rows:
        pairs.setdefault((row.style, row.branches), {})[row.early_exit] = row
    found = []
    for (style, branches), pair in pairs.items():
        without, with_exit = pair.get(False), pair.get(True)
        if without is None or with_exit is None or without.tokens_per_query <= 0:
            continue
        found.append(
            Cut(
                style,
                branches,
                1.0 - with_exit.tokens_per_query / without.tokens_per_query,
                with_exit.accuracy - without.accuracy,
                without.after_answer_per_query / without.tokens_per_query,
            )
        )
    return found


def table(rows: Sequence[ArmRow], found: Sequence[Cut]) -> str:
    """The arms' table, then the early exit's effect per style and branch count."""
    arm_table = format_table(
        [
            "arm",
            "acc",
            "tok/q",
            "after-answer/q",
            "probe tok/q",
            "tok/probe",
            "early exits",
            "at cap",
            "p50 s",
            "err",
            "cut short",
        ],
        [
            [
                row.label,
                fmt(row.accuracy),
                fmt(row.tokens_per_query, 1),
                fmt(row.after_answer_per_query, 1),
                fmt(row.probe_tokens_per_query, 1),
                fmt(row.tokens_per_probe, 1),
                f"{row.early_exit_share:.0%}",
                f"{row.capped_share:.0%}",
                fmt(row.p50_latency_s, 1),
                row.errors,
                row.cut_short,
            ]
            for row in rows
        ],
    )
    cut_table = format_table(
        [
            "style",
            "branches",
            "token cut",
            "hindsight cut",
            "accuracy change",
            f"target (>= {TARGET_CUT:.0%}, >= 0)",
        ],
        [
            [
                cut.style,
                cut.branches,
                f"{cut.token_cut:.0%}",
                f"{cut.hindsight_cut:.0%}",
                f"{cut.accuracy_change:+.2f}",
                "met" if cut.meets_target else "not met",
            ]
            for cut in found
        ],
    )
    return f"{arm_table}\n\n{cut_table}\n"


def bench_service(
    every: int, window: int, max_tokens: int, probe_tokens: int = AnswerProbe().probe_tokens
) -> ServiceConfig:
    """The SmolLM2 demo's service, with the probe as asked (and no early exit by default),
    admitting branches of `max_tokens`."""
    config = smollm2_config().model_copy(update={"name": "overthinking"})
    probe = AnswerProbe(every_tokens=every, window=window, probe_tokens=probe_tokens)
    strategy = config.strategy.model_copy(update={"early_exit": EarlyExitConfig(probe=probe)})
    cap = max(config.budget.max_tokens_per_branch, max_tokens)
    budget = config.budget.model_copy(update={"max_tokens_per_branch": cap})
    slo = config.slo.model_copy(
        update={"max_deadline_ms": max(config.slo.max_deadline_ms, DEADLINE_MS)}
    )
    return config.model_copy(update={"strategy": strategy, "budget": budget, "slo": slo})


async def run(args: argparse.Namespace) -> int:
    directory = None
    if args.vllm_url is None:
        try:
            directory = smollm2_model_dir()
        except FileNotFoundError as error:
            print(error, file=sys.stderr)
            return 1
    caps = style_caps(args.styles, args.max_tokens)
    config = bench_service(args.every, args.window, max(caps.values()), args.probe_tokens)
    questions = word_questions(args.questions, BENCH_SEED)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = []
    async with local_stack(
        config, model_dir=directory, vllm_url=args.vllm_url, workers=WORKERS, log_dir=logs
    ) as stack:
        client = PonderClient(
            stack.openai_base_url, SERVED_NAME, DEADLINE_MS / 1000 + CLIENT_SLACK_SECONDS
        )
        try:
            for arm in arms(args.styles, args.max_tokens):

                async def ask(index: int, question: WordQuestion, arm: Arm = arm) -> QueryRecord:
                    message = question.prompt(STYLES[arm.style])
                    return await client.ask_chat(arm.spec, index, question, message)

                records = await run_bounded(questions, ask, CONCURRENCY)
                rows.append(arm_row(arm, records))
                for message in sorted({r.error for r in records if r.error is not None}):
                    print(f"{arm.spec.label}: error {message}", file=sys.stderr)
                print(f"{arm.spec.label}: done ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            await client.close()
    found = cuts(rows)
    text = table(rows, found)
    print(text)
    print(
        f"{len(questions)} questions, max_tokens {caps}, probe every {args.every} tokens, "
        f"window {args.window}, probe_tokens {args.probe_tokens}; "
        f"wall {time.monotonic() - started:.0f} s"
    )
    write_text(args.out / "table.txt", text)
    write_json(
        args.out / "results.json",
        {
            "questions": len(questions),
            "seed": BENCH_SEED,
            "styles": {style: STYLES[style] for style in args.styles},
            "max_tokens": caps,
            "probe": {
                "every_tokens": args.every,
                "window": args.window,
                "probe_tokens": args.probe_tokens,
            },
            "arms": [asdict(row) for row in rows],
            "cuts": [{**asdict(cut), "meets_target": cut.meets_target} for cut in found],
        },
    )
    return 0


def parse_styles(text: str) -> list[str]:
    """`short,check` -> ["short", "check"]; argparse's error for an unknown style."""
    styles = [style.strip() for style in text.split(",") if style.strip()]
    unknown = [style for style in styles if style not in STYLES]
    if unknown or not styles:
        raise argparse.ArgumentTypeError(f"styles are {', '.join(STYLES)}; got {text!r}")
    return styles


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--questions", type=int, default=DEFAULT_QUESTIONS)
    parser.add_argument("--styles", type=parse_styles, default=list(STYLES))
    parser.add_argument("--every", type=int, default=AnswerProbe().every_tokens)
    parser.add_argument("--window", type=int, default=AnswerProbe().window)
    parser.add_argument("--probe-tokens", type=int, default=AnswerProbe().probe_tokens)
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="one cap for every style (default: each its own)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--vllm-url", default=None, help="a running vLLM serving the converted model, reused"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
