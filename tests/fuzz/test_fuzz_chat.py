"""Fuzzing the chat layer's request validation: any JSON, only ``ChatError`` 4xx.

h11's fuzz invariant, for the chat parsers: "we either successfully parse it, or else throw a
ChatError with a 4xx status, never any other error". For every dialect (OpenAI, Anthropic,
Gemini, ChatGPT-web, envelope), on arbitrary JSON values, on arbitrary bytes, and on valid
requests (tool calls, tool results, system prompts, demo-model options included) with fields
replaced, deleted or added:

- ``load_json_body`` and ``Dialect.parse_request`` return a ``ChatRequest`` or raise a 4xx
  ``ChatError`` whose error body renders in the dialect's shape;
- an accepted request is well formed (non-empty messages with known roles, limits in range);
- from an accepted request, ``new_stream`` and calling a demo model raise only 4xx ``ChatError``;
  and the whole generation, run through the dialect, is a stream of complete frames that follows
  the vendor's grammar (OpenAI and Anthropic) and ends with ``[DONE]`` or ``message_stop``;
- ``presented_key`` and ``check_api_key`` never raise, whatever the headers and query hold.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import anyio
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rawsse.chat import (
    ANTHROPIC,
    CHATGPT_WEB,
    ENVELOPE,
    GEMINI,
    MAX_CHOICES,
    OPENAI,
    ChatError,
    ChatRequest,
    Dialect,
    check_anthropic_stream,
    check_api_key,
    check_openai_stream,
    demo_models,
    load_json_body,
    presented_key,
)
from rawsse.parser import EventParser
from tests.fuzz.test_fuzz_http import (
    anthropic_bodies,
    asks_for_many_tokens,
    corrupted,
    gemini_bodies,
    json_values,
    openai_bodies,
    texts,
)
from tests.hypothesis_profiles import fuzz

DIALECTS = {
    "openai": OPENAI,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
    "chatgpt-web": CHATGPT_WEB,
    "envelope": ENVELOPE,
}
MODELS = demo_models(token_delay_s=0.0)
_ROLES = {"system", "developer", "user", "assistant", "tool"}

# Richer valid bodies than the HTTP fuzzer's: tool calls and their results in every dialect.
openai_tool_turns = st.just(
    [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
    ]
)
anthropic_tool_turns = st.just(
    [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"c": 1}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"}],
        },
    ]
)
gemini_tool_turns = st.just(
    [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"c": 1}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "rain"}}}],
        },
    ]
)


@st.composite
def valid_bodies(draw: st.DrawFn, dialect: str) -> Any:
    if dialect == "anthropic":
        body = draw(anthropic_bodies)
        if draw(st.booleans()):
            body["messages"] = draw(anthropic_tool_turns)
            body["tools"] = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    elif dialect == "gemini":
        body = draw(gemini_bodies)
        if draw(st.booleans()):
            body["contents"] = draw(gemini_tool_turns)
            body["tools"] = [{"functionDeclarations": [{"name": "get_weather"}]}]
            body["toolConfig"] = {
                "functionCallingConfig": {"mode": draw(st.sampled_from(["AUTO", "ANY", "NONE"]))}
            }
    else:
        body = draw(openai_bodies)
        if draw(st.booleans()):
            body["messages"] = draw(openai_tool_turns)
            body["tools"] = [{"type": "function", "function": {"name": "get_weather"}}]
            body["tool_choice"] = draw(st.sampled_from(["auto", "none", "required"]))
    return copy.deepcopy(body)


@st.composite
def any_body(draw: st.DrawFn, dialect: str) -> Any:
    """A valid body, one corrupted field by field, or any JSON value at all."""
    kind = draw(st.sampled_from(["valid", "corrupted", "corrupted", "anything"]))
    if kind == "anything":
        return draw(json_values)
    body = draw(valid_bodies(dialect))
    return draw(corrupted(body)) if kind == "corrupted" else body


def parse(dialect: str, body: Any, *, model: str = "echo", stream: bool = True) -> ChatRequest:
    if dialect == "gemini":
        return DIALECTS[dialect].parse_request(body, model=model, stream=stream)
    return DIALECTS[dialect].parse_request(body)


def assert_client_error(dialect: Dialect, error: ChatError) -> None:
    assert 400 <= error.status < 500, repr(error)
    assert isinstance(error.message, str) and error.message
    rendered = dialect.error_body(error)
    json.dumps(rendered)  # the error body is JSON-serialisable in the vendor's shape


def assert_well_formed(request: ChatRequest) -> None:
    assert isinstance(request.model, str) and request.model
    assert request.messages and all(m.role in _ROLES for m in request.messages)
    assert all(isinstance(m.text, str) for m in request.messages)
    assert request.max_tokens is None or (
        isinstance(request.max_tokens, int) and request.max_tokens >= 1
    )
    assert 1 <= request.n <= MAX_CHOICES
    assert request.temperature is None or 0 <= request.temperature <= 2
    assert request.top_p is None or 0 <= request.top_p <= 1
    assert isinstance(request.stream, bool)
    assert all(isinstance(s, str) for s in request.stop)


async def _generate(dialect: Dialect, request: ChatRequest) -> list[bytes]:
    frames = dialect.new_stream(request, "fuzz", 1_700_000_000)
    deltas = MODELS[request.model](request)
    out = frames.start()
    async for delta in deltas:
        out += frames.feed(delta)
    out += frames.finish()
    return out


def run_generation(name: str, request: ChatRequest) -> None:
    """A demo model's whole answer through the dialect: complete frames, a valid stream."""
    dialect = DIALECTS[name]
    try:
        frames = anyio.run(_generate, dialect, request)
    except ChatError as error:  # options the model or dialect refuse, before any frame
        assert_client_error(dialect, error)
        return
    parser = EventParser()
    events = []
    for frame in frames:
        assert frame.endswith(b"\n\n"), frame
        events += parser.feed(frame)
    assert events
    if name == "openai":
        check_openai_stream(events)
    elif name == "anthropic":
        check_anthropic_stream(events)
    else:
        for event in events:
            if event.data != "[DONE]":
                json.loads(event.data)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_request_validation_raises_only_chat_errors(name: str) -> None:
    dialect = DIALECTS[name]

    @fuzz(150)
    @given(any_body(name), st.sampled_from(["echo", "lorem", "nope", ""]), st.booleans())
    def run(body: Any, model: str, stream: bool) -> None:
        assume(not asks_for_many_tokens(body))
        try:
            request = parse(name, body, model=model, stream=stream)
        except ChatError as error:
            assert_client_error(dialect, error)
            return
        assert_well_formed(request)
        if request.model not in MODELS:
            return
        if any(k in request.extra for k in ("ttft_s", "token_delay_s")):
            return  # real sleeps: the HTTP fuzzer leaves them out too
        run_generation(name, request)

    run()


