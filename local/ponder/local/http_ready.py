"""Wait for a local HTTP server to answer: the readiness check every launcher shares."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time

import aiohttp


async def wait_http_ok(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    what: str,
    timeout_seconds: float,
    poll_seconds: float = 0.2,
    request_timeout_seconds: float = 2.0,
) -> None:
    """Poll `GET url` until it answers 200. Raises RuntimeError as soon as `process` exits, and
    TimeoutError after `timeout_seconds`; both name `what` and the last answer it gave."""
    deadline = time.monotonic() + timeout_seconds
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}: {last}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(
                    url, timeout=aiohttp.ClientTimeout(total=request_timeout_seconds)
                ) as response:
                    if response.status == 200:
                        return
                    last = f"{response.status} {await response.text()}"
            await asyncio.sleep(poll_seconds)
    raise TimeoutError(f"{what} at {url} was not ready in {timeout_seconds}s: {last}")
