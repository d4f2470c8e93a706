"""The product runs without its tests: nothing outside `tests/` imports `tests`."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCT_FOLDERS = (
    "crds",
    "operator",
    "scheduler",
    "workers",
    "local",
    "bench",
    "models",
    "scripts",
)


def imported_modules(source: str) -> set[str]:
    """Every module an `import` or `from ... import` statement in `source` names."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_imported_modules_sees_both_import_forms() -> None:
    source = "import tests.cluster\nfrom tests.stack import nats\nfrom . import sibling\n"
    assert imported_modules(source) == {"tests.cluster", "tests.stack"}


def test_nothing_outside_tests_imports_tests() -> None:
    offenders = sorted(
        str(path.relative_to(REPO_ROOT))
        for folder in PRODUCT_FOLDERS
        for path in (REPO_ROOT / folder).rglob("*.py")
        if any(
            module == "tests" or module.startswith("tests.")
            for module in imported_modules(path.read_text())
        )
    )
    assert offenders == []
