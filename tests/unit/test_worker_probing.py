"""Where a branch's answer settled, when to probe it, and how a probe reads and ends it
(ponder.workers.settling, .probing, the probe parts of .generation and .results)."""

from __future__ import annotations

from typing import Any

import pytest

from ponder.api.service_config import AnswerProbe, ExtractorKind
from ponder.api.wire import (
    AnswerReading,
    BranchJob,
    BranchStatus,
    ChatMessage,
    Endpoint,
    SamplingParams,
)
from ponder.workers.generation import (
    PROBE_STOPS,
    ChoiceOutput,
    Generation,
    apply_chunk,
    branch_request_body,
    probe_request_body,
)
from ponder.workers.probing import ProbeSchedule, probed_answer
from ponder.workers.results import branch_results
from ponder.workers.settling import reader_of, settled_tokens

LAST_NUMBER = AnswerReading(extractor=ExtractorKind.LAST_NUMBER)
READ = reader_of(LAST_NUMBER)
PROBE = AnswerProbe(every_tokens=16, window=2, cue=" The answer is", probe_tokens=6)


def streamed(*pieces: tuple[str, int]) -> ChoiceOutput:
    """A choice that streamed `(text, running token count)` pieces."""
    choice = ChoiceOutput()
    for text, tokens in pieces:
        choice.completion_tokens = tokens
        choice.append_text(text)
    return choice


@pytest.mark.parametrize(
    ("pieces", "settled"),
    [
        # The answer appears at token 4 and stays: 4 tokens until it, the rest after it.
        ([("3 + 4", 3), (" = 7", 4), (". This is", 7), (" a classic", 9), (" example.", 11)], 4),
        # It changes once more: only the last answer counts, from where it appeared.
        ([("2", 1), (" + 3 = 5", 5), (", no, 6", 8), (". Done", 10)], 8),
        # A number cut mid-stream ("1" of "12") is not yet the answer.
        ([("x = 1", 3), ("2", 4), (" apples", 5)], 4),
        # Appears in the very last piece.
        ([("think", 2), (" more", 4), (" 9", 5)], 5),
    ],
)
def test_settled_tokens_is_where_the_final_answer_appeared_and_stayed(
    pieces: list[tuple[str, int]], settled: int
) -> None:
    choice = streamed(*pieces)
    assert settled_tokens(choice.text, choice.checkpoints, READ) == settled
    # The coarse stride finds the same place as reading every prefix.
    assert settled_tokens(choice.text, choice.checkpoints, READ, stride=1) == settled


def test_settled_tokens_over_a_long_ramble_reads_few_prefixes() -> None:
    pieces = [("7 + 8 = 15", 6)] + [(" and so on", 6 + 3 * i) for i in range(1, 200)]
    choice = streamed(*pieces)
    reads = 0

    def counting(text: str) -> str | None:
        nonlocal reads
        reads += 1
        return READ(text)

    assert settled_tokens(choice.text, choice.checkpoints, counting) == 6
    assert reads < 200 // 8 + 8 + 3  # about tokens / stride + stride, not one per piece


def test_a_text_without_an_answer_has_no_settled_position() -> None:
    choice = streamed(("no numbers here", 3))
    assert settled_tokens(choice.text, choice.checkpoints, READ) is None
    assert settled_tokens("", [], READ) is None


def test_probes_come_due_every_so_many_tokens_one_at_a_time() -> None:
    schedule = ProbeSchedule(PROBE)
    assert not schedule.due(15)
    assert schedule.due(16)
    schedule.start(17)
    assert not schedule.due(40)  # one in flight
    assert not schedule.finish("7")
    assert schedule.due(40)  # 32 passed while the first ran: due at once
    schedule.start(40)
    assert schedule.next_at == 48
    assert schedule.finish("7")  # two in a row agree


@pytest.mark.parametrize(
    ("answers", "certain"),
    [
        (["7"], False),
        (["7", "7"], True),
        (["6", "7"], False),
        (["7", "6", "7"], False),
        (["6", "7", "7"], True),
        ([None, None], False),  # agreeing on no answer is not certainty
        (["7", None], False),
    ],
)
def test_certainty_needs_window_agreeing_answers_in_a_row(
    answers: list[str | None], certain: bool
) -> None:
    schedule = ProbeSchedule(PROBE)
    for answer in answers:
        schedule.in_flight = True
        schedule.finish(answer)
    assert schedule.certain is certain


