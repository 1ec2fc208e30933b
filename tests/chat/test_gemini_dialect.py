"""The Gemini dialect: golden frames, google-genai's types and its stream reader."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.genai import types
from google.genai._api_client import HttpResponse

from rawsse.chat import (
    GEMINI,
    ChatError,
    ChatRequest,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    parse_gemini,
)
from tests.chat.dialect_support import CREATED, STREAM_ID, answer, parse_frames, payloads, run


def request(**config: Any) -> ChatRequest:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "say hi"}]}]}
    if config:
        body["generationConfig"] = config
    return parse_gemini("echo", body, stream=True)


def responses(frames: list[bytes]) -> list[types.GenerateContentResponse]:
    """Validate every frame as google-genai's GenerateContentResponse (extra keys forbidden)."""
    return [types.GenerateContentResponse.model_validate(v) for v in payloads(parse_frames(frames))]


def test_text_stream_golden_bytes() -> None:
    frames, stream = run(GEMINI, request(), ["Hi", " there", Finish("stop")])
    head = '{"candidates":[{"content":{"parts":'
    tail = f'"modelVersion":"echo","responseId":"{STREAM_ID}"}}\n\n'
    assert b"".join(frames).decode() == (
        f'data: {head}[{{"text":"Hi"}}],"role":"model"}},"index":0}}],{tail}'
        f'data: {head}[{{"text":" there"}}],"role":"model"}},"index":0}}],{tail}'
        f'data: {head}[{{"text":""}}],"role":"model"}},"finishReason":"STOP","index":0}}],'
        '"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":2,"totalTokenCount":4},'
        f"{tail}"
    )
    assert stream.last_event_id == 3  # numbered, though no id: line is written
    parsed = responses(frames)
    assert "".join(response.text or "" for response in parsed) == "Hi there"
    assert parsed[-1].candidates is not None
    assert parsed[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert parsed[-1].usage_metadata is not None
    assert parsed[-1].usage_metadata.total_token_count == 4


def test_google_genai_reader_sees_only_json() -> None:
    """google-genai reads any line but data: and blank ones as raw JSON: none may appear."""
    frames, _ = run(GEMINI, request(), ["Hi", " there"])
    wire = GEMINI.heartbeat_frame.join(frames)
    response = httpx.Response(200, content=wire)
    segments = list(HttpResponse(response.headers, response)._iter_response_stream())
    assert len(segments) == len(frames)
    for segment in segments:
        types.GenerateContentResponse.model_validate(json.loads(segment))


def test_thoughts_max_tokens_and_candidates() -> None:
    req = request(maxOutputTokens=3, candidateCount=2)
    deltas = [
        ReasoningDelta("hmm"),
        ReasoningDelta("hmm", 1),
        "a",
        TextDelta("b", 1),
        "c",
        TextDelta("d", 1),
        Finish("length"),
        Finish("length", 1),
    ]
    frames, _ = run(GEMINI, req, deltas)
    parsed = responses(frames)
    assert payloads(parse_frames(frames))[0]["candidates"][0]["content"]["parts"] == [
        {"text": "hmm", "thought": True}
    ]
    finals = [r.candidates[0] for r in parsed[-2:] if r.candidates]
    assert [(c.index, c.finish_reason) for c in finals] == [
        (0, types.FinishReason.MAX_TOKENS),
        (1, types.FinishReason.MAX_TOKENS),
    ]
    assert parsed[-2].usage_metadata is None
    assert parsed[-1].usage_metadata is not None
    assert parsed[-1].usage_metadata.candidates_token_count == 6
    body = types.GenerateContentResponse.model_validate(answer(GEMINI, req, deltas))
    assert body.candidates is not None
    assert [(c.index, c.content.parts if c.content else None) for c in body.candidates] == [
        (0, [types.Part(text="hmm", thought=True), types.Part(text="ac")]),
        (1, [types.Part(text="hmm", thought=True), types.Part(text="bd")]),
    ]


def test_function_calls_are_sent_whole_at_the_end() -> None:
    deltas = [
        ToolCallDelta(0, name="get_weather"),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments='"Paris"}'),
        Finish("tool_calls"),
    ]
    frames, _ = run(GEMINI, request(), deltas)
    parsed = responses(frames)
    assert len(parsed) == 1
    assert parsed[0].function_calls == [
        types.FunctionCall(name="get_weather", args={"city": "Paris"})
    ]
    assert parsed[0].candidates is not None
    assert parsed[0].candidates[0].finish_reason == types.FinishReason.STOP
    assert answer(GEMINI, request(), deltas)["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    ]


def test_bad_function_arguments_leave_the_stream_open_for_fail() -> None:
    stream = GEMINI.new_stream(request(), STREAM_ID, CREATED)
    stream.feed(ToolCallDelta(0, name="f", arguments="{oops"))
    with pytest.raises(ChatError, match="not JSON") as info:
        stream.finish()
    assert not stream.ended
    frames = stream.fail(info.value)
    assert payloads(parse_frames(frames)) == [
        {
            "error": {
                "code": 500,
                "message": "The model backend broke the delta protocol: "
                "the arguments of tool call 0 are not JSON.",
                "status": "INTERNAL",
            }
        }
    ]


def test_error_mid_stream_is_gemini_error_json() -> None:
    stream = GEMINI.new_stream(request(), STREAM_ID, CREATED)
    frames = stream.feed("Hi") + stream.fail(ChatError(503, "busy"))
    assert frames[-1] == b'data: {"error":{"code":503,"message":"busy","status":"UNAVAILABLE"}}\n\n'


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (404, "NOT_FOUND"),
        (413, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (501, "INTERNAL"),
        (422, "INVALID_ARGUMENT"),
    ],
)
def test_error_body_status_names(status: int, name: str) -> None:
    assert GEMINI.error_body(ChatError(status, "m")) == {
        "error": {"code": status, "message": "m", "status": name}
    }


def test_dialect_surface() -> None:
    assert GEMINI.heartbeat_frame == b"\n"
    assert GEMINI.api_key({"x-goog-api-key": "g"}) == "g"
    assert GEMINI.api_key({}, {"key": "q"}) == "q"
    req = GEMINI.parse_request({"contents": [{"parts": [{"text": "x"}]}]}, model="m", stream=False)
    assert (req.model, req.stream, req.dialect) == ("m", False, "gemini")
    with pytest.raises(TypeError):
        GEMINI.parse_request({"contents": []})


def test_a_function_call_cut_at_max_tokens_ends_with_empty_args_not_an_error() -> None:
    # Arguments ending mid-JSON are what a cut answer (finish reason "length") leaves: the
    # stream and the whole response end with MAX_TOKENS and no args, not a 500.
    deltas = [ToolCallDelta(0, name="f", arguments='{"city": "Par'), Finish("length")]
    frames, _ = run(GEMINI, request(), deltas)
    parsed = responses(frames)
    assert parsed[-1].function_calls == [types.FunctionCall(name="f", args={})]
    assert parsed[-1].candidates is not None
    assert parsed[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    whole = answer(GEMINI, request(), deltas)
    assert whole["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "f", "args": {}}}
    ]
    assert whole["candidates"][0]["finishReason"] == "MAX_TOKENS"
