"""Test-time-scaling efficiency: accuracy against generated tokens, Ponder and optillm.

    python -m bench.tts_efficiency [--problems N] [--out DIR] [--no-peer]

On a held-out problem set, through Ponder on one local stack with a scheduler replica per
verifier (`bench.stack.start_verifier_schedulers`): `single` (greedy), self-consistency at
2/4/8/16, adaptive-consistency by the vote alone at two confidence levels, by ESC's unanimous
window of 2 and 4, by the vote weighted by token confidence, and with the learned outcome reward
model at branch caps 4/8/16 (there the confidence level plays no part), best-of-n
at 4/8/16 with the learned outcome and with the learned process reward model, a weighted vote by
the outcome model, beam search with the process model, refine with the outcome model, deep-conf
offline at 16 and online with warm-ups of 4/6/8 up to 16 (the model's own token confidence, no
verifier), and best-of-n@16 with the exact step verifier, which knows the answer (the oracle, a
ceiling and nothing more). Then the peer, optillm, as its own proxy in front of the same vLLM
(`bench/optillm_peer.py`): its `self_consistency` and `bon` approaches, plus its
`majority_voting` plugin at k=16.

Prints the table, the ratios "tokens of adaptive-consistency / tokens of self-consistency@16 at
equal or better accuracy" and the same for deep-conf online, Ponder's best strategy against each
optillm point at equal tokens, and how often the samples agree; writes `results.json`,
`table.txt` and `accuracy_vs_tokens.png` under `out/tts/`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from bench.clients import (
    ChatPeerClient,
    PonderClient,
    StrategySpec,
    run_bounded,
    vllm_generated_tokens,
)
from bench.optillm_peer import PeerSpec, optillm_proxy
from bench.report import (
    fmt,
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
from bench.summary import (
    ADAPTIVE,
    EfficiencyRatio,
    PeerComparison,
    QueryRecord,
    Summary,
    compare_at_equal_tokens,
    efficiency_ratio,
    summarise,
)
from models.arith.heldout import TTS
from models.arith.task import Problem

DEFAULT_PROBLEMS = 100
"""The first problems of the held-out benchmark set (``models.arith.heldout.TTS``)."""
CONCURRENCY = 16
REFERENCE = "self-consistency@16"
DEEP_CONF = "deep-conf"
DEEP_CONF_ONLINE = "deep-conf online"
ADAPTIVE_TARGET = 0.25
DEEP_CONF_TARGET = 0.40
"""Issue 8's (b): deep-conf online's tokens / self-consistency@16's at equal or better accuracy."""


