"""The Dockerfile builds the image the chart and the operator's renderer run.

No Docker engine runs here, so the Dockerfile is read, not built: its final stage is a slim
Python 3.11 that installs the ponder distribution and runs as a non-root user, and every
`python -m <module>` the chart (operator) and the renderer (scheduler, workers) start in the Ponder
image is one of the image's declared entry points and a runnable module of this repository.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from ponder.api.crd import ReasoningServiceSpec
from ponder.local.cluster.commands import run_command
from ponder.local.cluster.local_cluster import ToolsMissingError, find_tools_bin_dir
from ponder.operator.render import Owner, render_children

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CHART = REPO_ROOT / "charts" / "ponder"
EXAMPLE = REPO_ROOT / "examples" / "reasoningservice.yaml"
ENTRYPOINTS_LABEL = "dev.ponder.entrypoints"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-case, e.g. "RUN"
    arguments: str  # continuation lines joined


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order; comments dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        keyword, _, arguments = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage; each group starts with its FROM."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def expand(value: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], value)


def labels(stage: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "LABEL":
            for key, value in re.findall(r'([\w.-]+)="([^"]*)"', instruction.arguments):
                found[key] = value
    return found


def runnable_with_dash_m(module: str) -> bool:
    """`python -m module` works: the module exists, and a package has a __main__."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations is None:
        return True
    return importlib.util.find_spec(f"{module}.__main__") is not None


def ponder_module(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    return command[2]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


@pytest.fixture(scope="module")
def entry_points(final_stage: list[Instruction]) -> set[str]:
    """The modules the image declares as its entry points (LABEL dev.ponder.entrypoints)."""
    return set(labels(final_stage)[ENTRYPOINTS_LABEL].split())


@pytest.fixture(scope="module")
def rendered_children() -> list[dict[str, Any]]:
    """The children the operator renders for the sample ReasoningService."""
    sample = yaml.safe_load(EXAMPLE.read_text())
    spec = ReasoningServiceSpec.model_validate(sample["spec"])
    owner = Owner(namespace="default", name=sample["metadata"]["name"], uid="0000")
    return render_children(owner, spec, worker_replicas=1, nats_url="nats://nats:4222")


@pytest_asyncio.fixture(scope="module")
async def chart_operator_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The operator container's command as `helm template` renders it."""
    try:
        helm = await find_tools_bin_dir() / "helm"
    except ToolsMissingError as error:
        pytest.fail(str(error), pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {"HELM_CACHE_HOME": str(home), "HELM_CONFIG_HOME": str(home)}
    rendered = await run_command(
        [str(helm), "template", "ponder", str(CHART), "--show-only", "templates/deployment.yaml"],
        env=env,
        timeout_seconds=60,
    )
    deployment = yaml.safe_load(rendered)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return list(next(c for c in containers if c["name"] == "operator")["command"])


def test_image_is_a_slim_python_3_11(instructions: list[Instruction]) -> None:
    base = expand(stages(instructions)[-1][0].arguments.split()[0], global_args(instructions))
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_image_runs_as_a_numeric_non_root_user(final_stage: list[Instruction]) -> None:
    users = [i.arguments for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so the kubelet can enforce runAsNonRoot without the image's /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]


def test_image_builds_and_installs_the_ponder_distribution(
    instructions: list[Instruction], final_stage: list[Instruction]
) -> None:
    runs = " ".join(i.arguments for i in instructions if i.keyword == "RUN")
    assert re.search(r"pip (wheel|install)\b[^&]*\s\"?\.(\[[\w,]+\])?\"?(\s|$)", runs), runs
    final_runs = " ".join(i.arguments for i in final_stage if i.keyword == "RUN")
    assert re.search(r"pip install\b[^&]*\"?ponder(\[[\w,]+\])?\"?", final_runs), final_runs


def test_build_context_holds_every_source_root_of_the_distribution(
    instructions: list[Instruction],
) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    roots = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {
        source.rstrip("/")
        for i in instructions
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
        for source in i.arguments.split()[:-1]
    }
    needed = {*roots, "pyproject.toml", pyproject["project"]["readme"]}
    assert needed <= copied, f"not copied into the build: {sorted(needed - copied)}"
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for root in roots:
        for path in (REPO_ROOT / root).rglob("*.py"):
            relative = path.relative_to(REPO_ROOT).as_posix()
            assert not dockerignore_excludes(relative, patterns), f".dockerignore drops {relative}"
    assert dockerignore_excludes(".venv/bin/python", patterns)
    assert dockerignore_excludes("models/arith/weights/model.safetensors", patterns)


def test_declared_entry_points_are_the_three_programs(entry_points: set[str]) -> None:
    assert entry_points == {"ponder.operator", "ponder.scheduler", "ponder.workers"}


@pytest.mark.parametrize("module", ["ponder.operator", "ponder.scheduler", "ponder.workers"])
def test_each_entry_point_runs_with_python_dash_m(module: str) -> None:
    assert runnable_with_dash_m(module), f"`python -m {module}` has no module to run"


def test_default_command_is_an_entry_point(
    final_stage: list[Instruction], entry_points: set[str]
) -> None:
    commands = [i.arguments for i in final_stage if i.keyword == "CMD"]
    assert commands, "the final stage has no CMD"
    command = yaml.safe_load(commands[-1])  # the exec form is a JSON list
    assert ponder_module(command) in entry_points


def test_chart_runs_the_operator_entry_point(
    chart_operator_command: list[str], entry_points: set[str]
) -> None:
    module = ponder_module(chart_operator_command)
    assert module == "ponder.operator"
    assert module in entry_points


def test_renderer_runs_scheduler_and_workers_entry_points_of_the_ponder_image(
    rendered_children: list[dict[str, Any]], entry_points: set[str]
) -> None:
    sample = ReasoningServiceSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    started: dict[str, str] = {}
    for child in rendered_children:
        pod = child.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            if container["image"] == sample.workers.image:
                started[container["name"]] = ponder_module(container["command"])
    assert started == {"scheduler": "ponder.scheduler", "worker": "ponder.workers"}
    assert set(started.values()) <= entry_points
