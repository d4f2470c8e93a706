"""`make demo` in its short mode, as CI runs it, so that the main job cannot rot.

The demo runs as a user runs it (`python -m bench.demo --short --out DIR`, a subprocess that
starts its own NATS, vLLM of the shipped model, verifier, scheduler and workers). The test
watches every process the demo starts while it runs and checks that none outlives it. The
`chat_model` test runs `--model smollm2 --short` the same way, on SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.demo import demo_specs
from bench.demo_smollm2 import SHORT_QUESTIONS, smollm2_specs
from bench.stack import MODEL_DIR, REPO_ROOT
from models.smollm2.build import BUILD_COMMAND, built_model_dir, model_dir

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

DEMO_TIMEOUT_SECONDS = 540.0
POLL_SECONDS = 0.5


def _descendants(process: psutil.Process) -> set[tuple[int, float]]:
    """(pid, start time) of every live descendant: the start time tells a reused pid apart."""
    found: set[tuple[int, float]] = set()
    try:
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            found.add((child.pid, child.create_time()))
        except psutil.NoSuchProcess:
            continue
    return found


def _alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_short_demo(out_dir: Path, *more_args: str) -> tuple[str, set[tuple[int, float]]]:
    """Run `python -m bench.demo --short --out out_dir *more_args` as a user does: its output,
    and every process it started while it ran. Fails the test when it overruns or fails."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "bench.demo", "--short", "--out", str(out_dir), *more_args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    watched = psutil.Process(demo.pid)
    seen: set[tuple[int, float]] = set()
    deadline = time.monotonic() + DEMO_TIMEOUT_SECONDS
    try:
        while demo.poll() is None and time.monotonic() < deadline:
            seen |= _descendants(watched)
            time.sleep(POLL_SECONDS)
        if demo.poll() is None:
            demo.terminate()  # the demo stops its own processes on SIGTERM
            demo.wait(60)
            pytest.fail(f"the short demo took longer than {DEMO_TIMEOUT_SECONDS}s")
    finally:
        output = demo.communicate()[0].decode(errors="replace") if demo.stdout else ""
    assert demo.returncode == 0, output[-4000:]
    return output, seen


def assert_table_and_plot_written(out_dir: Path) -> dict[str, Any]:
    """The demo's three files are there and the plot is a PNG; returns results.json."""
    assert {"table.txt", "results.json", "accuracy_vs_tokens.png"} <= {
        path.name for path in out_dir.iterdir()
    }
    assert (out_dir / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results: dict[str, Any] = json.loads((out_dir / "results.json").read_text())
    return results


def assert_none_left(seen: set[tuple[int, float]]) -> None:
    assert seen, "the demo started no processes"
    left = [pid for pid, started in seen if _alive(pid, started)]
    assert not left, f"processes left behind by the demo: {left}"


def every_arm_summarised(output: str, out_dir: Path, labels: list[str]) -> dict[str, Any]:
    """`results.json`, after checking every arm is in the printed table and in its summaries,
    in order, and the table and plot files were written."""
    for label in labels:
        assert label in output, f"{label} missing from the printed table"
    results = assert_table_and_plot_written(out_dir)
    summaries = {summary["label"]: summary for summary in results["summaries"]}
    assert list(summaries) == labels
    return results


def test_short_demo_prints_every_strategy_writes_its_files_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    assert (MODEL_DIR / "model.safetensors").exists(), f"the shipped model is missing: {MODEL_DIR}"
    out_dir = tmp_path / "demo"
    output, seen = run_short_demo(out_dir)

    results = every_arm_summarised(output, out_dir, [s.label for s in demo_specs(short=True)])
    summaries = {summary["label"]: summary for summary in results["summaries"]}
    for label, summary in summaries.items():
        assert 0.0 <= summary["accuracy"] <= 1.0, label
        assert summary["mean_completion_tokens"] > 0, label
        assert summary["mean_branches"] >= 1, label
        assert summary["errors"] == 0, label
        assert summary["p50_latency_seconds"] > 0, label
    assert summaries["self-consistency@4"]["mean_branches"] <= 4
    # The trained model answers some problems; with the oracle (the step verifier), best-of-n
    # does too. The learned reward models' rows ran through their own vLLM servers.
    assert summaries["best-of-n@4 oracle"]["accuracy"] > 0
    assert summaries["best-of-n@4 ORM"]["mean_branches"] <= 4
    assert summaries["beam-search PRM"]["mean_branches"] > 1

    assert_none_left(seen)


@pytest.mark.chat_model
def test_short_smollm2_demo_answers_with_every_arm_on_the_chat_model_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    if built_model_dir() is None:
        pytest.fail(f"no converted SmolLM2 model at {model_dir()}: run {BUILD_COMMAND}")
    out_dir = tmp_path / "demo-smollm2"
    output, seen = run_short_demo(out_dir, "--model", "smollm2")

    assert "SmolLM2-135M-Instruct" in output
    labels = [spec.label for spec in smollm2_specs(short=True)]
    results = every_arm_summarised(output, out_dir, labels)
    summaries = {summary["label"]: summary for summary in results["summaries"]}
    for label, summary in summaries.items():
        assert summary["queries"] == SHORT_QUESTIONS, label
        assert summary["errors"] == 0, label
        assert summary["mean_completion_tokens"] > 0, label
        assert summary["mean_branches"] >= 1, label
    assert summaries["single (greedy)"]["mean_branches"] == 1
    assert summaries["self-consistency@4"]["mean_branches"] <= 4
    assert summaries["self-consistency@8"]["mean_branches"] <= 8
    # Every arm read an answer out of the model's prose for some question (accuracy is the
    # table's business, not the test's: a 135M model on a busy machine).
    records = results["records"]
    for label in labels:
        answered = [r for r in records if r["label"] == label and r["answer"] is not None]
        assert answered, f"{label}: no reply had an answer the extractor could read"

    assert_none_left(seen)
