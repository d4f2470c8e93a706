"""The repository explains itself: every link in the docs and every document a comment cites
points inside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE_DOCUMENTS = re.compile(r"\b(DESIGN|STYLE)\.md\b|\.\./shared/")


def tracked_files() -> list[Path]:
    """Files git tracks or would track (untracked but not ignored), weights left out."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        REPO_ROOT / name
        for name in listed
        if (REPO_ROOT / name).is_file()
        and not name.endswith((".safetensors", ".bin", ".png", ".sum"))
    ]


def markdown_files() -> list[Path]:
    return [path for path in tracked_files() if path.suffix == ".md"]


def local_links(text: str) -> list[str]:
    """The relative targets of markdown links in `text`, without their #anchors."""
    targets = []
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_local_links_finds_relative_targets_only() -> None:
    text = "[a](docs/x.md) [b](https://example.org) [c](#anchor) [d](../y.md#part)"
    assert local_links(text) == ["docs/x.md", "../y.md"]


@pytest.mark.parametrize(
    "path", markdown_files(), ids=lambda path: str(path.relative_to(REPO_ROOT))
)
def test_every_relative_link_resolves_inside_the_repository(path: Path) -> None:
    for target in local_links(path.read_text()):
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(REPO_ROOT), f"{path.name} links outside: {target}"
        assert resolved.exists(), f"{path.name} links to a missing file: {target}"


def test_no_file_cites_a_document_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in tracked_files()
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_DOCUMENTS.search(line)
    ]
    assert offenders == []


def test_the_architecture_covers_what_a_newcomer_needs() -> None:
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    for heading in (
        "Three programs and one contracts package",
        "Request flow",
        "Subjects and stream",
        "Strategies",
        "Autoscaling policy",
        "The local stack",
        "Test tiers and what each proves",
        "Import contracts",
    ):
        assert f"## {heading}" in text, heading


def test_the_readme_summarises_the_kind_guide_instead_of_copying_it() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "(docs/kind-gpu.md)" in readme
    guide_steps = re.findall(
        r"^### \d\. .*$", (REPO_ROOT / "docs" / "kind-gpu.md").read_text(), re.M
    )
    assert guide_steps, "the guide has numbered steps"
    assert not any(step in readme for step in guide_steps)