@fuzz(200)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_body_decoding_raises_only_400(raw: bytes) -> None:
    error: ChatError | None = None
    try:
        load_json_body(raw)
    except ChatError as exc:
        error = exc
    assert error is None or error.status == 400


@pytest.mark.parametrize("name", sorted(DIALECTS))
@pytest.mark.parametrize("depth", [64, 5000])
def test_deeply_nested_values_in_every_field(name: str, depth: int) -> None:
    """A field holding JSON nested thousands deep is refused or kept, never a crash."""
    nested: Any = "x"
    for level in range(depth):
        nested = [nested] if level % 2 else {"a": nested}
    body = {
        "openai": {"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        "anthropic": {
            "model": "echo",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    }.get(name, {"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    paths = [(key,) for key in body] + [("tools",), ("response_format",), ("rawsse",)]
    for path in paths:
        candidate = copy.deepcopy(body)
        candidate[path[0]] = nested
        raw = json.dumps(candidate).encode() if depth < 900 else _dumps_deep(candidate)
        try:
            request = parse(name, load_json_body(raw))
        except ChatError as error:
            assert_client_error(DIALECTS[name], error)
        else:
            assert_well_formed(request)


def _dumps_deep(value: Any) -> bytes:
    """json.dumps without the recursion limit (iterative, for the deep case)."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and item in ("]", "}", ","):
            out.append(item)
        elif isinstance(item, tuple):
            out.append(json.dumps(item[0]) + ":")
        elif isinstance(item, list):
            out.append("[")
            stack.append("]")
            for i, element in reversed(list(enumerate(item))):
                stack.append(element)
                if i:
                    stack.append(",")
        elif isinstance(item, dict):
            out.append("{")
            stack.append("}")
            entries = list(item.items())
            for i, (key, element) in reversed(list(enumerate(entries))):
                stack.append(element)
                stack.append((key,))
                if i:
                    stack.append(",")
        else:
            out.append(json.dumps(item))
    return "".join(out).encode()


headers_strategy = st.dictionaries(
    st.sampled_from(["authorization", "x-api-key", "x-goog-api-key", "other"])
    | st.text(max_size=10),
    st.sampled_from(["Bearer sk-1", "bearer  sk-1 ", "Bearer", "Basic abc", "sk-1", ""])
    | st.text(max_size=20),
    max_size=4,
)


@fuzz(300)
@given(
    headers_strategy,
    st.dictionaries(st.sampled_from(["key", "other"]) | st.text(max_size=5), texts, max_size=3),
    st.lists(st.text(max_size=12), max_size=3),
    st.sampled_from([None, "x-api-key", "x-goog-api-key"]),
    st.sampled_from([None, "key"]),
)
def test_key_lookup_and_check_never_raise(
    headers: dict[str, str],
    query: dict[str, str],
    keys: list[str],
    header: str | None,
    query_param: str | None,
) -> None:
    presented = presented_key(headers, query, header=header, query_param=query_param)
    assert presented is None or isinstance(presented, str)
    accepted = check_api_key(keys, presented)
    if not keys:
        assert accepted
    elif presented is None:
        assert not accepted
    else:
        assert accepted == (presented in keys)
