"""What a worker's spans say about a job and its engine requests (pure: attributes only).

A job's span (`process <jobs subject>`, CONSUMER) is the child of the scheduler's wave whose
context came in the message's headers; each request to vLLM is a CLIENT span under it
(`{operation} {model}`), whose context goes to vLLM in `traceparent`, so vLLM's own
`llm_request` span is its child. See `ponder.api.tracing`.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.util.types import AttributeValue

from ponder.api.tracing import OPERATIONS, GenAi, Messaging
from ponder.api.wire import BranchJob
from ponder.workers.generation import Generation
from ponder.workers.metrics import JobOutcome

PROVIDER = "vllm"
"""`gen_ai.provider.name` of the engine (not in the registry of well-known providers)."""


def job_attributes(job: BranchJob, delivered: int) -> dict[str, AttributeValue]:
    """The job span's attributes known when it is fetched."""
    return {
        Messaging.SYSTEM: "nats",
        Messaging.OPERATION: "process",
        Messaging.MESSAGE_ID: job.job_id,
        Messaging.DELIVERY_COUNT: delivered,
        GenAi.REQUEST_MODEL: job.model,
        "ponder.query_id": job.query_id,
        "ponder.job_id": job.job_id,
        "ponder.branches": len(job.branch_ids),
    }


def outcome_attributes(outcome: JobOutcome, generation: Generation) -> dict[str, AttributeValue]:
    """The job span's attributes once it ended: what became of it, what it generated."""
    return {
        "ponder.job.outcome": outcome.value,
        GenAi.INPUT_TOKENS: generation.prompt_tokens,
        GenAi.OUTPUT_TOKENS: generation.completion_tokens,
        "ponder.early_exits": sum(1 for choice in generation.choices if choice.early_exit),
    }


def request_attributes(job: BranchJob, body: dict[str, Any]) -> dict[str, AttributeValue]:
    """An engine request's attributes from its OpenAI body."""
    attributes: dict[str, AttributeValue] = {
        GenAi.OPERATION: OPERATIONS[job.endpoint],
        GenAi.PROVIDER: PROVIDER,
        GenAi.REQUEST_MODEL: job.model,
        GenAi.REQUEST_CHOICES: int(body.get("n", 1)),
    }
    for attribute, key in (
        (GenAi.REQUEST_MAX_TOKENS, "max_tokens"),
        (GenAi.REQUEST_TEMPERATURE, "temperature"),
        (GenAi.REQUEST_TOP_P, "top_p"),
    ):
        value = body.get(key)
        if isinstance(value, int | float):
            attributes[attribute] = value
    return attributes


def usage_attributes(generation: Generation) -> dict[str, AttributeValue]:
    """An engine request's attributes once it ended: its tokens and finish reasons."""
    reasons = sorted({c.finish_reason for c in generation.choices if c.finish_reason})
    return {
        GenAi.INPUT_TOKENS: generation.prompt_tokens,
        GenAi.OUTPUT_TOKENS: sum(choice.completion_tokens for choice in generation.choices),
        GenAi.RESPONSE_FINISH_REASONS: reasons,
    }
