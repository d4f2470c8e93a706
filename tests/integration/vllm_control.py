"""Hold a real vLLM server still, so that a test decides what finishes when, at any speed."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from ponder.local.vllm import VllmServer


@contextlib.contextmanager
def paused(vllm: VllmServer) -> Iterator[None]:
    """vLLM stopped (SIGSTOP to its process group) for the block: the generations sent to it
    wait, so that the jobs holding them stay in progress however slowly the test runs."""
    os.killpg(vllm.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(vllm.process.pid, signal.SIGCONT)
