"""Streaming that streams: progress events, the answer's text as it is decided, the chunks they
render to (which the official client's types accept), and the partial text workers send."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError

from ponder.api.service_config import AnswerProbe, BudgetForcingConfig
from ponder.api.wire import (
    INBOX_MESSAGE,
    BranchJob,
    BranchPartial,
    BranchResult,
    BranchResults,
    BranchStatus,
    Endpoint,
    SamplingParams,
)
from ponder.scheduler.api_models import Usage
from ponder.scheduler.dispatch import QueryCollector
from ponder.scheduler.jobs import JobContext, streams_text
from ponder.scheduler.progress import (
    AnswerReset,
    AnswerStream,
    AnswerText,
    BranchFinished,
    Leader,
    ProgressEvent,
    WaveLaunched,
    leader_changed,
)
from ponder.scheduler.response import error_body, ponder_info
from ponder.scheduler.sse import ChunkRenderer, progress_object
from ponder.scheduler.strategies.base import BranchRequest
from ponder.scheduler.strategies.budget_forcing import BudgetForcing
from ponder.scheduler.strategies.refine import Refine
from ponder.scheduler.strategies.single import Single
from ponder.workers.generation import ChoiceOutput, Generation
from ponder.workers.partials import new_partials
from tests.unit.test_runner_response import QUERY, outcome

# --- AnswerStream: what was sent is the answer's beginning, or a reset says otherwise ---------

Step = tuple[str, str, str]  # (call, branch or "", text)


@pytest.mark.parametrize(
    ("steps", "events"),
    [
        # The single branch: its text as it comes, the rest of the answer at the end.
        (
            [
                ("start", "b0", ""),
                ("text", "b0", "12+"),
                ("text", "b0", "34"),
                ("finish", "", "12+34=46"),
            ],
            [AnswerText("12+"), AnswerText("34"), AnswerText("=46")],
        ),
        # Budget forcing's forced answer: the chain so far at once, then the answer's tokens.
        (
            [
                ("start", "b3", "think\nFinal Answer:"),
                ("text", "b3", " 7"),
                ("finish", "", "think\nFinal Answer: 7"),
            ],
            [AnswerText("think\nFinal Answer:"), AnswerText(" 7")],
        ),
        # A vote: nothing live, the whole answer when it stops.
        ([("finish", "", "#41")], [AnswerText("#41")]),
        # Text of another branch than the live one is not the answer's.
        ([("start", "b0", ""), ("text", "b1", "x"), ("finish", "", "y")], [AnswerText("y")]),
        # Nothing more to send when the text came whole.
        ([("start", "b0", ""), ("text", "b0", "ab"), ("finish", "", "ab")], [AnswerText("ab")]),
        # The streamed branch failed and the answer is other text: one reset with all of it.
        (
            [("start", "b0", ""), ("text", "b0", "abc"), ("finish", "", "xyz")],
            [AnswerText("abc"), AnswerReset("xyz")],
        ),
        # A retry whose continuation does not extend what was sent goes live no more.
        (
            [
                ("start", "b0", ""),
                ("text", "b0", "ab"),
                ("start", "b1", ""),
                ("text", "b1", "zz"),
                ("finish", "", "zz"),
            ],
            [AnswerText("ab"), AnswerReset("zz")],
        ),
    ],
)
def test_answer_stream_sends_a_prefix_of_the_answer_or_resets(
    steps: list[Step], events: list[ProgressEvent]
) -> None:
    stream = AnswerStream()
    sent: list[ProgressEvent] = []
    for call, branch, text in steps:
        if call == "start":
            sent += stream.start(branch, text)
        elif call == "text":
            sent += stream.on_text(branch, text)
        else:
            sent += stream.finish(text)
    assert sent == events
    # What a client concatenates (after the last reset) is the answer.
    last = max((i for i, e in enumerate(sent) if isinstance(e, AnswerReset)), default=-1)
    tail = sent[last:] if last >= 0 else sent
    assert "".join(e.text for e in tail if isinstance(e, AnswerText | AnswerReset)) == steps[-1][2]


@pytest.mark.parametrize(
    ("previous", "current", "news"),
    [
        (None, Leader(None, None), False),
        (None, Leader("41", None, {"41": 1.0}), True),
        (Leader("41", None, {"41": 1.0}), Leader("41", None, {"41": 2.0}), False),
        (Leader("41", 0.5), Leader("41", 0.75), True),
        (Leader("41", 0.5), Leader("42", 0.5), True),
    ],
)
def test_a_leader_is_news_when_its_answer_or_confidence_changes(
    previous: Leader | None, current: Leader, news: bool
) -> None:
    assert leader_changed(previous, current) is news


# --- chunks ----------------------------------------------------------------------------------

FINISHED = BranchFinished("q1-0", "completed", "41", None, 12, finished=1, launched=4)
PROGRESS: list[tuple[ProgressEvent, dict[str, Any]]] = [
    (WaveLaunched(1, 4, 4), {"event": "wave_launched", "wave": 1, "branches": 4, "launched": 4}),
    (
        FINISHED,
        {
            "event": "branch_finished",
            "branch_id": "q1-0",
            "status": "completed",
            "answer": "41",
            "score": None,
            "completion_tokens": 12,
            "finished": 1,
            "launched": 4,
        },
    ),
    (
        Leader("41", 0.75, {"41": 3.0, "40": 1.0}),
        {"event": "leader", "answer": "41", "confidence": 0.75, "votes": {"41": 3.0, "40": 1.0}},
    ),
    (AnswerReset("#41"), {"event": "answer_reset", "text": "#41"}),
]


def decoded(lines: list[str]) -> list[dict[str, Any]]:
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    return [json.loads(line[len("data: ") :]) for line in lines if line != "data: [DONE]\n\n"]


@pytest.mark.parametrize(("item", "ponder"), PROGRESS)
def test_progress_chunks_carry_the_event_and_no_text(
    item: ProgressEvent, ponder: dict[str, Any]
) -> None:
    chat = ChunkRenderer(Endpoint.CHAT, "chatcmpl-q1", "tiny", 1)
    (chunk,) = decoded(chat.render(item))
    assert chunk["ponder"] == ponder
    parsed = ChatCompletionChunk.model_validate(chunk)
    # What a plain client reads: one choice that adds nothing, not finished.
    assert [(c.delta.content, c.delta.role, c.finish_reason) for c in parsed.choices] == [
        (None, None, None)
    ]
    completions = ChunkRenderer(Endpoint.COMPLETIONS, "cmpl-q1", "tiny", 1)
    (chunk,) = decoded(completions.render(item))
    assert chunk["ponder"] == ponder
    assert [(c["text"], c["finish_reason"]) for c in chunk["choices"]] == [("", None)]
    assert chunk["object"] == "text_completion"


def test_answer_text_is_content_as_it_came() -> None:
    chat = ChunkRenderer(Endpoint.CHAT, "chatcmpl-q1", "tiny", 1)
    (chunk,) = decoded(chat.render(AnswerText("12+34=46 and more words than eight in one piece")))
    parsed = ChatCompletionChunk.model_validate(chunk)
    assert parsed.choices[0].delta.content == "12+34=46 and more words than eight in one piece"
    assert "ponder" not in chunk
    with pytest.raises(ValueError, match="content"):
        progress_object(AnswerText("x"))


def test_a_chat_stream_opens_with_the_role_and_a_completion_stream_with_nothing() -> None:
    (role,) = decoded(ChunkRenderer(Endpoint.CHAT, "chatcmpl-q1", "tiny", 1).opening())
    assert ChatCompletionChunk.model_validate(role).choices[0].delta.role == "assistant"
    assert ChunkRenderer(Endpoint.COMPLETIONS, "cmpl-q1", "tiny", 1).opening() == []


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_closes_with_finish_reason_ponder_usage_and_done(include_usage: bool) -> None:
    renderer = ChunkRenderer(Endpoint.COMPLETIONS, "cmpl-q1", "tiny", 1)
    info = ponder_info(outcome())
    usage = Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8)
    lines = renderer.closing("length", info, usage if include_usage else None)
    assert lines[-1] == "data: [DONE]\n\n"
    chunks = decoded(lines)
    finishing = Completion.model_validate(chunks[0])
    assert finishing.choices[0].finish_reason == "length"
    assert (finishing.model_extra or {})["ponder"]["query_id"] == "q1"
    if include_usage:
        assert chunks[1]["choices"] == [] and chunks[1]["usage"]["total_tokens"] == 8
    else:
        assert len(chunks) == 1


def test_a_query_without_an_answer_ends_its_stream_with_openais_error_event() -> None:
    renderer = ChunkRenderer(Endpoint.CHAT, "chatcmpl-q1", "tiny", 1)
    body = error_body("query q1: no branch finished", "server_error", code="deadline_exceeded")
    lines = renderer.error(body)
    assert lines[-1] == "data: [DONE]\n\n"
    (event,) = decoded(lines)
    assert event == {
        "error": {
            "message": "query q1: no branch finished",
            "type": "server_error",
            "param": None,
            "code": "deadline_exceeded",
        }
    }


# --- which branches stream, and the partial text on the wire -----------------------------------


def context(partials: bool, probe: AnswerProbe | None = None) -> JobContext:
    query = QUERY if probe is None else type(QUERY)(**{**QUERY.__dict__, "probe": probe})
    return JobContext(
        query=query,
        model="tiny",
        reply_subject="ponder.ns.svc.results.s1",
        deadline_at=1e12,
        branches_per_job=4,
        partials=partials,
    )


@pytest.mark.parametrize(
    ("partials", "request_", "probe", "streams"),
    [
        (True, BranchRequest(n=1, max_tokens=8, streams_answer=True), None, True),
        (False, BranchRequest(n=1, max_tokens=8, streams_answer=True), None, False),
        (True, BranchRequest(n=1, max_tokens=8), None, False),
        (True, BranchRequest(n=4, max_tokens=8, streams_answer=True), None, False),
        (True, BranchRequest(n=1, max_tokens=8, streams_answer=True), AnswerProbe(), False),
    ],
)
def test_only_a_streaming_clients_answer_branch_sends_its_text(
    partials: bool, request_: BranchRequest, probe: AnswerProbe | None, streams: bool
) -> None:
    assert streams_text(context(partials, probe), request_) is streams


def test_the_branches_whose_text_is_the_answer_say_so() -> None:
    assert [r.streams_answer for r in Single(QUERY).begin()] == [True]
    forcing = BudgetForcing(
        replace_query(budget_forcing=BudgetForcingConfig(min_thinking_tokens=0))
    )
    (think,) = forcing.begin()
    assert not think.streams_answer
    assert streams(forcing._force("chain so far"))
    refine = Refine(replace_query(has_verifier=False))
    (draft,) = refine.begin()
    assert not draft.streams_answer
    assert streams(refine._launch("revise", "prompt", score=True))
    verified = Refine(replace_query(has_verifier=True))
    assert not streams(verified._launch("revise", "prompt", score=True))


def streams(request: BranchRequest | None) -> bool:
    assert request is not None
    return request.streams_answer


def replace_query(**changes: Any) -> Any:
    return type(QUERY)(**{**QUERY.__dict__, **changes})


JOB = BranchJob(
    query_id="q1",
    job_id="q1-j0",
    branch_ids=["q1-0", "q1-1"],
    reply_subject="ponder.ns.svc.results.s1",
    model="tiny",
    prompt="Q:1+2 A:",
    sampling=SamplingParams(max_tokens=8),
    deadline_at=1e12,
    partials=True,
)


def test_partials_carry_each_branchs_new_text_from_its_offset() -> None:
    generation = Generation([ChoiceOutput(), ChoiceOutput()])
    sent = [0, 0]
    assert new_partials(JOB, generation, sent) == []
    generation.choices[0].append_text("1+")
    generation.choices[0].append_text("2")
    first = new_partials(JOB, generation, sent)
    assert [(p.branch_id, p.offset, p.text) for p in first] == [("q1-0", 0, "1+2")]
    generation.choices[0].append_text("=3")
    generation.choices[1].append_text("#3")
    second = new_partials(JOB, generation, sent)
    assert [(p.branch_id, p.offset, p.text) for p in second] == [
        ("q1-0", 3, "=3"),
        ("q1-1", 0, "#3"),
    ]
    assert sent == [5, 2]


def test_the_inbox_tells_partials_from_results_of_any_worker() -> None:
    partial = BranchPartial(query_id="q1", job_id="q1-j0", branch_id="q1-0", offset=0, text="1")
    assert INBOX_MESSAGE.validate_json(partial.model_dump_json()) == partial
    result = BranchResult(
        query_id="q1", job_id="q1-j0", branch_id="q1-0", status=BranchStatus.COMPLETED
    )
    results = BranchResults(query_id="q1", job_id="q1-j0", results=[result])
    # A worker older than partials sends results without a `kind`: still results.
    assert "kind" not in json.loads(results.model_dump_json())
    assert INBOX_MESSAGE.validate_json(results.model_dump_json()) == results
    with pytest.raises(ValidationError):
        INBOX_MESSAGE.validate_json(b'{"kind": "partial", "query_id": "q1"}')


def test_a_probed_job_sends_no_partials() -> None:
    with pytest.raises(ValidationError, match="partial"):
        BranchJob(**{**JOB.model_dump(), "probe": AnswerProbe(), "answer": {"extractor": "auto"}})


async def test_the_collector_hands_on_a_watched_branchs_text_in_order_until_a_gap() -> None:
    collector = QueryCollector("q1")
    collector.expect(["q1-0", "q1-1"])
    seen: list[str] = []
    collector.watch_text("q1-0", seen.append)

    def partial(branch: str, offset: int, text: str) -> BranchPartial:
        return BranchPartial(
            query_id="q1", job_id="q1-j0", branch_id=branch, offset=offset, text=text
        )

    collector.offer_partial(partial("q1-0", 0, "ab"))
    collector.offer_partial(partial("q1-1", 0, "unwatched"))
    collector.offer_partial(partial("q1-0", 2, "c"))
    collector.offer_partial(partial("q1-0", 9, "after a lost one"))
    collector.offer_partial(partial("q1-0", 3, "d"))  # the watch ended at the gap
    assert seen == ["ab", "c"]
    collector.watch_text("q1-1", seen.append)
    collector.offer(
        BranchResult(query_id="q1", job_id="q1-j0", branch_id="q1-1", status=BranchStatus.COMPLETED)
    )
    collector.offer_partial(partial("q1-1", 0, "after its result"))
    assert seen == ["ab", "c"]
