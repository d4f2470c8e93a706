"""A `partials` job's text so far, published to its scheduler while it generates.

`new_partials` (pure) says what each branch generated since the last partial; `publishing`
runs beside the engine call and publishes that every `PARTIAL_INTERVAL_SECONDS` until the call
ends, so a streamed answer reaches the scheduler token by token at a bounded message rate. The
job's final `BranchResults` follows on the same connection, so it arrives after every partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from ponder.api.wire import PARTIAL_INTERVAL_SECONDS, BranchJob, BranchPartial
from ponder.workers.generation import Generation

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]


def new_partials(job: BranchJob, generation: Generation, sent: list[int]) -> list[BranchPartial]:
    """The text each branch of `job` generated past `sent[i]` characters, one partial per
    branch with new text; advances `sent` to what the partials cover."""
    partials = []
    for index, (branch, choice) in enumerate(zip(job.branch_ids, generation.choices, strict=True)):
        if choice.text_length <= sent[index]:
            continue
        text = choice.text[sent[index] :]
        partials.append(
            BranchPartial(
                query_id=job.query_id,
                job_id=job.job_id,
                branch_id=branch,
                offset=sent[index],
                text=text,
            )
        )
        sent[index] = choice.text_length
    return partials


@contextlib.asynccontextmanager
async def publishing(
    job: BranchJob,
    generation: Generation,
    publish: Publish,
    interval_seconds: float = PARTIAL_INTERVAL_SECONDS,
) -> AsyncIterator[None]:
    """Publish `job`'s new text every `interval_seconds` while the block runs (nothing for a
    job without `partials`). The publishing task ends with the block, before the job's results
    go out."""
    if not job.partials:
        yield
        return
    sent = [0] * len(job.branch_ids)

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            for partial in new_partials(job, generation, sent):
                try:
                    await publish(job.reply_subject, partial.model_dump_json().encode())
                except Exception as error:  # liveness only: the results carry the whole text
                    log.debug("publishing a partial of %s failed: %r", partial.branch_id, error)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