def ponder_specs(settings: BenchSettings) -> list[StrategySpec]:
    """Ponder's rows, cheapest first within each family, each on the scheduler whose verifier
    its label names; the oracle's rows last, as the ceiling."""
    vote = VOTE_SCHEDULER
    specs = [StrategySpec("single (greedy)", "single", temperature=0.0, scheduler=vote)]
    specs += [
        StrategySpec(f"self-consistency@{n}", "self-consistency", {"branches": n}, scheduler=vote)
        for n in (2, 4, 8, 16)
    ]
    specs += [
        StrategySpec(
            f"adaptive@{confidence:.2f} (vote)",
            ADAPTIVE,
            {"branches": 2, "max_branches": 16, "confidence": confidence},
            scheduler=vote,
        )
        for confidence in (0.8, 0.95)
    ]
    # The other stopping rules without a verifier: ESC's unanimous window, and the vote
    # weighted by the branches' token confidence (deep-conf's measure, its consensus).
    specs += [
        StrategySpec(
            f"adaptive window@{window} (vote)",
            ADAPTIVE,
            {"branches": window, "max_branches": 16, "stopping_rule": "window"},
            scheduler=vote,
        )
        for window in (2, 4)
    ]
    specs.append(
        StrategySpec(
            "adaptive confidence (weighted vote)",
            ADAPTIVE,
            {"branches": 2, "max_branches": 16, "stopping_rule": "confidence"},
            scheduler=vote,
        )
    )
    # With a verifier the confidence level plays no part (a wave holding a verified answer
    # stops the search), so the knob that trades accuracy for tokens is the branch cap.
    specs += [
        StrategySpec(
            f"adaptive+ORM@{cap}",
            ADAPTIVE,
            {"branches": 2, "max_branches": cap},
            scheduler=ORM_SCHEDULER,
        )
        for cap in (4, 8, 16)
    ]
    for name, scheduler in (("ORM", ORM_SCHEDULER), ("PRM", PRM_SCHEDULER)):
        specs += [
            StrategySpec(f"best-of-n@{n} {name}", "best-of-n", {"branches": n}, scheduler=scheduler)
            for n in (4, 8, 16)
        ]
    specs.append(
        StrategySpec(
            "weighted-vote@16 ORM", "weighted-vote", {"branches": 16}, scheduler=ORM_SCHEDULER
        )
    )
    specs.append(
        StrategySpec(
            f"beam-search PRM (B{settings.beam_width}xK{settings.beam_expansions})",
            "beam-search",
            {"max_branches": beam_branches(settings)},
            scheduler=PRM_SCHEDULER,
        )
    )
    specs.append(StrategySpec("refine ORM", "refine", {"max_branches": 5}, scheduler=ORM_SCHEDULER))
    specs.append(
        StrategySpec(
            "deep-conf offline@16",
            DEEP_CONF,
            {"branches": 16, "max_branches": 16, "deep_conf_mode": "offline"},
            scheduler=vote,
        )
    )
    specs += [
        StrategySpec(
            f"{DEEP_CONF_ONLINE} warm-up {warmup}",
            DEEP_CONF,
            {"branches": warmup, "max_branches": 16, "deep_conf_mode": "online"},
            scheduler=vote,
        )
        for warmup in (4, 6, 8)
    ]
    specs.append(
        StrategySpec(
            "best-of-n@16 oracle", "best-of-n", {"branches": 16}, scheduler=ORACLE_SCHEDULER
        )
    )
    return specs


def peer_specs(temperature: float) -> list[PeerSpec]:
    """optillm's rows: its fixed-size approaches as shipped, and the majority-voting plugin at
    Ponder's temperature."""
    return [
        PeerSpec("optillm self_consistency", "self_consistency", branches=5),
        PeerSpec("optillm bon@4", "bon", branches=4),
        PeerSpec(
            "optillm majority_voting@16",
            "majority_voting",
            branches=16,
            temperature=temperature,
            extra_body={"k": 16},
        ),
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tts_efficiency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--problems", type=int, default=DEFAULT_PROBLEMS, help="problem count")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "tts", help="output dir")
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="model directory")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="queries in flight")
    parser.add_argument("--no-peer", action="store_true", help="skip optillm")
    parser.add_argument(
        "--rows",
        nargs="+",
        metavar="PREFIX",
        help="run only Ponder's rows whose label starts with one of these (the reference, "
        f"{REFERENCE}, and greedy always run)",
    )
    return parser


def selected(specs: Sequence[StrategySpec], prefixes: Sequence[str] | None) -> list[StrategySpec]:
    """The rows whose label starts with one of `prefixes` (all when None), plus the reference
    and greedy, which every ratio and comparison needs."""
    if prefixes is None:
        return list(specs)
    kept = (REFERENCE, "single", *prefixes)
    return [spec for spec in specs if spec.label.startswith(kept)]


SETTLE_SECONDS = 0.5
"""Pause before reading vLLM's counter after a row: cancelled branches stop within it."""


async def _run_rows(
    bar: tqdm,
    label: str,
    problems: Sequence[Problem],
    ask: Callable[[int, Problem], Awaitable[QueryRecord]],
    concurrency: int,
    vllm_url: str,
) -> tuple[Summary, list[QueryRecord]]:
    """One row: every problem asked, and the tokens vLLM generated meanwhile (rows run one
    after another, so the counter's difference is this row's)."""
    bar.set_description(label)
    before = await vllm_generated_tokens(vllm_url)
    records = await run_bounded(problems, ask, concurrency, on_record=lambda _: bar.update(1))
    await asyncio.sleep(SETTLE_SECONDS)
    generated = await vllm_generated_tokens(vllm_url) - before
    summary = replace(summarise(records), measured_completion_tokens=generated / len(problems))
    bar.write(
        f"{summary.label:<28} accuracy {summary.accuracy:.3f}  "
        f"{summary.generated_tokens:8.1f} generated tokens/query  errors {summary.errors}"
    )
    return summary, records


