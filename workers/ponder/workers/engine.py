"""The engine that generates a job's branches: vLLM over its OpenAI-compatible HTTP API.

`Engine` is the seam: the worker talks to nothing else, so a benchmark can plug an instant
engine (bench/overhead.py) while everything around it stays real.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Protocol

import aiohttp

from ponder.api.wire import BranchJob
from ponder.workers.engine_errors import EngineRejected, EngineUnavailable, engine_error_message
from ponder.workers.generation import (
    Generation,
    StreamError,
    apply_chunk,
    parse_sse_line,
    request_body,
    request_path,
)

CONNECT_TIMEOUT_SECONDS = 5.0
HEALTH_TIMEOUT_SECONDS = 2.0
DEADLINE_SLACK_SECONDS = 5.0
"""The HTTP call's own timeout is the job's deadline plus this; the worker stops it at the
deadline itself, so this only guards against a worker that forgot to."""


class Engine(Protocol):
    """Generates every branch of a job as one request."""

    async def generate(self, job: BranchJob, generation: Generation) -> None:
        """Fill `generation` as output arrives; return when every branch finished.

        Cancelling the calling task must stop the work in the engine. Raises EngineUnavailable
        or EngineRejected.
        """
        ...

    async def health_problem(self) -> str | None:
        """None when the engine can serve, else why not."""
        ...


class VllmEngine:
    """vLLM's OpenAI API at `base_url`, with one shared connection pool.

    Use as an async context manager: the aiohttp session lives exactly as long as the block.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VllmEngine:
        # No pool limit: the worker's slots bound the concurrent requests.
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("VllmEngine used outside its `async with` block")
        return self._session

    async def generate(self, job: BranchJob, generation: Generation) -> None:
        remaining = max(0.0, job.deadline_at - time.time())
        timeout = aiohttp.ClientTimeout(
            total=remaining + DEADLINE_SLACK_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
        )
        url = self.base_url + request_path(job.endpoint)
        try:
            async with self.session.post(url, json=request_body(job), timeout=timeout) as response:
                if response.status != 200:
                    raise _http_error(response.status, await response.text())
                try:
                    async for line in response.content:
                        chunk = parse_sse_line(line)
                        if chunk is not None:
                            apply_chunk(generation, chunk, job.endpoint)
                except BaseException:
                    # Cancelled (a cancel message, the deadline, a drain) or failed: close the
                    # connection itself rather than returning it to the pool, so vLLM sees the
                    # client go away and aborts the sequences at once.
                    response.close()
                    raise
        except StreamError as error:
            if error.status >= 500:
                raise EngineUnavailable(f"vLLM stream error {error.status}: {error}") from error
            raise EngineRejected(
                f"vLLM stream error {error.status}: {error}", status=error.status, reason=str(error)
            ) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise EngineUnavailable(
                f"vLLM at {self.base_url} unavailable: {_describe(error)}"
            ) from error

    async def health_problem(self) -> str | None:
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
        try:
            async with self.session.get(self.base_url + "/health", timeout=timeout) as response:
                if response.status == 200:
                    return None
                return f"vLLM /health answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            return f"vLLM at {self.base_url} unreachable: {_describe(error)}"


def _http_error(status: int, body: str) -> Exception:
    message = f"vLLM answered {status}: {body[:500]}"
    # 408 and 429 are the engine being busy, not the job being wrong.
    if status >= 500 or status in (408, 429):
        return EngineUnavailable(message)
    return EngineRejected(message, status=status, reason=engine_error_message(body)[:2000])


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
