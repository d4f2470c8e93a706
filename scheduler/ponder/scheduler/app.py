"""The scheduler's HTTP edge: an OpenAI-compatible API over the query runner.

`create_app(config, settings)` builds a FastAPI app whose lifespan owns everything with a
lifetime (the NATS connection, the dispatcher, the verifier's sessions, the stats task); nothing
lives at module level. Routes only translate: body -> `QueryRequest` -> planner -> runner ->
response body. Every error is OpenAI's JSON shape `{"error": {message, type, param, code}}`:
a malformed body or an out-of-range option is a 400 naming the field (never FastAPI's 422),
an unknown model a 404, a query without an answer by its deadline a 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ponder.api import tracing
from ponder.api.service_config import ServiceConfig
from ponder.api.wire import ChatMessage, Endpoint
from ponder.scheduler.access import Access, AccessGate
from ponder.scheduler.api_models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    Health,
    ModelCard,
    ModelList,
)
from ponder.scheduler.config import SchedulerSettings, default_scheduler_id
from ponder.scheduler.http_errors import (
    ERROR_RESPONSES,
    error_response,
    install_error_handlers,
    openapi_without_422,
    unknown_model,
)
from ponder.scheduler.limits import RequestLimits
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.scheduler.openai_params import CHAT, COMPLETIONS, best_of_options, refused_parameter
from ponder.scheduler.planner import QueryRequest
from ponder.scheduler.request_bounds import Refusal, body_refusal
from ponder.scheduler.response import error_body
from ponder.scheduler.serving import serve_query
from ponder.scheduler.state import SchedulerState, start_state
from ponder.scheduler.stats import STEP_MIN_BRANCHES, is_load_step, publish_stats, snapshot

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0
SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}


def _query_responses(model: type) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": model,
            "description": "The answer; with `stream: true` server-sent events of chunks",
            # Before OpenAPI 3.2, an event stream's `schema` is one event's: a chunk as JSON in
            # `data` (`[DONE]` last).
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **ERROR_RESPONSES,
    }


def create_app(config: ServiceConfig, settings: SchedulerSettings | None = None) -> FastAPI:
    """The scheduler app of one ReasoningService; serve it with uvicorn."""
    settings = settings or SchedulerSettings(
        nats_url=config.nats_url, scheduler_id=default_scheduler_id()
    )
    metrics = SchedulerMetrics()
    gate = AccessGate(config.auth, config.name, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            provider = tracing.configure_tracing(
                "ponder-scheduler",
                {
                    "service.namespace": config.namespace,
                    "service.instance.id": settings.scheduler_id,
                    "ponder.service": config.name,
                },
            )
            if provider is not None:
                stack.callback(provider.shutdown)  # exports the spans still batched
            await stack.enter_async_context(gate.running())
            state = await start_state(config, settings, metrics, stack)
            app.state.ponder = state
            # A launch wakes the publisher, which pushes an update at once on a load step.
            load_changed = asyncio.Event()
            state.load.on_launched = load_changed.set
            step_branches = max(STEP_MIN_BRANCHES, config.slots_per_worker)
            async with asyncio.TaskGroup() as tasks:
                stats_task = tasks.create_task(
                    publish_stats(
                        state.nc,
                        state.subjects.stats,
                        lambda: snapshot(
                            settings.scheduler_id,
                            state.load,
                            state.window,
                            config.slo.target_latency_ms / 1000.0,
                            time.time(),
                            time.monotonic(),
                        ),
                        settings.stats_interval_seconds,
                        load_changed=load_changed,
                        is_step=lambda before, now: is_load_step(
                            before, now, min_branches=step_branches
                        ),
                    )
                )
                log.info(
                    "Started scheduler %s for %s/%s (model %s, NATS %s)",
                    settings.scheduler_id,
                    config.namespace,
                    config.name,
                    config.model,
                    settings.nats_url,
                )
                try:
                    yield
                finally:
                    stats_task.cancel()

    app = FastAPI(
        title="Ponder scheduler",
        version="1",
        summary="OpenAI-compatible API with test-time compute: options ride in `ponder`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # The last added runs first: keys and their limits, then the request's own bounds.
    app.add_middleware(RequestLimits, limits=config.api)
    app.add_middleware(Access, gate=gate)
    _add_routes(app, config)
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    return app


def unsupported(param: str, message: str) -> JSONResponse:
    """A 400 for a parameter Ponder cannot honour (`openai_params.PARAMETERS` says which)."""
    return error_response(
        400, error_body(message, "invalid_request_error", param=param, code="unsupported")
    )


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A request over one of the service's limits (`ponder.scheduler.request_bounds`)."""
    return error_response(
        refusal.status,
        error_body(
            refusal.message, "invalid_request_error", param=refusal.param, code=refusal.code
        ),
    )