def test_a_probe_reads_the_cue_and_its_continuation() -> None:
    assert probed_answer(PROBE, " 42", READ) == "42"
    is_reading = reader_of(AnswerReading(extractor=ExtractorKind.ANSWER_IS))
    assert probed_answer(PROBE, " 42", is_reading) == "42"
    assert probed_answer(PROBE, " unclear", is_reading) is None


def job(**overrides: Any) -> BranchJob:
    fields: dict[str, Any] = {
        "query_id": "q1",
        "job_id": "q1-j0",
        "branch_ids": ["q1-0", "q1-1"],
        "reply_subject": "inbox",
        "model": "smollm2",
        "prompt": "Q: 3+4? A:",
        "sampling": SamplingParams(max_tokens=64, seed=10),
        "deadline_at": 2_000_000_000.0,
        "answer": LAST_NUMBER,
        "probe": PROBE,
    }
    fields.update(overrides)
    return BranchJob(**fields)


def test_a_probe_needs_an_answer_reading() -> None:
    with pytest.raises(ValueError, match="answer probe needs an answer reading"):
        job(answer=None)


def test_a_probed_branch_runs_alone_with_its_own_seed() -> None:
    body = branch_request_body(job(), 1)
    assert body["n"] == 1 and body["seed"] == 11 and body["stream"] is True
    assert body["prompt"] == "Q: 3+4? A:"


def test_a_completion_probe_continues_prompt_text_and_cue_greedily() -> None:
    body = probe_request_body(job(), " 3 + 4 = 7.")
    assert body["prompt"] == "Q: 3+4? A: 3 + 4 = 7. The answer is"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 6 and body["n"] == 1
    assert body["stop"] == list(PROBE_STOPS)
    assert body["stream_options"]["continuous_usage_stats"] is True


def test_a_chat_probe_continues_the_assistant_turn() -> None:
    user = ChatMessage(role="user", content="3+4?")
    body = probe_request_body(job(prompt=None, messages=[user], endpoint=Endpoint.CHAT), "7")
    assert body["messages"][-1] == {"role": "assistant", "content": "7 The answer is"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    # A branch that continues an assistant message is probed inside that same message.
    started = ChatMessage(role="assistant", content="Let me see. ")
    body = probe_request_body(
        job(prompt=None, messages=[user, started], endpoint=Endpoint.CHAT), "3+4=7"
    )
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][-1]["content"] == "Let me see. 3+4=7 The answer is"


def test_an_early_exit_keeps_what_the_probe_saw_and_all_the_tokens() -> None:
    choice = streamed(("3 + 4 = 7", 5), (". This is", 8), (" nice", 10))
    choice.exit_with(len("3 + 4 = 7"), " The answer is 7")
    choice.probes, choice.probe_tokens = 2, 6
    assert choice.text == "3 + 4 = 7 The answer is 7"
    assert choice.finish_reason == "stop" and choice.early_exit
    assert choice.completion_tokens == 10 and choice.total_tokens == 16
    # The appended answer sits at the prefix's token count: the probe's tokens are its own.
    assert choice.checkpoints[-1] == (len(choice.text), 5)


def test_results_say_where_answers_settled_and_count_probe_tokens() -> None:
    the_job = job()
    generation = Generation.for_job(the_job)
    for text, tokens in [("3 + 4 = 7", 5), (". This is nice", 9)]:
        apply_chunk(
            generation,
            {
                "choices": [{"index": 0, "text": text, "finish_reason": None}],
                "usage": {"prompt_tokens": 6, "completion_tokens": tokens},
            },
            Endpoint.COMPLETIONS,
        )
    generation.choices[0].probes, generation.choices[0].probe_tokens = 1, 4
    results = branch_results(the_job, generation, BranchStatus.COMPLETED, worker_id="w").results
    first, second = results
    assert first.answer_tokens == 5 and first.completion_tokens == 13
    assert first.probes == 1 and first.probe_tokens == 4 and not first.early_exit
    assert second.answer_tokens is None  # generated nothing: no answer
    unread = branch_results(
        job(answer=None, probe=None), generation, BranchStatus.COMPLETED, worker_id="w"
    )
    assert unread.results[0].answer_tokens is None