async def run_benchmark(
    problems: Sequence[Problem],
    settings: BenchSettings,
    out_dir: Path,
    concurrency: int,
    with_peer: bool,
    rows: Sequence[str] | None = None,
) -> tuple[list[Summary], list[QueryRecord]]:
    specs = selected(ponder_specs(settings), rows)
    peers = peer_specs(settings.temperature) if with_peer else []
    summaries: list[Summary] = []
    records: list[QueryRecord] = []
    print(f"Starting the local data plane (logs: {out_dir / 'logs'}) ...", file=sys.stderr)
    async with bench_stack(settings, out_dir / "logs") as stack:
        urls = await start_verifier_schedulers(stack)
        clients = {name: PonderClient(url, stack.served_name) for name, url in urls.items()}
        total = (len(specs) + len(peers)) * len(problems)
        try:
            with tqdm(total=total, unit="query", file=sys.stderr, dynamic_ncols=True) as bar:
                for spec in specs:
                    client = clients[spec.scheduler]

                    async def ask(
                        index: int, problem: Problem, spec=spec, client=client
                    ) -> QueryRecord:
                        return await client.ask(spec, index, problem)

                    summary, batch = await _run_rows(
                        bar, spec.label, problems, ask, concurrency, stack.vllm_url
                    )
                    summaries.append(summary)
                    records.extend(batch)
                if peers:
                    bar.set_description("starting optillm")
                    async with optillm_proxy(
                        stack.vllm_url, best_of_n=4, log_dir=out_dir / "logs"
                    ) as proxy:
                        peer_client = ChatPeerClient(proxy.openai_base_url, "optillm")
                        try:
                            for peer in peers:

                                async def ask_peer(
                                    index: int, problem: Problem, peer=peer, c=peer_client
                                ) -> QueryRecord:
                                    return await c.ask(
                                        peer.label,
                                        peer.model(stack.served_name),
                                        index,
                                        problem,
                                        peer.branches,
                                        peer.temperature,
                                        peer.extra_body,
                                    )

                                summary, batch = await _run_rows(
                                    bar,
                                    peer.label,
                                    problems,
                                    ask_peer,
                                    concurrency,
                                    stack.vllm_url,
                                )
                                summaries.append(summary)
                                records.extend(batch)
                        finally:
                            await peer_client.close()
        finally:
            for client in clients.values():
                await client.close()
    return summaries, records


def ratio_lines(result: EfficiencyRatio, target: float = ADAPTIVE_TARGET) -> list[str]:
    reference = result.reference
    head = (
        f"{reference.label}: accuracy {reference.accuracy:.3f} at "
        f"{reference.generated_tokens:.1f} generated tokens per query"
    )
    if result.candidate is None or result.ratio is None:
        best = result.best_candidate
        tail = (
            f"no adaptive configuration reached that accuracy; the best, {best.label}, reached "
            f"{best.accuracy:.3f} with {best.generated_tokens:.1f} tokens "
            f"({best.generated_tokens / reference.generated_tokens:.3f} of them)"
            if best
            else "no adaptive configuration ran"
        )
        return [head, f"ratio: - ({tail})", f"target (<= {target:.2f}): NOT MET"]
    verdict = "met" if result.ratio <= target else "NOT MET"
    return [
        head,
        f"ratio: {result.ratio:.3f} = {result.candidate.generated_tokens:.1f} tokens of "
        f"{result.candidate.label} (accuracy {result.candidate.accuracy:.3f}) / "
        f"{reference.generated_tokens:.1f} tokens of {reference.label}",
        f"target (<= {target:.2f}): {verdict}",
    ]


