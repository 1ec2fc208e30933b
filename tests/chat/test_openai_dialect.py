"""The OpenAI dialect: golden frames, the grammar, and the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from rawsse.chat import (
    OPENAI,
    ChatError,
    ChatRequest,
    Citations,
    Delta,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    check_openai_stream,
    parse_openai,
)
from tests.chat.dialect_support import CREATED, STREAM_ID, answer, ids, parse_frames, payloads, run

HEAD = f'"id":"chatcmpl-{STREAM_ID}","object":"chat.completion.chunk","created":{CREATED},'


def request(**fields: Any) -> ChatRequest:
    body = {"model": "echo", "messages": [{"role": "user", "content": "say hi"}], "stream": True}
    body.update(fields)
    return parse_openai(body)


def check(frames: list[bytes], req: ChatRequest) -> list[Any]:
    """Grammar-check the frames, validate every chunk with the SDK, and return the payloads.

    Also accumulates the chunks with the SDK's own ChatCompletionStreamState.
    """
    events = parse_frames(frames)
    check_openai_stream(events, require_ids=True)
    assert ids(events) == [str(i) for i in range(1, len(events) + 1)]
    data = payloads(events)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for value in data[:-1]:
        chunk = ChatCompletionChunk.model_validate(value)
        if chunk.choices:  # the SDK accumulator wants choices (the usage chunk has none)
            state.handle_chunk(chunk)
    assert data[-1] == "[DONE]"
    return data


def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": f"chatcmpl-{STREAM_ID}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "echo",
        "system_fingerprint": "fp_rawsse",
        "choices": choices,
    }
    value.update(extra)
    return value


def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def test_text_stream_golden_bytes() -> None:
    frames, _ = run(OPENAI, request(), ["Hi", " there", Finish("stop")])
    tail = ',"logprobs":null,"finish_reason":'
    fp = '"model":"echo","system_fingerprint":"fp_rawsse"'
    assert b"".join(frames).decode() == (
        f'id: 1\ndata: {{{HEAD}{fp},"choices":[{{"index":0,'
        f'"delta":{{"role":"assistant","content":""}}{tail}null}}]}}\n\n'
        f'id: 2\ndata: {{{HEAD}{fp},"choices":[{{"index":0,"delta":{{"content":"Hi"}}{tail}null}}]}}\n\n'
        f'id: 3\ndata: {{{HEAD}{fp},"choices":[{{"index":0,"delta":{{"content":" there"}}{tail}null}}]}}\n\n'
        f'id: 4\ndata: {{{HEAD}{fp},"choices":[{{"index":0,"delta":{{}}{tail}"stop"}}]}}\n\n'
        "id: 5\ndata: [DONE]\n\n"
    )
    check(frames, request())


def test_plain_str_and_text_delta_are_the_same() -> None:
    plain, _ = run(OPENAI, request(), ["a", "b"])
    rich, _ = run(OPENAI, request(), [TextDelta("a"), TextDelta("b", 0)])
    assert plain == rich


def test_usage_on_and_off() -> None:
    req = request(stream_options={"include_usage": True})
    frames, stream = run(OPENAI, req, ["Hi", " there"])
    data = check(frames, req)
    assert data == [
        chunk([choice(0, {"role": "assistant", "content": ""})], usage=None),
        chunk([choice(0, {"content": "Hi"})], usage=None),
        chunk([choice(0, {"content": " there"})], usage=None),
        chunk([choice(0, {}, "stop")], usage=None),
        # "say hi" is two words; two pieces were yielded.
        chunk([], usage={"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}),
        "[DONE]",
    ]
    assert stream.last_event_id == 6
    frames, _ = run(OPENAI, request(), ["Hi"])
    assert all("usage" not in value for value in check(frames, request())[:-1])


def test_backend_usage_replaces_the_count() -> None:
    req = request(stream_options={"include_usage": True})
    deltas: list[str | Delta] = ["Hi", Usage(prompt_tokens=10, completion_tokens=7)]
    frames, _ = run(OPENAI, req, deltas)
    assert check(frames, req)[-2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
    }
    assert answer(OPENAI, req, deltas)["usage"]["completion_tokens"] == 7


def test_tool_calls_name_only_in_first_fragment() -> None:
    deltas: list[str | Delta] = [
        ToolCallDelta(0, id="call_a", name="get_weather", arguments=""),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, name="get_time"),  # no id: the dialect makes one
        ToolCallDelta(1, arguments="{}"),
        Finish("tool_calls"),
    ]
    frames, _ = run(OPENAI, request(), deltas)
    data = check(frames, request())
    assert [value["choices"][0]["delta"] for value in data[1:6]] == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": f"call_{STREAM_ID}_0_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
    ]
    assert data[6]["choices"][0]["finish_reason"] == "tool_calls"
    body = answer(OPENAI, request(), deltas)
    message = ChatCompletion.model_validate(body).choices[0].message
    assert message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("call_a", "get_weather", '{"city":"Paris"}'),
        (f"call_{STREAM_ID}_0_1", "get_time", "{}"),
    ]


def test_unfinished_choice_with_tools_ends_with_tool_calls() -> None:
    deltas = [ToolCallDelta(0, name="f", arguments="{}")]
    frames, _ = run(OPENAI, request(), deltas)
    assert check(frames, request())[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert answer(OPENAI, request(), deltas)["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_content() -> None:
    deltas: list[str | Delta] = [ReasoningDelta("think"), "answer"]
    frames, _ = run(OPENAI, request(), deltas)
    data = check(frames, request())
    assert data[1]["choices"][0]["delta"] == {"reasoning_content": "think"}
    assert data[2]["choices"][0]["delta"] == {"content": "answer"}
    message = answer(OPENAI, request(), deltas)["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("think", "answer")


def test_n2_interleaved_by_index() -> None:
    req = request(n=2, stream_options={"include_usage": True})
    deltas: list[str | Delta] = [
        "A0",
        TextDelta("B0", 1),
        TextDelta("A1", 0),
        TextDelta("B1", 1),
        Finish("length", 1),
        Finish("stop", 0),
    ]
    frames, _ = run(OPENAI, req, deltas)
    data = check(frames, req)
    got = [
        (
            value["choices"][0]["index"],
            value["choices"][0]["delta"],
            value["choices"][0]["finish_reason"],
        )
        for value in data[:-2]
    ]
    assert got == [
        (0, {"role": "assistant", "content": ""}, None),
        (1, {"role": "assistant", "content": ""}, None),
        (0, {"content": "A0"}, None),
        (1, {"content": "B0"}, None),
        (0, {"content": "A1"}, None),
        (1, {"content": "B1"}, None),
        (1, {}, "length"),
        (0, {}, "stop"),
    ]
    assert data[-2]["usage"]["completion_tokens"] == 4
    body = ChatCompletion.model_validate(answer(OPENAI, req, deltas))
    assert [(c.index, c.message.content, c.finish_reason) for c in body.choices] == [
        (0, "A0A1", "stop"),
        (1, "B0B1", "length"),
    ]


def test_max_tokens_cut_reports_length() -> None:
    req = request(max_tokens=2)
    deltas: list[str | Delta] = ["a", "b", Finish("length")]
    frames, _ = run(OPENAI, req, deltas)
    assert check(frames, req)[-2]["choices"][0]["finish_reason"] == "length"
    assert answer(OPENAI, req, deltas)["choices"][0]["finish_reason"] == "length"


def test_citations_ride_on_later_chunks() -> None:
    urls = ["https://a.example/", "https://b.example/"]
    deltas: list[str | Delta] = ["a", Citations(urls), "b"]
    frames, _ = run(OPENAI, request(), deltas)
    data = check(frames, request())
    assert "citations" not in data[1]
    assert data[2]["citations"] == urls
    assert data[3]["citations"] == urls
    assert answer(OPENAI, request(), deltas)["citations"] == urls


def test_error_mid_stream_then_done() -> None:
    stream = OPENAI.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.start() + stream.feed("Hi")
    frames += stream.fail(ChatError.server_error("The model backend failed."))
    events = parse_frames(frames)
    check_openai_stream(events, require_ids=True)
    assert payloads(events)[-2:] == [
        {
            "error": {
                "message": "The model backend failed.",
                "type": "server_error",
                "param": None,
                "code": "server_error",
            }
        },
        "[DONE]",
    ]
    assert frames[-1] == b"id: 4\ndata: [DONE]\n\n"
    assert stream.ended
    assert stream.finish() == []
    assert stream.fail(ChatError.server_error()) == []
    with pytest.raises(RuntimeError):
        stream.feed("more")


def test_fail_before_start_writes_only_the_error() -> None:
    stream = OPENAI.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.fail(ChatError(429, "Slow down.", code="rate_limit_exceeded"))
    assert payloads(parse_frames(frames)) == [
        {
            "error": {
                "message": "Slow down.",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        "[DONE]",
    ]


def test_feed_starts_the_stream_and_start_is_idempotent() -> None:
    stream = OPENAI.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.feed("x")
    assert len(frames) == 2  # the role chunk, then the content
    assert stream.start() == []


@pytest.mark.parametrize(
    ("deltas", "message"),
    [
        ([TextDelta("x", 1)], "choice 1, but the request has n=1"),
        ([Finish("stop"), "x"], "choice 0 after its Finish"),
        (
            [ToolCallDelta(0, arguments="{}")],
            "first fragment of tool call 0 (choice 0) has no name",
        ),
        ([ToolCallDelta(0, name="a"), ToolCallDelta(0, name="b")], "renamed from 'a' to 'b'"),
        ([42], "yielded a int, not a str or a delta"),
    ],
)
def test_backend_protocol_errors_are_500(deltas: list[Any], message: str) -> None:
    stream = OPENAI.new_stream(request(), STREAM_ID, CREATED)
    for delta in deltas[:-1]:
        stream.feed(delta)
    with pytest.raises(ChatError) as info:
        stream.feed(deltas[-1])
    assert info.value.status == 500
    assert message in info.value.message
    # The stream is still open, so the mount can end it with the error frame.
    check_openai_stream(parse_frames(stream.start() + stream.fail(info.value)))


def test_non_streaming_body_is_a_chat_completion() -> None:
    body = answer(OPENAI, request(), ["Hello", " world"])
    assert body == {
        "id": f"chatcmpl-{STREAM_ID}",
        "object": "chat.completion",
        "created": CREATED,
        "model": "echo",
        "system_fingerprint": "fp_rawsse",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
    }
    ChatCompletion.model_validate(body)


def test_streaming_requests_do_not_keep_their_text() -> None:
    _, stream = run(OPENAI, request(), ["Hello"])
    assert stream.transcript.choices[0].text == ""
    assert stream.transcript.completion_tokens == 1
    with pytest.raises(RuntimeError, match="non-streaming request"):
        stream.response_body()


def test_dialect_surface() -> None:
    assert OPENAI.name == "openai"
    assert OPENAI.heartbeat_frame == b":\n"  # a lone comment line: see COMMENT_HEARTBEAT
    assert OPENAI.content_type == "text/event-stream; charset=utf-8"
    assert OPENAI.api_key({"authorization": "Bearer sk-1"}) == "sk-1"
    assert OPENAI.api_key({"x-api-key": "k"}) is None
    assert OPENAI.error_body(ChatError.model_not_found("gpt-9")) == {
        "error": {
            "message": "The model `gpt-9` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    req = OPENAI.parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert (req.model, req.stream, req.dialect) == ("m", False, "openai")
