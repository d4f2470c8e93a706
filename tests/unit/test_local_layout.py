"""`python -m ponder.local` is a product entry point that runs without the operator's Kubernetes
libraries (tests/unit/test_layout.py checks that nothing outside `tests/` imports `tests`)."""

from __future__ import annotations

import subprocess
import sys


def test_the_local_launcher_needs_neither_kopf_nor_lightkube() -> None:
    # ponder.local imports the operator's pure ServiceConfig translation, not its handlers.
    code = (
        "import sys; import ponder.local.cli, ponder.local.stack, ponder.local.config_sources; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kopf', 'lightkube'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_python_dash_m_ponder_local_lists_its_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ponder.local", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("up", "config", "cluster"):
        assert f"    {command} " in result.stdout