def peer_lines(comparisons: Sequence[PeerComparison]) -> list[str]:
    lines = []
    for comparison in comparisons:
        peer, ponder = comparison.peer, comparison.ponder
        left = f"{peer.label}: accuracy {peer.accuracy:.3f} at {peer.generated_tokens:.1f} tokens"
        if ponder is None:
            lines.append(f"{left}; no Ponder strategy is that cheap")
            continue
        verdict = "Ponder wins" if comparison.ponder_wins else "Ponder does NOT win"
        lines.append(
            f"{left}; best Ponder at <= those tokens: {ponder.label}, accuracy "
            f"{ponder.accuracy:.3f} at {ponder.generated_tokens:.1f} tokens -> {verdict}"
        )
    return lines


def agreement_lines(summaries: Sequence[Summary]) -> list[str]:
    lines = []
    for summary in summaries:
        if summary.label.startswith("self-consistency") or summary.label.startswith("best-of-n"):
            lines.append(
                f"{summary.label}: one sample right {fmt(summary.branch_accuracy, 3)}, "
                f"majority share {fmt(summary.agreement, 3)}, "
                f"some branch right (pass@n) {fmt(summary.oracle_accuracy, 3)}, "
                f"answer right {summary.accuracy:.3f}"
            )
    return lines


async def main_async(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    problems = TTS.problems(args.problems)
    settings = BenchSettings(model_dir=args.model, chat_template=True)
    out_dir: Path = args.out
    began = time.monotonic()
    summaries, records = await run_benchmark(
        problems, settings, out_dir, args.concurrency, not args.no_peer, args.rows
    )
    elapsed = time.monotonic() - began
    by_label = {s.label: s for s in summaries}
    ponder = [s for s in summaries if s.system == "ponder"]
    peers = [s for s in summaries if s.system != "ponder"]
    adaptive = [s for s in ponder if s.label.startswith("adaptive")]
    ratio = efficiency_ratio(by_label[REFERENCE], adaptive)
    vote_ratio = efficiency_ratio(by_label[REFERENCE], [s for s in adaptive if "vote" in s.label])
    online = [s for s in ponder if s.label.startswith(DEEP_CONF_ONLINE)]
    deep_conf_ratio = efficiency_ratio(by_label[REFERENCE], online)
    comparisons = compare_at_equal_tokens(peers, ponder)

    title = (
        f"Test-time scaling on {args.problems} held-out problems (seed {TTS.seed}), "
        f"temperature {settings.temperature} (optillm's own approaches sample at 1.0)"
    )
    sections = [
        title,
        summary_table(summaries, measured=True),
        "Adaptive allocation vs self-consistency@16 (any adaptive variant):\n  "
        + "\n  ".join(ratio_lines(ratio)),
        "Vote-only adaptive-consistency vs self-consistency@16:\n  "
        + "\n  ".join(ratio_lines(vote_ratio)),
        "deep-conf online vs self-consistency@16 (confidence, no verifier):\n  "
        + "\n  ".join(ratio_lines(deep_conf_ratio, DEEP_CONF_TARGET)),
    ]
    if comparisons:
        sections.append(
            "Ponder vs optillm at equal tokens:\n  " + "\n  ".join(peer_lines(comparisons))
        )
    sections.append("How often samples agree:\n  " + "\n  ".join(agreement_lines(summaries)))
    report = "\n\n".join(sections)
    print(f"\n{report}\n")
    table_path = write_text(out_dir / "table.txt", report)
    plot_path = plot_accuracy_vs_tokens(
        summaries,
        out_dir / "accuracy_vs_tokens.png",
        f"Accuracy vs generated tokens ({args.problems} problems)",
    )
    json_path = write_json(
        out_dir / "results.json",
        {
            "command": ["python", "-m", "bench.tts_efficiency", *argv],
            "problems": {"seed": TTS.seed, "count": args.problems},
            "settings": {**asdict(settings), "model_dir": str(settings.model_dir)},
            "elapsed_seconds": round(elapsed, 1),
            "ratio": ratio,
            "vote_ratio": vote_ratio,
            "deep_conf_ratio": deep_conf_ratio,
            "peer_comparisons": comparisons,
            "summaries": summaries,
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
