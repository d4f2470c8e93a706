"""Figures a test prints on every run, failed or not (pytest shows captured output only for
failures)."""

from __future__ import annotations

import contextlib

import pytest


def report(config: pytest.Config, tag: str, line: str) -> None:
    """Write `[tag] line` to the terminal, even without `-s`."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with suspended:
        reporter.write_line(f"[{tag}] {line}")
