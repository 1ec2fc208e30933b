"""The ChatGPT-web ``delta`` dialect and the generic envelope: golden frames."""

from __future__ import annotations

from typing import Any

import pytest

from rawsse.chat import (
    CHATGPT_WEB,
    ENVELOPE,
    ChatError,
    ChatRequest,
    Citations,
    Finish,
    ReasoningDelta,
    ToolCallDelta,
    parse_openai,
)
from tests.chat.dialect_support import CREATED, STREAM_ID, answer, ids, parse_frames, payloads, run


def request(**fields: Any) -> ChatRequest:
    body = {"model": "echo", "messages": [{"role": "user", "content": "say hi"}], "stream": True}
    body.update(fields)
    return parse_openai(body)


def test_chatgpt_web_golden_bytes() -> None:
    deltas: list[str | Finish] = ["Hi", " there", Finish("length")]
    frames, _ = run(CHATGPT_WEB, request(), deltas)
    assert b"".join(frames).decode() == (
        'event: delta_encoding\nid: 1\ndata: "v1"\n\n'
        'event: delta\nid: 2\ndata: {"p":"","o":"add","v":{"message":{"id":"s1",'
        '"author":{"role":"assistant"},"create_time":1700000000,'
        '"content":{"content_type":"text","parts":[""]},"status":"in_progress","end_turn":false,'
        '"metadata":{"model_slug":"echo"}},"conversation_id":"conv-s1"},"c":0}\n\n'
        'event: delta\nid: 3\ndata: {"p":"/message/content/parts/0","o":"append","v":"Hi"}\n\n'
        'event: delta\nid: 4\ndata: {"v":" there"}\n\n'
        'event: delta\nid: 5\ndata: {"p":"","o":"patch","v":['
        '{"p":"/message/status","o":"replace","v":"finished_successfully"},'
        '{"p":"/message/end_turn","o":"replace","v":true},'
        '{"p":"/message/metadata","o":"append","v":{"is_complete":true,'
        '"finish_details":{"type":"max_tokens"}}}]}\n\n'
        'id: 6\ndata: {"type":"message_stream_complete","conversation_id":"conv-s1"}\n\n'
        "id: 7\ndata: [DONE]\n\n"
    )
    parse_frames(frames)
    body = answer(CHATGPT_WEB, request(), deltas)
    assert body["message"]["content"]["parts"] == ["Hi there"]
    assert body["message"]["metadata"]["finish_details"] == {"type": "max_tokens"}


def test_chatgpt_web_drops_reasoning_and_tools_but_counts_them() -> None:
    deltas = [ReasoningDelta("hm"), "A", ToolCallDelta(0, name="f"), "B"]
    frames, stream = run(CHATGPT_WEB, request(), deltas)
    data = payloads(parse_frames(frames))
    assert data[2:4] == [{"p": "/message/content/parts/0", "o": "append", "v": "A"}, {"v": "B"}]
    assert stream.transcript.completion_tokens == 4


def test_chatgpt_web_error_then_done() -> None:
    stream = CHATGPT_WEB.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.feed("x") + stream.fail(ChatError.server_error())
    assert payloads(parse_frames(frames))[-2:] == [
        {"error": "The model backend failed.", "conversation_id": "conv-s1"},
        "[DONE]",
    ]


@pytest.mark.parametrize("dialect", [CHATGPT_WEB, ENVELOPE])
def test_single_answer_dialects_refuse_n_above_1(dialect: Any) -> None:
    with pytest.raises(ChatError) as info:
        dialect.new_stream(request(n=2), STREAM_ID, CREATED)
    assert (info.value.status, info.value.param) == (400, "n")


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    value = {
        "id": STREAM_ID,
        "type": kind,
        "model": "echo",
        "text": None,
        "progress": 0,
        "context": None,
        "metadata": None,
    }
    value.update(fields)
    return value


def test_envelope_frames() -> None:
    deltas = [
        "Hi",
        ReasoningDelta("hm"),
        Citations(["https://a.example/"]),
        ToolCallDelta(0, name="f", arguments="{"),
        ToolCallDelta(0, arguments="}"),
        " there",
    ]
    frames, stream = run(ENVELOPE, request(max_tokens=9), deltas)
    events = parse_frames(frames)
    assert {event.event for event in events} == {"message"}
    assert b"".join(frames).startswith(b"event: message\nid: 1\ndata: {")
    assert ids(events) == [str(i) for i in range(1, 9)]
    usage = {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    call = f"call_{STREAM_ID}_0_0"
    assert payloads(events) == [
        envelope(
            "meta",
            context={"prompt_tokens": 2, "max_tokens": 9},
            metadata={"created": CREATED},
        ),
        envelope("text", text="Hi", progress=1),
        envelope("meta", progress=2, metadata={"reasoning": "hm"}),
        envelope("meta", progress=2, metadata={"citations": ["https://a.example/"]}),
        envelope(
            "meta",
            progress=3,
            metadata={"tool_call": {"id": call, "name": "f", "arguments": "{"}},
        ),
        envelope(
            "meta",
            progress=4,
            metadata={"tool_call": {"id": None, "name": None, "arguments": "}"}},
        ),
        envelope("text", text=" there", progress=5),
        envelope(
            "done",
            text="Hi there",
            progress=5,
            context={"usage": usage},
            metadata={"finish_reason": "tool_calls"},
        ),
    ]
    assert stream.response_body() == payloads(events)[-1]


def test_envelope_error_is_a_done_frame() -> None:
    stream = ENVELOPE.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.start() + stream.fail(ChatError(429, "Slow down.", code="rate_limited"))
    assert payloads(parse_frames(frames))[-1] == envelope(
        "done",
        metadata={
            "finish_reason": "error",
            "error": {
                "status": 429,
                "message": "Slow down.",
                "type": "rate_limit_error",
                "code": "rate_limited",
            },
        },
    )
