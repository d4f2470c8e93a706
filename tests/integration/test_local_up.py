"""`python -m ponder.local up` as a user runs it: a real process that serves until SIGTERM, and a
real failed start; either way, no process it started outlives it.

To keep the tier fast, the serving `up` reuses the session's vLLM (`--vllm-url`) and starts its
own NATS, step verifier, scheduler and worker; the failed start is a real vLLM start on a model
folder that vLLM cannot load, after NATS and a verifier are already up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from ponder.local import shipped
from ponder.local.vllm import VllmServer

pytestmark = pytest.mark.vllm

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 180.0
FAILED_START_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.25


@dataclass
class UpProcess:
    """A running `python -m ponder.local up`, and every descendant seen while it ran."""

    process: asyncio.subprocess.Process
    stderr_path: Path
    output: list[str] = field(default_factory=list)
    seen: dict[tuple[int, float], str] = field(default_factory=dict)
    _watcher: asyncio.Task[None] | None = None

    async def watch(self) -> None:
        """Record (pid, start time) and command line of each descendant until `up` exits."""
        try:
            parent = psutil.Process(self.process.pid)
            while self.process.returncode is None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    for child in parent.children(recursive=True):
                        with contextlib.suppress(psutil.NoSuchProcess):
                            key = (child.pid, child.create_time())
                            self.seen.setdefault(key, " ".join(child.cmdline()))
                await asyncio.sleep(POLL_SECONDS)
        except psutil.NoSuchProcess:
            return

    async def ready(self) -> str:
        """Its stdout up to the last line of the ready message; fails if it exits first."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        assert self.process.stdout is not None
        while not (self.output and self.output[-1].startswith("Ctrl-C stops")):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"`up` was not ready in {READY_TIMEOUT_SECONDS}s: {self.stderr()}")
            line = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            if not line:
                await self.process.wait()
                pytest.fail(f"`up` exited with {self.process.returncode}: {self.stderr()}")
            self.output.append(line.decode().rstrip("\n"))
        return "\n".join(self.output)

    def row(self, label: str) -> str:
        """The value of one `  label  value` row of the ready message."""
        for line in self.output:
            if line.startswith(f"  {label} "):
                return line[len(label) + 2 :].strip()
        raise AssertionError(f"no {label!r} row in {self.output}")

    async def exit_code(self, timeout_seconds: float) -> int:
        """Wait for `up` to exit (and the watcher to finish); its exit status."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout_seconds)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            pytest.fail(f"`up` did not exit in {timeout_seconds}s: {self.stderr()}")
        if self._watcher is not None:
            await self._watcher
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def survivors(self) -> list[str]:
        """Command lines of the descendants seen that are still alive."""
        alive = []
        for (pid, started), command in self.seen.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid}: {command}")
        return alive

    def started(self, fragment: str) -> bool:
        """Whether a descendant whose command line holds `fragment` was seen."""
        return any(fragment in command for command in self.seen.values())


@contextlib.asynccontextmanager
async def up_process(args: list[str], scratch: Path) -> AsyncIterator[UpProcess]:
    """`python -m ponder.local up ARGS` from the checkout, watched; SIGKILLed if still running
    on the way out (a failed test), its descendants then too."""
    stderr_path = scratch / "up.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ponder.local",
            "up",
            *args,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    up = UpProcess(process=process, stderr_path=stderr_path)
    up._watcher = asyncio.create_task(up.watch())
    try:
        yield up
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        if process.returncode is None:
            process.kill()
            await process.wait()
        await up._watcher
        for survivor in up.survivors():
            with contextlib.suppress(psutil.NoSuchProcess, ValueError):
                psutil.Process(int(survivor.split(":")[0])).kill()


def reuse_vllm_args(vllm: VllmServer, scratch: Path, workers: int) -> list[str]:
    """`up` options that serve the shipped model's config on the session's vLLM."""
    config = shipped.shipped_service_config().model_copy(update={"max_model_len": 256})
    config_path = scratch / "service.json"
    config_path.write_text(config.model_dump_json(indent=2))
    return [
        "--vllm-url",
        vllm.base_url,
        "--config",
        str(config_path),
        "--workers",
        str(workers),
        "--log-dir",
        str(scratch / "logs"),
    ]


def try_line(output: str, marker: str) -> str:
    """The command line to try in the ready message that holds `marker`."""
    return next(line for line in output.splitlines() if marker in line)


async def run_shell(line: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO_ROOT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def test_up_serves_until_sigterm_then_stops_every_process_it_started(
    vllm: VllmServer, tmp_path: Path
) -> None:
    async with up_process(reuse_vllm_args(vllm, tmp_path, workers=1), tmp_path) as up:
        output = await up.ready()
        base_url = up.row("OpenAI base URL")
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert up.row("vLLM") == f"{vllm.base_url} (not started here)"
        assert up.row("verifier").endswith("/verify")

        status, answer = await run_shell(try_line(output, "curl -s "))
        assert status == 0, answer
        body = json.loads(answer)
        assert body["ponder"]["strategy"] == "self-consistency"
        assert body["ponder"]["branches_launched"] == 8
        status, printed = await run_shell(try_line(output, " -c 'from openai import OpenAI"))
        assert status == 0, printed
        assert "'strategy': 'self-consistency'" in printed

        for part in ("nats-server", "models.arith.verifier_server", "ponder.scheduler"):
            assert up.started(part), f"no {part} among {sorted(up.seen.values())}"
        assert up.started("ponder.workers")
        up.process.send_signal(signal.SIGTERM)
        assert await up.exit_code(STOP_TIMEOUT_SECONDS) == 143, up.stderr()
        assert "terminated: every process this run started was stopped" in up.stderr()
        assert up.survivors() == []


async def test_a_failed_start_stops_what_was_already_started_and_exits_1(tmp_path: Path) -> None:
    model = tmp_path / "not-a-model"
    model.mkdir()
    # A config.json vLLM reads and then refuses: the start fails inside vLLM, for real.
    (model / "config.json").write_text(
        json.dumps({"architectures": ["NoSuchForCausalLM"], "model_type": "no-such-model"})
    )
    args = [
        "--model",
        str(model),
        "--workers",
        "1",
        "--verifier",
        shipped.VERIFIER_MODULE,
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    async with up_process(args, tmp_path) as up:
        assert await up.exit_code(FAILED_START_TIMEOUT_SECONDS) == 1, up.stderr()
        stderr = up.stderr()
        assert "python -m ponder.local up: error: vLLM exited with" in stderr, stderr
        assert "everything started was stopped" in stderr
        for part in ("nats-server", shipped.VERIFIER_MODULE, "vllm.entrypoints.openai"):
            assert up.started(part), f"no {part} among {sorted(up.seen.values())}"
        assert up.survivors() == []
        assert (await up.process.stdout.read() if up.process.stdout else b"") == b""