def _new_query_id() -> str:
    return secrets.token_hex(8)


def _state(request: Request) -> SchedulerState:
    state: SchedulerState = request.app.state.ponder
    return state


StateDep = Annotated[SchedulerState, Depends(_state)]


def _add_routes(app: FastAPI, config: ServiceConfig) -> None:
    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses=_query_responses(ChatCompletionResponse),
        summary="Chat completion with test-time compute",
    )
    async def chat_completions(
        body: ChatCompletionRequest, request: Request, state: StateDep
    ) -> Response:
        if body.model != config.model:
            return unknown_model(body.model)
        refused = refused_parameter(vars(body), CHAT)
        if refused is not None:
            return unsupported(*refused)
        over = body_refusal(messages=len(body.messages), stop=body.stop_list, limits=config.api)
        if over is not None:
            return refusal_response(over)
        user_messages = [m for m in body.messages if m.role == "user"]
        query = QueryRequest(
            query_id=_new_query_id(),
            endpoint=Endpoint.CHAT,
            question=user_messages[-1].text if user_messages else body.messages[-1].text,
            prompt=None,
            messages=tuple(
                ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text)
                for m in body.messages
            ),
            ponder=body.ponder,
            max_tokens=body.branch_max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_list,
            seed=body.seed,
            n=body.n,
            engine=body.engine_sampling,
        )
        return await serve_query(
            state, request, query, body.stream, body.include_usage, body.ignore_eos
        )

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses=_query_responses(CompletionResponse),
        summary="Text completion with test-time compute",
    )
    async def completions(body: CompletionRequest, request: Request, state: StateDep) -> Response:
        if body.model != config.model:
            return unknown_model(body.model)
        prompt = body.prompt_text
        if prompt is None:
            return error_response(
                400,
                error_body(
                    "prompt: send one prompt per request (a list of several is not supported)",
                    "invalid_request_error",
                    param="prompt",
                    code="unsupported",
                ),
            )
        refused = refused_parameter(vars(body), COMPLETIONS)
        if refused is not None:
            return unsupported(*refused)
        over = body_refusal(messages=None, stop=body.stop_list, limits=config.api)
        if over is not None:
            return refusal_response(over)
        ponder = best_of_options(body.ponder, body.best_of)
        if isinstance(ponder, str):
            return error_response(
                400, error_body(ponder, "invalid_request_error", param="best_of", code="conflict")
            )
        query = QueryRequest(
            query_id=_new_query_id(),
            endpoint=Endpoint.COMPLETIONS,
            question=prompt,
            prompt=prompt,
            messages=None,
            ponder=ponder,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_list,
            seed=body.seed,
            n=body.n,
            engine=body.engine_sampling,
        )
        return await serve_query(
            state, request, query, body.stream, body.include_usage, body.ignore_eos
        )

    @app.get("/v1/models", response_model=ModelList, summary="The model this service serves")
    async def models(state: StateDep) -> ModelList:
        return ModelList(data=[ModelCard(id=config.model, created=state.started_at)])

    @app.get("/healthz", response_model=Health, summary="Liveness: the process serves HTTP")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "NATS or the stream is missing"}},
        summary="Readiness: NATS connected and the jobs stream present",
    )
    async def readyz(state: StateDep) -> Response:
        problem = await _readiness_problem(state)
        if problem is not None:
            return JSONResponse(Health(status="unready", detail=problem).model_dump(), 503)
        return JSONResponse(Health(status="ready").model_dump())

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    async def prometheus_metrics(state: StateDep) -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _readiness_problem(state: SchedulerState) -> str | None:
    if not state.nc.is_connected:
        return f"not connected to NATS at {state.settings.nats_url}"
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await state.dispatcher.js.stream_info(state.subjects.stream)
    except Exception as error:
        return f"stream {state.subjects.stream} unavailable: {error!r}"
    return None
