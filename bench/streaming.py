"""Time to first byte and to the first answer token of a streamed query, against its total latency.

    python -m bench.streaming [--repeats 5] [--out DIR] [--vllm-url URL]

On real parts, all started through `ponder.local`: a nats-server, vLLM on the CPU serving the
shipped arithmetic model (or the one at `--vllm-url`, serving it as `ponder-arith` with
`--max-model-len 256`), two worker processes and the scheduler. Each scenario streams
(`stream: true`) `--repeats` times and marks, from the moment the request is sent:
- first byte: the first SSE chunk (the `wave_launched` progress event, once the jobs are queued);
- first answer token: the first chunk with content;
- total: `data: [DONE]`.
Scenarios: `single` with a long generation (`ignore_eos`, its tokens streamed live as vLLM
writes them), self-consistency@8 (the answer as soon as the vote stops) and budget forcing (the
chain so far when the forced answer starts, then its tokens live). The p50 of each mark is
printed with its share of the total; a stream that answers only at the end has its first
answer token at ~100%. Writes `results.json` under `--out`, process logs under `logs/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.report import format_table, load_line, write_json
from bench.stack import MODEL_DIR, REPO_ROOT, run_main
from bench.summary import percentile
from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import nats_server
from ponder.local.vllm import vllm_server

SERVED_NAME = "ponder-arith"
MAX_MODEL_LEN = 256
PROMPT = "Q:12+34-5 A:"
WAIT_SECONDS = 120.0
"""The longest one streamed query may take: only a hang takes this long."""

SCENARIOS: dict[str, dict[str, Any]] = {
    "single, 200 tokens": {
        "max_tokens": 200,
        "ignore_eos": True,
        "ponder": {"strategy": "single"},
    },
    "self-consistency@8, 64 tokens": {
        "max_tokens": 64,
        "ponder": {"strategy": "self-consistency", "branches": 8},
    },
    # Two turns: 64 thinking tokens (cut at the cap), then the forced answer of up to 32.
    "budget-forcing, 64 thinking tokens": {
        "max_tokens": 64,
        "ignore_eos": True,
        "ponder": {"strategy": "budget-forcing", "branches": 2, "budget_tokens": 128},
    },
}


@dataclass(frozen=True)
class StreamMarks:
    """Seconds from sending a streamed request to its first chunk, its first chunk with
    content (None: no content came) and its end."""

    first_byte: float
    first_token: float | None
    total: float


@dataclass(frozen=True)
class ScenarioFigures:
    name: str
    runs: int
    first_byte_p50: float
    first_token_p50: float
    total_p50: float

    @property
    def first_byte_share(self) -> float:
        return self.first_byte_p50 / self.total_p50 if self.total_p50 > 0 else float("nan")

    @property
    def first_token_share(self) -> float:
        return self.first_token_p50 / self.total_p50 if self.total_p50 > 0 else float("nan")


def scenario_figures(name: str, marks: Sequence[StreamMarks]) -> ScenarioFigures:
    """The p50 of each mark over `marks` (a run without content counts its total as its first
    token: the answer never came before the end)."""
    if not marks:
        raise ValueError(f"scenario {name!r} has no runs")
    tokens = [m.first_token if m.first_token is not None else m.total for m in marks]
    return ScenarioFigures(
        name=name,
        runs=len(marks),
        first_byte_p50=percentile([m.first_byte for m in marks], 0.5),
        first_token_p50=percentile(tokens, 0.5),
        total_p50=percentile([m.total for m in marks], 0.5),
    )


def figures_table(figures: Sequence[ScenarioFigures]) -> str:
    rows = [
        (
            f.name,
            f.runs,
            round(f.first_byte_p50 * 1000),
            f"{f.first_byte_share:.0%}",
            round(f.first_token_p50 * 1000),
            f"{f.first_token_share:.0%}",
            round(f.total_p50 * 1000),
        )
        for f in figures
    ]
    headers = ("scenario", "runs", "TTFB ms", "of total", "first token ms", "of total", "total ms")
    return format_table(headers, rows)


def has_content(chunk: dict[str, Any]) -> bool:
    return any(
        choice.get("text") or (choice.get("delta") or {}).get("content")
        for choice in chunk.get("choices") or []
    )


async def streamed(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> StreamMarks:
    """Send one streamed completion and mark when its chunks came."""
    started = time.monotonic()
    first_byte: float | None = None
    first_token: float | None = None
    async with http.post(url, json={**body, "stream": True}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            now = time.monotonic() - started
            first_byte = now if first_byte is None else first_byte
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                break
            if first_token is None and has_content(json.loads(payload)):
                first_token = now
    if first_byte is None:
        raise RuntimeError(f"{url} streamed nothing")
    return StreamMarks(first_byte, first_token, time.monotonic() - started)


async def measure(plane: Dataplane, repeats: int) -> dict[str, list[StreamMarks]]:
    url = f"{plane.base_url}/v1/completions"
    marks: dict[str, list[StreamMarks]] = {name: [] for name in SCENARIOS}
    timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await streamed(http, url, {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 8})
        for _ in range(repeats):
            for name, scenario in SCENARIOS.items():
                body = {"model": SERVED_NAME, "prompt": PROMPT, **scenario}
                marks[name].append(await streamed(http, url, body))
    return marks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.streaming", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each scenario [5]")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "out" / "streaming", help="output dir"
    )
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="model directory")
    parser.add_argument(
        "--vllm-url", default=None, help="a running vLLM serving the shipped model, reused"
    )
    return parser


def _prepare(model_dir: Path, log_dir: Path) -> None:
    if not (model_dir / "config.json").exists():
        raise SystemExit(f"no model at {model_dir}: train it with `python -m models.arith.train`")
    log_dir.mkdir(parents=True, exist_ok=True)


async def main_async(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    log_dir: Path = args.out / "logs"
    await asyncio.to_thread(_prepare, args.model, log_dir)
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        nats_process = await stack.enter_async_context(nats_server(log_dir))
        vllm_url = args.vllm_url
        if vllm_url is None:
            vllm = await stack.enter_async_context(
                vllm_server(
                    args.model,
                    served_name=SERVED_NAME,
                    max_model_len=MAX_MODEL_LEN,
                    log_dir=log_dir,
                )
            )
            vllm_url = vllm.base_url
        plane = await stack.enter_async_context(
            local_dataplane(
                name="streaming",
                nats_url=nats_process.url,
                vllm_url=vllm_url,
                served_name=SERVED_NAME,
                max_model_len=MAX_MODEL_LEN,
                workers=2,
                log_dir=log_dir,
            )
        )
        marks = await measure(plane, args.repeats)
    figures = [scenario_figures(name, runs) for name, runs in marks.items()]
    load = load_line()
    print(f"\nStreamed queries, p50 of {args.repeats} runs each ({load})\n")
    print(figures_table(figures))
    json_path = write_json(
        args.out / "results.json",
        {
            "command": ["python", "-m", "bench.streaming", *argv],
            "load": load,
            "elapsed_seconds": round(time.monotonic() - began, 1),
            "scenarios": [
                {
                    "name": f.name,
                    "runs": f.runs,
                    "first_byte_p50_seconds": f.first_byte_p50,
                    "first_token_p50_seconds": f.first_token_p50,
                    "total_p50_seconds": f.total_p50,
                    "marks": [vars(m) for m in marks[f.name]],
                }
                for f in figures
            ],
        },
    )
    print(f"\nJSON: {json_path}\nFinished in {time.monotonic() - began:.0f}s.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(main_async(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
