"""The worker's small HTTP server: `/healthz` and `/metrics`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthProblem = Callable[[], Awaitable[str | None]]
"""Returns None when healthy, else the reason."""


def build_app(
    health_problem: HealthProblem,
    registry: CollectorRegistry,
    engine_metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> web.Application:
    """`/healthz`: 200 `{"status": "ok"}`, or 503 `{"status": "unhealthy", "reason": ...}`;
    `/metrics`: Prometheus text from `registry`, then the engine's own (`engine_metrics`)."""

    async def healthz(_request: web.Request) -> web.Response:
        problem = await health_problem()
        if problem is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unhealthy", "reason": problem}, status=503)

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        if engine_metrics is not None:
            body += await engine_metrics()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[None]:
    """Serve `app` on host:port for the duration of the block."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield
    finally:
        await runner.cleanup()
