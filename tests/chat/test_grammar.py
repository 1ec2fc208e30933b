"""The stream grammar validators reject broken streams with a precise message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rawsse.chat import GrammarError, check_anthropic_stream, check_openai_stream
from rawsse.sse import Event


def oa(choices: list[dict[str, Any]] | None = None, **fields: Any) -> Event:
    value: dict[str, Any] = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [] if choices is None else choices,
    }
    value.update(fields)
    return Event(json.dumps(value))


def ch(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


ROLE = oa([ch(role="assistant", content="")])
TEXT = oa([ch(content="hi")])
STOP = oa([ch(finish="stop")])
USAGE = oa(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
DONE = Event("[DONE]")
CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}


def test_openai_valid_streams_pass() -> None:
    check_openai_stream([ROLE, TEXT, STOP, DONE])
    check_openai_stream([ROLE, TEXT, STOP, USAGE, DONE])
    check_openai_stream([ROLE, Event('{"error": {"message": "boom"}}'), DONE])
    calls = [ROLE, oa([ch(tool_calls=[CALL])])]
    calls.append(oa([ch(tool_calls=[{"index": 0, "function": {"arguments": "{}"}}])]))
    check_openai_stream([*calls, oa([ch(finish="tool_calls")]), DONE])


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([TEXT, STOP, DONE], "event 1: choice 0's first delta has no role 'assistant'"),
        ([ROLE, ROLE, STOP, DONE], "event 2: choice 0 repeats the role"),
        ([ROLE, STOP, TEXT, DONE], "event 3: choice 0 has a delta after its finish_reason"),
        ([ROLE, STOP, STOP, DONE], "event 3: choice 0 has a delta after its finish_reason"),
        ([ROLE, TEXT, STOP], "event 4: the stream ended without data: [DONE]"),
        ([ROLE, TEXT, DONE], "event 4: choice 0 never got a finish_reason"),
        ([ROLE, STOP, DONE, DONE], "event 4: event after data: [DONE]"),
        ([ROLE, TEXT, USAGE, STOP, DONE], "event 3: usage chunk before choice 0 finished"),
        ([ROLE, STOP, USAGE, USAGE, DONE], "event 4: chunk after the usage chunk"),
        ([ROLE, STOP, oa(), DONE], "event 3: chunk with no choices and no usage"),
        (
            [ROLE, oa([ch(content="x")], usage={"prompt_tokens": 1}), STOP, DONE],
            "event 2: usage on a chunk with choices",
        ),
        (
            [
                ROLE,
                STOP,
                oa(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 4}),
                DONE,
            ],
            "event 3: total_tokens 4 is not 1 + 2",
        ),
        ([ROLE, oa([ch(finish="done")]), DONE], "event 2: choice 0 has an unknown finish_reason"),
        ([ROLE, oa([ch(), ch()]), DONE], "event 2: choice 0 twice in one chunk"),
        (
            [ROLE, oa([ch(finish="stop")], model="other"), DONE],
            "event 2: (id, created, model) changed",
        ),
        ([ROLE, oa([ch(finish="stop")], object="chat.completion"), DONE], "event 2: object is"),
        ([Event("nope"), DONE], "event 1: data is not JSON"),
        ([Event("[1]"), DONE], "event 1: data is not a JSON object"),
        ([Event("{}", event="delta")], "event 1: OpenAI chunks are unnamed"),
        ([ROLE, Event('{"error": {"message": "x"}}'), STOP, DONE], "only data: [DONE] may follow"),
        ([Event('{"error": "x"}'), DONE], "the error frame's error has no message"),
        ([DONE], "event 2: the stream had no choices"),
        (
            [ROLE, oa([ch(tool_calls=[{**CALL, "id": None}])]), DONE],
            "tool call 0 of choice 0 starts without an id",
        ),
        (
            [ROLE, oa([ch(tool_calls=[{**CALL, "type": None}])]), DONE],
            "tool call 0 of choice 0 starts without type 'function'",
        ),
        (
            [ROLE, oa([ch(tool_calls=[{**CALL, "function": {"arguments": ""}}])]), DONE],
            "tool call 0 of choice 0 starts without function.name",
        ),
        (
            [ROLE, oa([ch(tool_calls=[CALL])]), oa([ch(tool_calls=[{**CALL, "id": None}])]), DONE],
            "event 3: tool call 0 of choice 0 repeats 'type' after its first fragment",
        ),
        (
            [ROLE, oa([ch(tool_calls=[CALL])]), oa([ch(tool_calls=[CALL])]), DONE],
            "event 3: tool call 0 of choice 0 repeats 'id' after its first fragment",
        ),
        ([ROLE, oa([ch(content=5)]), DONE], "event 2: choice 0's delta.content is not a string"),
        ([oa([ch(role="assistant")], created="1"), DONE], "event 1: a chunk needs a string id"),
        ([oa({"index": 0}), DONE], "event 1: choices is not an array"),
        ([ROLE, STOP, oa(usage=[1]), DONE], "event 3: usage is not an object"),
        (
            [ROLE, STOP, oa(usage={"prompt_tokens": -1, "completion_tokens": 1}), DONE],
            "event 3: usage.prompt_tokens is not a token count: -1",
        ),
        ([oa(["x"]), DONE], "event 1: a choice is not an object"),
        ([oa([ch(-1, role="assistant")]), DONE], "event 1: choice index -1 is not a non-negative"),
        ([oa([{"index": 0, "delta": None}]), DONE], "event 1: choice 0 has no delta object"),
        ([ROLE, oa([ch(tool_calls=[])]), DONE], "choice 0's delta.tool_calls is not a non-empty"),
        ([ROLE, oa([ch(tool_calls=[{"id": "c"}])]), DONE], "a tool call fragment without an index"),
        (
            [ROLE, oa([ch(tool_calls=[{**CALL, "function": "f"}])]), DONE],
            "tool call 0 of choice 0: function is not an object",
        ),
        (
            [
                ROLE,
                oa([ch(tool_calls=[{**CALL, "function": {"name": "f", "arguments": {}}}])]),
                DONE,
            ],
            "tool call 0 of choice 0: arguments is not a string",
        ),
    ],
)
def test_openai_broken_streams(events: list[Event], message: str) -> None:
    with pytest.raises(GrammarError) as info:
        check_openai_stream(events)
    assert message in str(info.value)


def test_ids_must_count_up_by_one() -> None:
    numbered = [Event(e.data, id=str(i)) for i, e in enumerate([ROLE, STOP, DONE], start=5)]
    check_openai_stream(numbered, require_ids=True)
    skipped = [numbered[0], Event(STOP.data, id="7"), Event("[DONE]", id="8")]
    with pytest.raises(GrammarError, match="event 2: id 7 does not follow id 5"):
        check_openai_stream(skipped, require_ids=True)
    with pytest.raises(GrammarError, match="event 1: expected a numeric id: line, got None"):
        check_openai_stream([ROLE, STOP, DONE], require_ids=True)


def an(kind: str, **fields: Any) -> Event:
    return Event(json.dumps({"type": kind, **fields}), event=kind)


START = an(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 1, "output_tokens": 0},
    },
)
PING = an("ping")
TEXT_START = an("content_block_start", index=0, content_block={"type": "text", "text": ""})
TEXT_DELTA = an("content_block_delta", index=0, delta={"type": "text_delta", "text": "hi"})
STOP0 = an("content_block_stop", index=0)
MDELTA = an("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 1})
MSTOP = an("message_stop")
TOOL_START = an(
    "content_block_start",
    index=1,
    content_block={"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
)


def json_delta(text: str, index: int = 1) -> Event:
    return an(
        "content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": text}
    )


def test_anthropic_valid_streams_pass() -> None:
    check_anthropic_stream([START, PING, TEXT_START, TEXT_DELTA, STOP0, MDELTA, MSTOP])
    tool = [
        TOOL_START,
        json_delta('{"a":'),
        PING,
        json_delta("1}"),
        an("content_block_stop", index=1),
    ]
    check_anthropic_stream([START, TEXT_START, STOP0, *tool, MDELTA, MSTOP])
    error = an("error", error={"type": "overloaded_error", "message": "Overloaded"})
    check_anthropic_stream([START, TEXT_START, TEXT_DELTA, error])
    check_anthropic_stream([error])


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([TEXT_START, MDELTA, MSTOP], "event 1: 'content_block_start' before message_start"),
        ([START, START], "event 2: a second message_start"),
        ([START, TEXT_DELTA], "event 2: content_block_delta for block 0, which is not open"),
        ([START, TOOL_START], "event 2: content_block_start index 1, expected 0"),
        ([START, TEXT_START, TEXT_START], "event 3: content_block_start 0 while block 0 is open"),
        ([START, TEXT_START, MDELTA], "event 3: message_delta while block 0 is open"),
        ([START, TEXT_START, an("content_block_stop", index=1)], "block 1, which is not open"),
        (
            [
                START,
                TEXT_START,
                an("content_block_delta", index=0, delta={"type": "input_json_delta"}),
            ],
            "event 3: 'input_json_delta' delta in a 'text' block",
        ),
        ([START, MSTOP], "event 2: message_stop before message_delta"),
        ([START, MDELTA, MDELTA], "event 3: a second message_delta"),
        ([START, MDELTA, MSTOP, PING], "event 4: 'ping' after message_stop"),
        ([START, MDELTA], "event 3: the stream ended without message_stop"),
        (
            [START, an("message_delta", delta={"stop_reason": "done"}, usage={"output_tokens": 1})],
            "event 2: message_delta has no valid stop_reason",
        ),
        ([START, an("message_delta", delta={"stop_reason": "end_turn"})], "no usage.output_tokens"),
        ([Event(START.data, event="message_begin")], "event type 'message_begin' but data type"),
        ([START, an("error", error={"message": "x"})], "the error event's error has no type"),
        ([an("error", error={"type": "api_error", "message": "x"}), START], "after error"),
        (
            [
                START,
                TEXT_START,
                STOP0,
                TOOL_START,
                json_delta("[1]"),
                an("content_block_stop", index=1),
            ],
            "event 6: tool_use block 1's input is not a JSON object",
        ),
        (
            [
                START,
                TEXT_START,
                STOP0,
                TOOL_START,
                json_delta("{"),
                an("content_block_stop", index=1),
                MDELTA,
            ],
            "event 7: tool_use block 1's partial_json is not JSON "
            "(and the message was not cut by max_tokens)",
        ),
        (
            [
                START,
                an(
                    "content_block_start",
                    index=0,
                    content_block={"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
                ),
            ],
            "tool_use block 0 must start with input {}",
        ),
        (
            [START, an("message_start", message={})],
            "event 2: a second message_start",
        ),
        (
            [an("message_start", message={**json.loads(START.data)["message"], "content": [1]})],
            "message_start's message.content is [1], not []",
        ),
        (
            [START, an("error", error={"type": "api_error"})],
            "the error event's error has no message",
        ),
        ([START, an("content_block_pause", index=0)], "event 2: unknown event type"),
        ([an("message_start")], "event 1: message_start has no message object"),
        (
            [an("message_start", message={**json.loads(START.data)["message"], "id": None})],
            "message_start's message needs a string id and model",
        ),
        (
            [an("message_start", message={**json.loads(START.data)["message"], "usage": {}})],
            "message_start's message has no usage.input_tokens",
        ),
        ([START, an("content_block_stop")], "event 2: content_block_stop has no integer index"),
        ([START, MDELTA, TEXT_START], "event 3: content_block_start after message_delta"),
        ([START, an("content_block_start", index=0)], "block_start 0 has no content_block type"),
        (
            [
                START,
                an("content_block_start", index=0, content_block={"type": "tool_use", "input": {}}),
            ],
            "tool_use block 0 needs a string id and name",
        ),
        ([START, TEXT_START, an("content_block_delta", index=0)], "block 0 has no delta object"),
        (
            [
                START,
                TEXT_START,
                STOP0,
                TOOL_START,
                an("content_block_delta", index=1, delta={"type": "input_json_delta"}),
            ],
            "input_json_delta for block 1 has no partial_json string",
        ),
    ],
)
def test_anthropic_broken_streams(events: list[Event], message: str) -> None:
    with pytest.raises(GrammarError) as info:
        check_anthropic_stream(events)
    assert message in str(info.value)


def test_anthropic_tool_json_cut_by_max_tokens_is_legal() -> None:
    events = [
        an(
            "message_start",
            message={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "m",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 0},
            },
        ),
        an(
            "content_block_start",
            index=0,
            content_block={"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        ),
        an(
            "content_block_delta",
            index=0,
            delta={"type": "input_json_delta", "partial_json": '{"q": "ab'},
        ),
        an("content_block_stop", index=0),
        an(
            "message_delta",
            delta={"stop_reason": "max_tokens", "stop_sequence": None},
            usage={"output_tokens": 2},
        ),
        an("message_stop"),
    ]
    check_anthropic_stream(events)
