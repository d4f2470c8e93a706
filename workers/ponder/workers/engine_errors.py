"""How an engine call can fail, as the worker's pure decisions need to tell the cases apart.

Kept apart from `engine.py` (aiohttp) so that `outcomes.py` decides a job's outcome without
importing any I/O library.
"""

from __future__ import annotations

import json


class EngineUnavailable(Exception):
    """The engine could not run the job now (down, overloaded, 5xx): another try may succeed."""


class EngineRejected(Exception):
    """The engine refused the job itself (4xx: unknown model, prompt too long): retrying is
    pointless.

    `status` is the engine's HTTP status when it gave one; `reason` is the engine's own message
    (e.g. vLLM's "This model's maximum context length is 1024 tokens. ..."), without the
    worker's wording around it.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason if reason is not None else message


def engine_error_message(body: str) -> str:
    """The message of an OpenAI-style error body (`{"error": {"message": ...}}` or vLLM's older
    `{"object": "error", "message": ...}`), else the body itself, stripped."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(parsed, dict):
        error = parsed.get("error")
        details = error if isinstance(error, dict) else parsed
        message = details.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()
    return body.strip()
