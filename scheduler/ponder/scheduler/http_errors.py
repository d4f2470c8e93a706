"""How the scheduler's HTTP errors look: OpenAI's `{"error": {message, type, param, code}}`.

Request validation errors (malformed JSON, a wrong type, an unknown `ponder` option) are 400s
naming the field, never FastAPI's 422; so the OpenAPI document drops FastAPI's 422 responses
(`openapi_without_422`) and lists these instead (`ERROR_RESPONSES`).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ponder.scheduler.api_models import ErrorResponse
from ponder.scheduler.response import error_body

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed body or an option over a limit"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    408: {"model": ErrorResponse, "description": "The body did not arrive in time"},
    413: {"model": ErrorResponse, "description": "Body, or a job it makes, over the limit"},
    431: {"model": ErrorResponse, "description": "Too many or too large headers"},
    502: {"model": ErrorResponse, "description": "Every branch failed"},
    503: {"model": ErrorResponse, "description": "Jobs could not be queued"},
    504: {"model": ErrorResponse, "description": "No answer by the deadline"},
}


def json_response(content: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status)


def error_response(status: int, body: ErrorResponse) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status)


def unknown_model(model: str) -> JSONResponse:
    return error_response(
        404,
        error_body(
            f"The model `{model}` does not exist; this service serves one model",
            "invalid_request_error",
            param="model",
            code="model_not_found",
        ),
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            context = first.get("ctx") or {}
            detail = context.get("error", first.get("msg")) if isinstance(context, dict) else ""
            return error_response(
                400,
                error_body(
                    f"the request body is not valid JSON: {detail}",
                    "invalid_request_error",
                    code="invalid_json",
                ),
            )
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "extra_forbidden":
            # OpenAI refuses unknown parameters too; never take one and quietly do nothing.
            return error_response(
                400,
                error_body(
                    f"{param}: unknown parameter (README, 'OpenAI parameters', lists every "
                    "parameter Ponder takes and what it does with it)",
                    "invalid_request_error",
                    param=param,
                    code="unsupported_parameter",
                ),
            )
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}{more}"
        return error_response(
            400, error_body(message, "invalid_request_error", param=param, code="invalid_value")
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        incident = secrets.token_hex(6)
        log.exception("unhandled error %s serving %s", incident, request.url.path, exc_info=error)
        # What failed inside is for the log, not for the client.
        return error_response(
            500,
            error_body(
                f"internal error {incident} (the scheduler's log has its details)",
                "server_error",
                code="internal_error",
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(
            error.status_code,
            error_body(str(error.detail), "invalid_request_error", code=str(error.status_code)),
        )


def openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of exactly what is served: FastAPI's, minus its 422 responses
    (validation errors are 400s in OpenAI's shape here)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = schema
    return schema
