"""Run a launcher's main coroutine so that Ctrl-C and SIGTERM stop every process it started.

The processes of the local stack run in sessions of their own (so that stopping one reaches its
children), which also means a terminal's Ctrl-C reaches only the launcher. `run_main` turns
SIGINT and SIGTERM into a cancellation of the main coroutine; the cancellation unwinds its
`async with` blocks, and each block stops what it started.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any

INTERRUPTED_EXIT = 130
"""128 + SIGINT, as a shell reports a Ctrl-C."""
TERMINATED_EXIT = 143
"""128 + SIGTERM."""


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` to its exit code; Ctrl-C or SIGTERM cancel it, which stops every process it
    started (their `async with` blocks unwind), then exit 130 or 143."""
    terminated = False

    async def guarded() -> int:
        nonlocal terminated
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        return await main

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        print("\ninterrupted: every process this run started was stopped", file=sys.stderr)
        return INTERRUPTED_EXIT
    except asyncio.CancelledError:
        if not terminated:
            raise
        print("\nterminated: every process this run started was stopped", file=sys.stderr)
        return TERMINATED_EXIT
