"""The Anthropic dialect: golden frames, the grammar, and the anthropic SDK's own types."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent

from rawsse.chat import (
    ANTHROPIC,
    ChatError,
    ChatRequest,
    Delta,
    Finish,
    ReasoningDelta,
    ToolCallDelta,
    Usage,
    check_anthropic_stream,
    parse_anthropic,
)
from tests.chat.dialect_support import CREATED, STREAM_ID, answer, ids, parse_frames, payloads, run

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def request(**fields: Any) -> ChatRequest:
    body = {
        "model": "echo",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "say hi"}],
        "stream": True,
    }
    body.update(fields)
    return parse_anthropic(body)


def check(frames: list[bytes]) -> list[Any]:
    """Grammar-check, validate each event with the SDK's types, accumulate the message with
    the SDK's own accumulator, and return the payloads (with the final message last)."""
    events = parse_frames(frames)
    check_anthropic_stream(events, require_ids=True)
    assert ids(events) == [str(i) for i in range(1, len(events) + 1)]
    data = payloads(events)
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event, value in zip(events, data, strict=True):
        assert event.event == value["type"]
        if value["type"] in ("ping", "error"):
            continue
        parsed = EVENTS.validate_python(value)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    return [*data, snapshot]


def test_text_stream_golden_bytes() -> None:
    frames, _ = run(ANTHROPIC, request(), ["Hi", " there", Finish("stop")])
    assert b"".join(frames).decode() == (
        "event: message_start\nid: 1\ndata: "
        '{"type":"message_start","message":{"id":"msg_s1","type":"message","role":"assistant",'
        '"model":"echo","content":[],"stop_reason":null,"stop_sequence":null,'
        '"usage":{"input_tokens":2,"output_tokens":0}}}\n\n'
        'event: ping\nid: 2\ndata: {"type":"ping"}\n\n'
        "event: content_block_start\nid: 3\ndata: "
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
        "event: content_block_delta\nid: 4\ndata: "
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        "event: content_block_delta\nid: 5\ndata: "
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}\n\n'
        'event: content_block_stop\nid: 6\ndata: {"type":"content_block_stop","index":0}\n\n'
        "event: message_delta\nid: 7\ndata: "
        '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        '"usage":{"output_tokens":2}}\n\n'
        'event: message_stop\nid: 8\ndata: {"type":"message_stop"}\n\n'
    )
    final = check(frames)[-1]
    assert final.content[0].text == "Hi there"
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 2)


