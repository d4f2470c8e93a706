"""The README's samples run: its Python samples ("Asking a question", "Run it without
Kubernetes") against a local stack that `python -m ponder.local up` brought up, and the output
of `up` that the README shows is the output `up` prints.

The samples are read from README.md at test time, so the docs cannot rot. They talk to
`http://127.0.0.1:8000/v1` (where the scheduler listens when run by hand); the test points them at
the stack's own base URL. The stack reuses the session's vLLM (`--vllm-url`).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ponder.local.vllm import VllmServer
from tests.integration.test_local_up import UpProcess, reuse_vllm_args, up_process

pytestmark = pytest.mark.vllm

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
SAMPLE_BASE_URL = "http://127.0.0.1:8000/v1"
SAMPLE_SECTIONS = ("Asking a question", "Run it without Kubernetes")
SAMPLE_TIMEOUT_SECONDS = 120.0


def readme_section(title: str) -> str:
    """The text of the `## title` section of README.md."""
    sections = re.split(r"^## ", README.read_text(), flags=re.MULTILINE)
    matching = [section for section in sections if section.split("\n", 1)[0].strip() == title]
    assert len(matching) == 1, f"README.md has no single section {title!r}"
    return matching[0]


def code_blocks(section: str, language: str) -> list[str]:
    """The fenced code blocks of one language in `section`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def python_samples() -> list[tuple[str, str]]:
    """(id, code) of every Python sample of the sections that talk to the local stack."""
    samples = []
    for title in SAMPLE_SECTIONS:
        for index, code in enumerate(code_blocks(readme_section(title), "python")):
            samples.append((f"{title} #{index + 1}", code))
    return samples


def normalised(line: str) -> str:
    """`line` with what differs between runs (ports, seconds, interpreter, paths) blanked."""
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    line = re.sub(r"ready in \d+s", "ready in Ns", line)
    return re.sub(r"^\S+ -c 'from openai", "PYTHON -c 'from openai", line)


@pytest_asyncio.fixture(scope="module")
async def readme_stack(
    vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[UpProcess]:
    """`up` with two workers, as in the README, on the session's vLLM, for this module."""
    scratch = tmp_path_factory.mktemp("readme-stack")
    async with up_process(reuse_vllm_args(vllm, scratch, workers=2), scratch) as up:
        await up.ready()
        yield up


@pytest.mark.parametrize(
    ("title", "code"), python_samples(), ids=[title for title, _ in python_samples()]
)
async def test_readme_python_sample_runs_against_the_local_stack(
    readme_stack: UpProcess, title: str, code: str
) -> None:
    assert SAMPLE_BASE_URL in code, f"the sample in {title!r} no longer asks {SAMPLE_BASE_URL}"
    code = code.replace(SAMPLE_BASE_URL, readme_stack.row("OpenAI base URL"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), SAMPLE_TIMEOUT_SECONDS)
    printed = out.decode(errors="replace")
    assert process.returncode == 0, f"{title}:\n{code}\n{printed}"
    assert printed.strip(), f"{title} printed nothing"


def test_every_section_with_samples_has_one() -> None:
    titles = {title.split(" #")[0] for title, _ in python_samples()}
    assert titles == set(SAMPLE_SECTIONS)


def test_the_readme_shows_what_up_prints(readme_stack: UpProcess) -> None:
    shown = code_blocks(readme_section("Run it without Kubernetes"), "console")[0].splitlines()
    shown = shown[shown.index(next(line for line in shown if line.startswith("Ponder is"))) :]
    printed = readme_stack.output

    def labels(lines: list[str]) -> list[str]:
        return [line.split("  ")[1] for line in lines if line.startswith("  ")]

    assert labels(shown) == labels(printed)
    plain = [normalised(line) for line in printed if not line.startswith("  ")]
    assert [normalised(line) for line in shown if not line.startswith("  ")] == plain
