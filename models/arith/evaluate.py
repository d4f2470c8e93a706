"""Measure a model on the fixed evaluation set, served by real vLLM on the CPU.

``python -m models.arith.evaluate --model models/arith/ponder-arith`` prints a table of greedy
accuracy, single-sample accuracy, pass@k, majority@k and verifier-picked@k (k = 1 … 16) at each
sampling temperature, then greedy, pass@16 and majority@16 by slice (number of terms, one-digit
operands, negative running values), and writes the figures as JSON (default:
``<model>/evaluation.json``). The problems are the held-out evaluation set
(``models.arith.heldout.EVALUATION``), which training never draws.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from models.arith.heldout import EVALUATION
from models.arith.scoring import Sample, mean, sampled_metrics
from models.arith.task import SOLUTION_TOKEN_CAP, Problem, extract_answer, is_verified
from ponder.local.vllm import VllmServer, vllm_server

SAMPLES = 16
KS = (1, 2, 4, 8, 16)
MAX_TOKENS = SOLUTION_TOKEN_CAP
PROMPTS_PER_REQUEST = 50
SAMPLING_SEED = 1234


def slice_metrics(
    problems: Sequence[Problem],
    greedy: Sequence[Sample],
    sampled: Sequence[Sequence[Sample]],
) -> dict[str, dict[str, float]]:
    """Per slice (``Problem.slices``): its size, greedy accuracy, pass@16 and majority@16."""
    members: dict[str, list[int]] = {}
    for index, problem in enumerate(problems):
        for label in problem.slices():
            members.setdefault(label, []).append(index)
    figures: dict[str, dict[str, float]] = {}
    for label in sorted(members):
        rows = members[label]
        truths = [str(problems[row].answer) for row in rows]
        metrics = sampled_metrics([sampled[row] for row in rows], truths, (SAMPLES,))
        figures[label] = {
            "problems": len(rows),
            "greedy": mean([float(greedy[row].answer == truths[i]) for i, row in enumerate(rows)]),
            f"pass@{SAMPLES}": metrics[f"pass@{SAMPLES}"],
            f"majority@{SAMPLES}": metrics[f"majority@{SAMPLES}"],
        }
    return figures


async def complete(
    session: aiohttp.ClientSession,
    server: VllmServer,
    prompts: Sequence[str],
    n: int,
    temperature: float,
) -> tuple[list[list[str]], int]:
    """Completions per prompt (n each) and the completion tokens spent, in chunks."""
    texts: list[list[str]] = []
    completion_tokens = 0
    for start in range(0, len(prompts), PROMPTS_PER_REQUEST):
        chunk = list(prompts[start : start + PROMPTS_PER_REQUEST])
        body: dict[str, Any] = {
            "model": server.served_name,
            "prompt": chunk,
            "n": n,
            "temperature": temperature,
            "max_tokens": MAX_TOKENS,
            "seed": SAMPLING_SEED + start,
        }
        async with session.post(f"{server.base_url}/v1/completions", json=body) as response:
            response.raise_for_status()
            payload = await response.json()
        grouped: list[list[str]] = [[] for _ in chunk]
        for choice in payload["choices"]:
            grouped[choice["index"] // n].append(choice["text"])
        texts.extend(grouped)
        completion_tokens += payload["usage"]["completion_tokens"]
    return texts, completion_tokens


def samples_of(problem: Problem, texts: Sequence[str]) -> list[Sample]:
    return [Sample(extract_answer(text), is_verified(problem.question, text)) for text in texts]


async def evaluate(
    server: VllmServer, problems: Sequence[Problem], temperatures: Sequence[float]
) -> dict[str, Any]:
    """Greedy and sampled figures for ``problems`` on ``server``."""
    prompts = [problem.prompt for problem in problems]
    truths = [str(problem.answer) for problem in problems]
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started_at = time.monotonic()
        greedy_texts, greedy_tokens = await complete(session, server, prompts, 1, 0.0)
        greedy_seconds = time.monotonic() - started_at
        greedy = [
            samples_of(problem, texts)[0]
            for problem, texts in zip(problems, greedy_texts, strict=True)
        ]
        results: dict[str, Any] = {
            "problems": len(problems),
            "evaluation_seed": EVALUATION.seed,
            "greedy": {
                "accuracy": mean(
                    [float(s.answer == t) for s, t in zip(greedy, truths, strict=True)]
                ),
                "verified": mean([float(sample.verified) for sample in greedy]),
                "mean_completion_tokens": greedy_tokens / len(problems),
                "seconds": round(greedy_seconds, 1),
            },
            "sampled": {},
        }
        for temperature in temperatures:
            started_at = time.monotonic()
            texts, tokens = await complete(session, server, prompts, SAMPLES, temperature)
            seconds = time.monotonic() - started_at
            per_problem = [
                samples_of(problem, group) for problem, group in zip(problems, texts, strict=True)
            ]
            metrics: dict[str, float] = sampled_metrics(per_problem, truths, KS)
            results["sampled"][str(temperature)] = {
                **metrics,
                "slices": slice_metrics(problems, greedy, per_problem),
                "samples_per_problem": SAMPLES,
                "mean_completion_tokens_per_sample": tokens / (len(problems) * SAMPLES),
                "seconds": round(seconds, 1),
                "tokens_per_second": round(tokens / seconds),
            }
    return results


def table(results: dict[str, Any]) -> str:
    """A plain-text table of the figures (percentages), one block per temperature."""
    greedy = results["greedy"]
    lines = [
        f"{results['problems']} problems (seed {results['evaluation_seed']}): "
        f"greedy accuracy {100 * greedy['accuracy']:.1f}%",
    ]
    for temperature, metrics in results["sampled"].items():
        lines += [
            "",
            f"temperature {temperature}: one sample {100 * metrics['sample@1']:.1f}%",
            f"{'k':>4} {'pass@k':>8} {'majority@k':>11} {'verified@k':>11}",
        ]
        lines += [
            f"{k:>4} {100 * metrics[f'pass@{k}']:>7.1f}% {100 * metrics[f'majority@{k}']:>10.1f}%"
            f" {100 * metrics[f'verified@{k}']:>10.1f}%"
            for k in KS
        ]
        pass_at, majority_at = f"pass@{SAMPLES}", f"majority@{SAMPLES}"
        lines += [
            "",
            f"{'slice':<20} {'problems':>8} {'greedy':>7} {pass_at:>8} {f'maj@{SAMPLES}':>7}",
        ]
        lines += [
            f"{label:<20} {figures['problems']:>8.0f} {100 * figures['greedy']:>6.1f}%"
            f" {100 * figures[pass_at]:>7.1f}% {100 * figures[majority_at]:>6.1f}%"
            for label, figures in metrics["slices"].items()
        ]
    return "\n".join(lines)


async def run(model_dir: Path, temperatures: Sequence[float], count: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ponder-eval-") as log_dir:
        async with vllm_server(model_dir, log_dir=Path(log_dir)) as server:
            results = await evaluate(server, EVALUATION.problems(count), temperatures)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="HF model directory")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7])
    parser.add_argument(
        "--problems", type=int, help=f"the first N of the held-out set [all {EVALUATION.size}]"
    )
    parser.add_argument("--json", type=Path, help="where to write the figures")
    arguments = parser.parse_args()
    results = asyncio.run(run(arguments.model, arguments.temperatures, arguments.problems))
    print(table(results))
    out = arguments.json or arguments.model / "evaluation.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
