"""Poll an observation until it holds: the cluster converges asynchronously."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    observe: Callable[[], Awaitable[T]],
    holds: Callable[[T], bool],
    *,
    timeout_seconds: float = 60.0,
    interval_seconds: float = 0.5,
    what: str = "the condition",
) -> T:
    """Await `observe()` until `holds(result)`; return that result.

    Raises TimeoutError naming `what` and showing the last observation.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        observed = await observe()
        if holds(observed):
            return observed
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold in {timeout_seconds}s; last: {observed!r}")
        await asyncio.sleep(interval_seconds)
