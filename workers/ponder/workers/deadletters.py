"""Keeping jobs that cannot run on the service's dead-letter subject (JetStream, so they stay)."""

from __future__ import annotations

from nats.js import JetStreamContext

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import DeadLetter

MAX_PAYLOAD_CHARS = 256 * 1024
"""Longer payloads are cut, so the dead letter (payload escaped into JSON) fits the stream's
largest message."""


def dead_letter(reason: str, subject: str, payload: bytes, worker_id: str) -> DeadLetter:
    """The dead letter of a message received on `subject` (binary is replaced, long is cut)."""
    text = payload.decode("utf-8", errors="replace")
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"... [{len(text) - MAX_PAYLOAD_CHARS} chars cut]"
    return DeadLetter(reason=reason, subject=subject, payload=text, worker_id=worker_id)


async def keep(
    js: JetStreamContext, subjects: ServiceSubjects, letter: DeadLetter, stream_sequence: int
) -> None:
    """Publish `letter` for the job at `stream_sequence`, once.

    The message id names the job's stream sequence, so a worker that retries (or a second
    worker handling the same job) does not keep the letter twice.
    """
    await js.publish(
        subjects.deadletter,
        letter.model_dump_json().encode(),
        headers={"Nats-Msg-Id": f"deadletter.{subjects.stream}.{stream_sequence}"},
    )
