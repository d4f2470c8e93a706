"""Server-sent events of a streamed query, in OpenAI's chunk format (pure).

A stream is, in order (README, "Streaming"):
- chat only: a role chunk (`delta: {"role": "assistant", "content": ""}`);
- progress chunks: one choice with nothing in it (`delta: {}`, or `text: ""`) and a `ponder`
  object with an `event` (`wave_launched`, `branch_finished`, `leader`, `answer_reset`), which
  OpenAI clients read as a chunk that adds no text;
- content chunks, live or as soon as the answer is decided, in between;
- a chunk with `finish_reason` and the whole `ponder` object, then a usage chunk with empty
  `choices` when `stream_options.include_usage`, then `data: [DONE]`.
A query that ends without an answer after its stream began ends with OpenAI's in-stream error
event, `data: {"error": {...}}` (the body its JSON error would have had), then `[DONE]`; the
official client raises it as an `APIError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from ponder.api.wire import Endpoint
from ponder.scheduler.api_models import ErrorResponse, PonderInfo, Usage
from ponder.scheduler.progress import (
    AnswerReset,
    AnswerText,
    BranchFinished,
    Leader,
    ProgressEvent,
    WaveLaunched,
)

WORDS_PER_CHUNK = 8
_WORD = re.compile(r"\s*\S+\s*|\s+")

EVENT_NAMES: dict[type, str] = {
    WaveLaunched: "wave_launched",
    BranchFinished: "branch_finished",
    Leader: "leader",
    AnswerReset: "answer_reset",
}
"""The `ponder.event` of each progress event (`AnswerText` is content, not progress)."""

DONE = "data: [DONE]\n\n"


def text_pieces(text: str, words_per_chunk: int = WORDS_PER_CHUNK) -> list[str]:
    """`text` cut into chunks of a few words whose concatenation is exactly `text`."""
    words = _WORD.findall(text)
    return ["".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


def progress_object(event: ProgressEvent) -> dict[str, Any]:
    """The `ponder` object of a progress chunk: `event` and the event's fields."""
    name = EVENT_NAMES.get(type(event))
    if name is None:
        raise ValueError(f"{type(event).__name__} is content, not a progress event")
    return {"event": name, **asdict(event)}


def event(payload: dict[str, Any]) -> str:
    """One SSE event carrying `payload` as JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class ChunkRenderer:
    """The chunks of one streamed response (`id`, `object`, `created`, `model` on each)."""

    def __init__(self, endpoint: Endpoint, response_id: str, model: str, created: int) -> None:
        self.chat = endpoint is Endpoint.CHAT
        self.base: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": created,
            "model": model,
        }

    def opening(self) -> list[str]:
        """What a stream starts with: the role chunk of a chat stream, nothing otherwise."""
        return [self._chunk(self._choice("", None, role=True))] if self.chat else []

    def render(self, item: ProgressEvent) -> list[str]:
        """The chunks of one runner event: content for answer text, else a progress chunk."""
        if isinstance(item, AnswerText):
            return self.text(item.text, split=False)
        return [self._chunk(self._choice(None, None), ponder=progress_object(item))]

    def text(self, text: str, *, split: bool = True) -> list[str]:
        """Content chunks of `text`: as it came (live tokens), or cut into a few words each."""
        pieces = text_pieces(text) if split else [text] if text else []
        return [self._chunk(self._choice(piece, None)) for piece in pieces]

    def closing(self, finish_reason: str, ponder: PonderInfo, usage: Usage | None) -> list[str]:
        """The finishing chunk with the whole `ponder` object, the usage chunk when asked for,
        and `[DONE]`."""
        chunks = [
            self._chunk(
                self._choice(None if self.chat else "", finish_reason),
                ponder=ponder.model_dump(mode="json"),
            )
        ]
        if usage is not None:
            chunks.append(event({**self.base, "choices": [], "usage": usage.model_dump()}))
        return [*chunks, DONE]

    def error(self, body: ErrorResponse) -> list[str]:
        """OpenAI's in-stream error event (the query ended without an answer), and `[DONE]`."""
        return [event(body.model_dump(mode="json")), DONE]

    def _chunk(self, choice: dict[str, Any], ponder: dict[str, Any] | None = None) -> str:
        payload: dict[str, Any] = {**self.base, "choices": [choice]}
        if ponder is not None:
            payload["ponder"] = ponder
        return event(payload)

    def _choice(
        self, text: str | None, finish_reason: str | None, role: bool = False
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}


def whole_stream(renderer: ChunkRenderer, text: str, finish: list[str]) -> Iterator[str]:
    """A stream with nothing live: the opening, `text` in pieces, then `finish`."""
    yield from renderer.opening()
    yield from renderer.text(text)
    yield from finish