def test_thinking_text_and_tool_use_blocks() -> None:
    deltas: list[str | Delta] = [
        ReasoningDelta("Let me"),
        ReasoningDelta(" think."),
        "Calling.",
        ToolCallDelta(0, name="get_weather"),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, id="toolu_given", name="get_time", arguments="{}"),
        Finish("tool_calls"),
    ]
    frames, _ = run(ANTHROPIC, request(), deltas)
    data = check(frames)
    shapes = [
        (
            value["type"],
            value.get("index"),
            (value.get("delta") or value.get("content_block") or {}),
        )
        for value in data[2:-3]
    ]
    assert shapes == [
        ("content_block_start", 0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "Let me"}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": " think."}),
        ("content_block_stop", 0, {}),
        ("content_block_start", 1, {"type": "text", "text": ""}),
        ("content_block_delta", 1, {"type": "text_delta", "text": "Calling."}),
        ("content_block_stop", 1, {}),
        (
            "content_block_start",
            2,
            {"type": "tool_use", "id": f"toolu_{STREAM_ID}_0", "name": "get_weather", "input": {}},
        ),
        ("content_block_delta", 2, {"type": "input_json_delta", "partial_json": '{"city": '}),
        ("content_block_delta", 2, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        ("content_block_stop", 2, {}),
        (
            "content_block_start",
            3,
            {"type": "tool_use", "id": "toolu_given", "name": "get_time", "input": {}},
        ),
        ("content_block_delta", 3, {"type": "input_json_delta", "partial_json": "{}"}),
        ("content_block_stop", 3, {}),
    ]
    assert data[-3]["delta"]["stop_reason"] == "tool_use"
    assert data[-3]["usage"] == {"output_tokens": 7}
    final = data[-1]
    assert final.content[2].input == {"city": "Paris"}
    body = answer(ANTHROPIC, request(), deltas)
    Message.model_validate(body)
    assert body["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "Calling."},
        {
            "type": "tool_use",
            "id": f"toolu_{STREAM_ID}_0",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
        {"type": "tool_use", "id": "toolu_given", "name": "get_time", "input": {}},
    ]
    assert body["stop_reason"] == "tool_use"


def test_max_tokens_stop_reason_and_backend_usage() -> None:
    deltas: list[str | Delta] = ["a", "b", Usage(5, 9), Finish("length")]
    frames, _ = run(ANTHROPIC, request(max_tokens=2), deltas)
    data = check(frames)
    assert data[-3]["delta"]["stop_reason"] == "max_tokens"
    assert data[-3]["usage"]["output_tokens"] == 9
    body = answer(ANTHROPIC, request(max_tokens=2), deltas)
    assert (body["stop_reason"], body["usage"]) == (
        "max_tokens",
        {"input_tokens": 5, "output_tokens": 9},
    )


def test_empty_answer_has_no_blocks() -> None:
    frames, _ = run(ANTHROPIC, request(), [])
    data = check(frames)
    assert [value["type"] for value in data[:-1]] == [
        "message_start",
        "ping",
        "message_delta",
        "message_stop",
    ]
    assert answer(ANTHROPIC, request(), [])["content"] == []


def test_error_mid_stream() -> None:
    stream = ANTHROPIC.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.start() + stream.feed("Hi")
    frames += stream.fail(ChatError(529, "Overloaded"))
    events = parse_frames(frames)
    check_anthropic_stream(events, require_ids=True)
    assert frames[-1] == (
        b'event: error\nid: 5\ndata: {"type":"error","error":'
        b'{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert stream.finish() == []


def test_interleaved_tool_calls_cannot_be_expressed() -> None:
    stream = ANTHROPIC.new_stream(request(), STREAM_ID, CREATED)
    stream.feed(ToolCallDelta(0, name="a"))
    stream.feed(ToolCallDelta(1, name="b"))
    with pytest.raises(ChatError, match="cannot interleave") as info:
        stream.feed(ToolCallDelta(0, arguments="{}"))
    assert info.value.status == 500


def test_non_object_tool_arguments_fail_the_body() -> None:
    with pytest.raises(ChatError, match="not a JSON object"):
        answer(ANTHROPIC, request(), [ToolCallDelta(0, name="a", arguments="[1]")])


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (529, "overloaded_error"),
        (418, "invalid_request_error"),
    ],
)
def test_error_body_types(status: int, kind: str) -> None:
    assert ANTHROPIC.error_body(ChatError(status, "m")) == {
        "type": "error",
        "error": {"type": kind, "message": "m"},
    }


def test_dialect_surface() -> None:
    assert ANTHROPIC.name == "anthropic"
    assert ANTHROPIC.heartbeat_frame == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert ANTHROPIC.api_key({"x-api-key": "k1"}) == "k1"
    assert ANTHROPIC.api_key({"authorization": "Bearer k2"}) == "k2"
    assert ANTHROPIC.api_key({}) is None


def test_tool_use_cut_at_max_tokens_gives_empty_input_not_an_error() -> None:
    deltas: list[Delta] = [ToolCallDelta(0, name="a", arguments='{"q": "hal'), Finish("length")]
    body = answer(ANTHROPIC, request(), deltas)
    message = Message.model_validate(body)
    assert message.stop_reason == "max_tokens"
    assert [(block.type, getattr(block, "input", None)) for block in message.content] == [
        ("tool_use", {})
    ]
    # Unfinished arguments without the cut are still the model's fault.
    with pytest.raises(ChatError, match="not JSON"):
        answer(ANTHROPIC, request(), [ToolCallDelta(0, name="a", arguments='{"q": "hal')])
