"""End to end, OpenAI dialect: the openai SDK against a real rawsse server, on asyncio and trio.

The SDK's sync client runs in a worker thread while the server runs on the test's event loop
(its async client only runs on asyncio; ``test_async_client_on_asyncio`` covers it). Every
stream the SDK read is also parsed from the recorded bytes and run through the OpenAI grammar
with rawsse's ``id:`` numbering.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import openai
import pytest

from rawsse.metrics import METRICS
from rawsse.stream import EventStream
from tests.chat_support import (
    KEY,
    TLS_CONTEXT,
    USER_TEXT,
    ChatServer,
    ProbeModel,
    Recorder,
    bearer,
    chat_server,
    check_openai,
    data_of,
    demo_server,
    echo_tokens,
    get,
    in_thread,
    open_stream,
    openai_body,
    openai_client,
    openai_text,
    parse_events,
    post,
    raw_request,
    request,
    wait_streams_idle,
)
from tests.support import parse_responses

pytestmark = pytest.mark.anyio

MESSAGES: Any = [{"role": "user", "content": USER_TEXT}]
TOKENS = echo_tokens(USER_TEXT)
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the docs.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@contextmanager
def serve_subprocess(*args: str) -> Iterator[int]:
    """``python -m rawsse serve --port 0 ARGS``; yields the port from its ready line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--no-access-log", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("rawsse listening on http://"), line
        yield int(line.strip().rsplit(":", 1)[1])
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _sdk_stream(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    with client.chat.completions.create(stream=True, **kwargs) as stream:
        return list(stream)


# -- answers ---------------------------------------------------------------------------------


async def test_non_streaming_echo_is_verbatim_with_usage(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)
        completion = await in_thread(
            client.chat.completions.create, model="echo", messages=MESSAGES
        )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "echo"
    assert completion.system_fingerprint == "fp_rawsse"
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == USER_TEXT
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(TOKENS)
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert recorder.last.headers["content-type"].startswith("application/json")


async def test_streaming_echo_with_usage_chunk(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)
        chunks = await in_thread(
            _sdk_stream,
            client,
            model="echo",
            messages=MESSAGES,
            stream_options={"include_usage": True},
        )
    exchange = recorder.last
    assert exchange.headers["content-type"].startswith("text/event-stream")
    assert exchange.headers["x-rawsse-stream-id"]
    events = exchange.events
    check_openai(events)
    assert events[-1].data == "[DONE]"
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == USER_TEXT
    # One chunk per token, in order, each exactly one echo token.
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == TOKENS
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(TOKENS)
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id == f"chatcmpl-{exchange.headers['x-rawsse-stream-id']}"


async def test_streaming_without_include_usage_has_no_usage(anyio_backend: str) -> None:
    async with demo_server() as srv:
        answer = await post(srv, "/v1/chat/completions", openai_body())
    assert answer.status == 200
    check_openai(answer.events)
    chunks = [d for d in data_of(answer.events) if isinstance(d, dict)]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)
    assert openai_text(answer.events) == USER_TEXT


async def test_n_choices_stream_and_complete(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)
        chunks = await in_thread(
            _sdk_stream,
            client,
            model="echo",
            messages=MESSAGES,
            n=3,
            stream_options={"include_usage": True},
        )
        events = recorder.last.events
        completion = await in_thread(
            client.chat.completions.create, model="echo", messages=MESSAGES, n=3
        )
    check_openai(events)
    for index in range(3):
        assert openai_text(events, index) == USER_TEXT
    # Choices are interleaved step by step, not one after the other.
    order = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.content]
    assert order[:3] == [0, 1, 2]
    finishes = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices}
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 * len(TOKENS)

    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content == USER_TEXT for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens == 3 * len(TOKENS)


async def test_tool_call_stream_through_sdk_helper_and_complete(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)

        def run_helper() -> Any:
            with client.chat.completions.stream(
                model="echo",
                messages=MESSAGES,
                tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "search_docs"}},
                extra_body={"rawsse": {"answer": "tool_call"}},
            ) as stream:
                for _ in stream:
                    pass
                return stream.get_final_completion()

        final = await in_thread(run_helper)
        events = recorder.last.events
        completion = await in_thread(
            client.chat.completions.create,
            model="echo",
            messages=MESSAGES,
            tools=TOOLS,
            extra_body={"rawsse": {"answer": "tool_call"}},
        )
    check_openai(events)
    fragments = [
        call
        for chunk in data_of(events)
        if isinstance(chunk, dict)
        for c in chunk["choices"]
        for call in c["delta"].get("tool_calls") or []
    ]
    assert len(fragments) > 2  # the arguments arrive in several pieces
    assert fragments[0]["function"]["name"] == "search_docs"
    assert fragments[0]["id"] and fragments[0]["type"] == "function"
    assert all(set(f) == {"index", "function"} for f in fragments[1:])

    [choice] = final.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "search_docs"
    assert json.loads(call.function.arguments) == {"query": USER_TEXT}

    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == "search_docs"  # the first tool, when none is forced
    assert json.loads(call.function.arguments) == {"query": USER_TEXT}


async def test_reasoning_then_text(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)
        chunks = await in_thread(
            _sdk_stream,
            client,
            model="echo",
            messages=MESSAGES,
            extra_body={"rawsse": {"answer": "reasoning"}},
        )
        completion = await in_thread(
            client.chat.completions.create,
            model="echo",
            messages=MESSAGES,
            extra_body={"rawsse": {"answer": "reasoning"}},
        )
    check_openai(recorder.exchanges[0].events)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning == "Thinking about the answer before giving it."
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == USER_TEXT
    # All reasoning comes before the answer text.
    kinds = [
        "r" if (c.choices[0].delta.model_extra or {}).get("reasoning_content") else "t"
        for c in chunks
        if c.choices and (c.choices[0].delta.content or c.choices[0].delta.model_extra)
    ]
    assert kinds == sorted(kinds)
    message = completion.choices[0].message
    assert message.content == USER_TEXT
    assert (message.model_extra or {})["reasoning_content"] == reasoning


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_length(anyio_backend: str, limit_field: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)
        chunks = await in_thread(
            _sdk_stream,
            client,
            model="lorem",
            messages=MESSAGES,
            stream_options={"include_usage": True},
            **{limit_field: 5},
        )
        events = recorder.last.events
        echo_cut = await in_thread(
            client.chat.completions.create,
            model="echo",
            messages=MESSAGES,
            **{limit_field: 2},
        )
        lorem_default = await in_thread(
            client.chat.completions.create, model="lorem", messages=MESSAGES
        )
    check_openai(events)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 5
    assert "".join(pieces) == "Lorem ipsum dolor sit amet"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5

    assert echo_cut.choices[0].message.content == "".join(TOKENS[:2])
    assert echo_cut.choices[0].finish_reason == "length"
    assert echo_cut.usage is not None and echo_cut.usage.completion_tokens == 2

    assert lorem_default.choices[0].finish_reason == "stop"
    assert lorem_default.usage is not None and lorem_default.usage.completion_tokens == 16


async def test_echo_keeps_a_multi_part_last_user_message(anyio_backend: str) -> None:
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "part one, "},
                {"type": "text", "text": "part two"},
            ],
        },
    ]
    async with demo_server() as srv:
        completion = await in_thread(
            openai_client(srv).chat.completions.create, model="echo", messages=messages
        )
    assert completion.choices[0].message.content == "part one, part two"


async def test_models_list_and_retrieve(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        client = openai_client(srv)
        models = await in_thread(lambda: [m.id for m in client.models.list()])
        echo = await in_thread(client.models.retrieve, "echo")
        with pytest.raises(openai.NotFoundError) as info:
            await in_thread(client.models.retrieve, "gpt-nope")
    assert sorted(models) == ["echo", "lorem"]
    assert echo.id == "echo" and echo.object == "model" and echo.owned_by == "rawsse"
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_client_on_asyncio(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        client = openai.AsyncOpenAI(
            base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0, timeout=10.0
        )
        async with client:
            stream = await client.chat.completions.create(
                model="echo", messages=MESSAGES, stream=True, n=2
            )
            texts = ["", ""]
            async for chunk in stream:
                for choice in chunk.choices:
                    texts[choice.index] += choice.delta.content or ""
            completion = await client.chat.completions.create(model="lorem", messages=MESSAGES)
    assert texts == [USER_TEXT, USER_TEXT]
    assert completion.usage is not None and completion.usage.completion_tokens == 16


# -- errors before the stream ------------------------------------------------------------------

INVALID_BODIES = [
    pytest.param({"temperature": 3}, "temperature", id="temperature"),
    pytest.param({"top_p": 1.5}, "top_p", id="top_p"),
    pytest.param({"n": 0}, "n", id="n"),
    pytest.param({"messages": []}, "messages", id="messages-empty"),
    pytest.param({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", id="role"),
    pytest.param(
        {"messages": [{"role": "user", "content": 5}]}, "messages[0].content", id="content"
    ),
    pytest.param(
        {"stream_options": {"include_usage": True}}, "stream_options", id="stream_options"
    ),
    pytest.param({"presence_penalty": -3}, "presence_penalty", id="presence_penalty"),
    pytest.param({"stop": ["a", "b", "c", "d", "e"]}, "stop", id="stop"),
    pytest.param({"tool_choice": "required"}, "tool_choice", id="tool_choice"),
    pytest.param(
        {"response_format": {"type": "xml"}}, "response_format.type", id="response_format"
    ),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max_tokens"),
    pytest.param({"max_tokens": 2**70}, "max_tokens", id="max_tokens-beyond-64-bits"),
    pytest.param({"search_recency_filter": "year"}, "search_recency_filter", id="recency"),
    pytest.param({"rawsse": {"bogus": 1}}, "rawsse.bogus", id="rawsse-unknown"),
    pytest.param({"rawsse": {"delay_dist": "gauss"}}, "rawsse.delay_dist", id="rawsse-dist"),
    pytest.param({"rawsse": {"fail_status": 200}}, "rawsse.fail_status", id="rawsse-status"),
]


@pytest.mark.parametrize(("fields", "param"), INVALID_BODIES)
async def test_invalid_body_is_400_in_openai_shape(
    anyio_backend: str, fields: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": "echo", "messages": MESSAGES, **fields}
    async with demo_server(api_keys=(KEY,)) as srv:
        client = openai_client(srv)
        with pytest.raises(openai.BadRequestError) as info:
            # The SDK sends the body as given: extra_body carries every field verbatim.
            await in_thread(
                client.chat.completions.create,
                model=body.pop("model"),
                messages=body.pop("messages"),
                extra_body=body,
            )
        # The server keeps serving after a refusal.
        ok = await in_thread(client.chat.completions.create, model="echo", messages=MESSAGES)
    error = info.value
    assert error.status_code == 400
    assert error.body is not None and set(error.body) == {"message", "type", "param", "code"}
    assert error.type == "invalid_request_error"
    assert error.param == param
    assert error.code
    assert "got a decimal" not in error.message
    assert ok.choices[0].message.content == USER_TEXT


async def test_body_that_is_not_json_is_400(anyio_backend: str) -> None:
    async with demo_server() as srv:
        answer = await request(
            srv,
            "POST",
            "/v1/chat/completions",
            content=b'{"model": "echo", "messages": [',
            headers={"content-type": "application/json"},
        )
        not_object = await request(srv, "POST", "/v1/chat/completions", content=b"[1, 2]")
    assert answer.status == 400
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert not_object.status == 400 and "error" in not_object.json()


async def test_missing_and_wrong_key_are_401(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY, "sk-second")) as srv:
        missing = openai_client(srv, Recorder(strip_headers=("authorization",)))
        wrong = openai_client(srv, api_key="sk-wrong")
        second = openai_client(srv, api_key="sk-second")
        with pytest.raises(openai.AuthenticationError) as no_key:
            await in_thread(missing.chat.completions.create, model="echo", messages=MESSAGES)
        with pytest.raises(openai.AuthenticationError) as bad_key:
            await in_thread(
                wrong.chat.completions.create, model="echo", messages=MESSAGES, stream=True
            )
        ok = await in_thread(second.chat.completions.create, model="echo", messages=MESSAGES)
    assert no_key.value.status_code == 401
    assert no_key.value.code == "missing_api_key"
    assert no_key.value.response.headers["www-authenticate"] == "Bearer"
    assert bad_key.value.code == "invalid_api_key"
    assert bad_key.value.type == "invalid_request_error"
    assert ok.choices[0].message.content == USER_TEXT


async def test_models_need_the_key_when_keys_are_set(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        client = openai_client(srv, api_key="sk-wrong")
        with pytest.raises(openai.AuthenticationError):
            await in_thread(lambda: list(client.models.list()))
        listed = await get(srv, "/v1/models")
        one = await get(srv, "/v1/models/echo")
    assert (listed.status, one.status) == (401, 401)
    assert listed.json()["error"]["code"] == "missing_api_key"


async def test_unknown_model_is_404(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = openai_client(srv)
        with pytest.raises(openai.NotFoundError) as info:
            await in_thread(
                client.chat.completions.create, model="gpt-9", messages=MESSAGES, stream=True
            )
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert "gpt-9" in info.value.message


async def test_oversized_body_is_413_in_openai_shape(anyio_backend: str) -> None:
    async with demo_server(max_body_bytes=2048) as srv:
        client = openai_client(srv)
        with pytest.raises(openai.APIStatusError) as info:
            await in_thread(
                client.chat.completions.create,
                model="echo",
                messages=[{"role": "user", "content": "x" * 4096}],
            )
        # A body under the limit still works (the server is still serving).
        ok = await in_thread(client.chat.completions.create, model="echo", messages=MESSAGES)
    error = info.value
    assert error.status_code == 413
    assert error.response.headers["content-type"].startswith("application/json")
    assert error.code == "request_too_large"
    assert "2048" in error.message
    assert ok.choices[0].message.content == USER_TEXT


async def test_oversized_chunked_body_is_413(anyio_backend: str) -> None:
    """No Content-Length: the limit is found while reading the chunks."""

    async def chunks() -> Any:
        for _ in range(8):
            yield b"x" * 1024

    async with demo_server(max_body_bytes=2048) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10.0, verify=TLS_CONTEXT) as client:
            response = await client.post("/v1/chat/completions", content=chunks())
        ok = await post(srv, "/v1/chat/completions", openai_body(stream=False))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert ok.status == 200


async def test_wrong_method_is_405_and_unknown_path_404(anyio_backend: str) -> None:
    async with demo_server() as srv:
        wrong_method = await get(srv, "/v1/chat/completions")
        client = openai_client(srv)
        with pytest.raises(openai.NotFoundError) as info:
            await in_thread(client.post, "/chat/completion", cast_to=object, body={})
    assert wrong_method.status == 405
    assert "POST" in wrong_method.headers["allow"]
    assert info.value.status_code == 404


# -- errors during the stream ----------------------------------------------------------------


async def test_failure_mid_stream_is_error_frame_then_done(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = openai_client(srv, recorder)
        received: list[Any] = []

        def consume() -> None:
            stream = client.chat.completions.create(
                model="lorem",
                messages=MESSAGES,
                stream=True,
                max_tokens=20,
                extra_body={"rawsse": {"fail_after": 3, "fail_status": 503}},
            )
            received.extend(stream)  # keeps the chunks that came before the error

        with pytest.raises(openai.APIError) as info:
            await in_thread(consume)
        raw = await post(
            srv,
            "/v1/chat/completions",
            openai_body("lorem", max_tokens=20, rawsse={"fail_after": 3}),
        )
        # The failure was the model's: the server and the next request are fine.
        ok = await post(srv, "/v1/chat/completions", openai_body())
    error = info.value
    assert not isinstance(error, openai.APIStatusError)  # in-band, after a 200
    assert error.code == "injected_failure"
    assert error.type == "server_error"
    assert "fail_after" in error.message
    assert "".join(c.choices[0].delta.content or "" for c in received) == "Lorem ipsum dolor"

    assert raw.status == 200  # the stream had started: only the frame can say it failed
    events = raw.events  # the body ended on a frame boundary, with a clean chunked end
    check_openai(events)
    *_, error_frame, done = data_of(events)
    assert done == "[DONE]"
    assert error_frame["error"]["code"] == "injected_failure"
    assert set(error_frame["error"]) == {"message", "type", "param", "code"}
    assert openai_text(events) == "Lorem ipsum dolor"
    check_openai(ok.events)


async def test_backend_exception_mid_stream_leaks_nothing(anyio_backend: str) -> None:
    probe = ProbeModel(tokens=5, delay_s=0, fail_at=2, fail_with=KeyError("secret detail"))
    async with chat_server({"probe": probe}) as srv:
        raw = await post(srv, "/v1/chat/completions", openai_body("probe"))
    events = raw.events
    check_openai(events)
    error = data_of(events)[-2]["error"]
    assert error["type"] == "server_error"
    assert "secret" not in json.dumps(error)
    assert probe.closed.is_set()


# -- disconnects and heartbeats ----------------------------------------------------------------


async def test_sdk_closing_the_stream_stops_the_backend(anyio_backend: str) -> None:
    probe = ProbeModel(tokens=10_000, delay_s=0.005)
    baseline = METRICS.snapshot()
    async with chat_server({"probe": probe}) as srv:
        client = openai_client(srv)

        def read_three() -> list[str]:
            stream = client.chat.completions.create(model="probe", messages=MESSAGES, stream=True)
            got = []
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
                if len(got) == 3:
                    break
            stream.close()
            return got

        got = await in_thread(read_three)
        with anyio.fail_after(5):
            await probe.closed.wait()
        await wait_streams_idle(baseline["streams_active"])
        yielded = probe.yielded
        await anyio.sleep(0.05)
    assert got == ["t0 ", "t1 ", "t2 "]
    assert not probe.completed
    assert probe.yielded == yielded < 10_000  # nothing more is generated after the close
    assert METRICS.client_disconnects_total == baseline["client_disconnects_total"] + 1


async def test_raw_disconnect_of_demo_stream(anyio_backend: str) -> None:
    baseline = METRICS.snapshot()
    async with demo_server() as srv:
        body = openai_body("lorem", max_tokens=100_000, rawsse={"token_delay_s": 0.002})
        async with open_stream(srv, "/v1/chat/completions", body=body) as stream:
            await stream.read_events(5)
            assert METRICS.streams_active == baseline["streams_active"] + 1
        await wait_streams_idle(baseline["streams_active"])
        # Still serving.
        ok = await post(srv, "/v1/chat/completions", openai_body())
    assert METRICS.client_disconnects_total == baseline["client_disconnects_total"] + 1
    check_openai(ok.events)


async def test_heartbeats_are_comments_while_the_model_thinks(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    before = METRICS.heartbeats_total
    async with demo_server() as srv:
        body = openai_body(rawsse={"ttft_s": 0.4})
        async with open_stream(srv, "/v1/chat/completions", body=body) as stream:
            events = await stream.read_to_end()
    # The chat heartbeat is a lone comment line (no blank line: see COMMENT_HEARTBEAT).
    lines = stream.raw.split(b"\n")
    heartbeats = [i for i, line in enumerate(lines) if line == b":"]
    assert len(heartbeats) >= 3, stream.raw[:300]
    # All during the wait for the first token: after the role chunk, before any content.
    first_role = next(i for i, line in enumerate(lines) if b'"role":"assistant"' in line)
    first_content = next(i for i, line in enumerate(lines) if b'"content":"H' in line)
    assert all(first_role < i < first_content for i in heartbeats)
    check_openai(events)  # heartbeats are comments: no events
    assert openai_text(events) == USER_TEXT
    assert METRICS.heartbeats_total >= before + 3


async def test_openai_sdk_reads_through_heartbeats(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    async with demo_server() as srv:
        recorder = Recorder()
        chunks = await in_thread(
            _sdk_stream,
            openai_client(srv, recorder),
            model="echo",
            messages=MESSAGES,
            # Silences before the first token and between tokens, each a few heartbeats long.
            extra_body={"rawsse": {"ttft_s": 0.2, "token_delay_s": 0.08}},
        )
    body = bytes(recorder.last.body)
    assert b"\n:\n" in body  # a lone comment line: the chat heartbeat
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == TOKENS
    check_openai(parse_events(body))
    # Heartbeats came between tokens too, not only before the first.
    between = body[body.index(b'"content":"Hello') :]
    assert between.count(b"\n:\n") >= 2


async def test_no_heartbeat_after_the_stream_ended_on_a_kept_connection(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.03)
    async with demo_server() as srv:
        sock = await anyio.connect_tcp("127.0.0.1", srv.port)
        async with sock:
            request_bytes = raw_request("POST", "/v1/chat/completions", openai_body())
            # The same request, kept alive (no Connection: close).
            await sock.send(request_bytes.replace(b"Connection: close\r\n", b""))
            received = b""
            with anyio.fail_after(5):
                while not received.endswith(b"0\r\n\r\n"):
                    received += await sock.receive()
            after = b""
            with anyio.move_on_after(0.2):
                after += await sock.receive()
    assert after == b"", f"bytes after the response ended: {after!r}"


def test_streams_with_heartbeats_due_close_together_do_not_hang_the_server() -> None:
    with serve_subprocess("--heartbeat", "0.05", "--token-delay", "0") as port:
        body = openai_body(rawsse={"ttft_s": 5})
        streams = []
        try:
            for gap_s in (0, 0.002, 0.002, 0.002, 0.002):
                time.sleep(gap_s)
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                streams.append(sock)
                sock.sendall(raw_request("POST", "/v1/chat/completions", body))
                sock.recv(65536)  # the head and the role chunk: the heartbeat clock starts
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=2) as health:
                health.sendall(raw_request("GET", "/healthz"))
                answer = health.recv(1000)  # raises TimeoutError when the server hangs
        finally:
            for sock in streams:
                sock.close()
    assert answer.startswith(b"HTTP/1.1 200")


def test_rawsse_serve_heartbeat_option() -> None:
    """``rawsse serve --heartbeat`` as a subprocess: comments while the model is silent."""
    with serve_subprocess("--heartbeat", "0.05", "--token-delay", "0", "--api-key", KEY) as port:
        body = openai_body(rawsse={"ttft_s": 0.3})
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(raw_request("POST", "/v1/chat/completions", body, bearer()))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    [response] = parse_responses(data)
    assert response.status == 200
    assert response.body.split(b"\n").count(b":") >= 3
    events = parse_events(response.body)
    check_openai(events)
    assert openai_text(events) == USER_TEXT


# -- status commit -------------------------------------------------------------------------


async def test_status_commit_turns_early_failure_into_http_status(anyio_backend: str) -> None:
    async with chat_server(status_commit_s=2.0) as srv:
        client = openai_client(srv)
        with pytest.raises(openai.RateLimitError) as info:
            await in_thread(
                _sdk_stream,
                client,
                model="lorem",
                messages=MESSAGES,
                extra_body={"rawsse": {"fail_after": 0, "fail_status": 429}},
            )
        with pytest.raises(openai.InternalServerError) as server_error:
            await in_thread(
                _sdk_stream,
                client,
                model="lorem",
                messages=MESSAGES,
                extra_body={"rawsse": {"fail_after": 0, "ttft_s": 0.05}},
            )
        # A later failure still arrives in-band, after a committed 200.
        late = await post(
            srv, "/v1/chat/completions", openai_body("lorem", rawsse={"fail_after": 2})
        )
        fine = await post(srv, "/v1/chat/completions", openai_body("echo"))
    assert info.value.status_code == 429
    assert info.value.code == "injected_failure"
    assert server_error.value.status_code == 500
    assert late.status == 200
    check_openai(late.events)
    assert data_of(late.events)[-2]["error"]["code"] == "injected_failure"
    assert fine.status == 200
    check_openai(fine.events)
    assert openai_text(fine.events) == USER_TEXT


async def test_without_status_commit_an_early_failure_is_in_band(anyio_backend: str) -> None:
    async with demo_server() as srv:
        raw = await post(
            srv, "/v1/chat/completions", openai_body("lorem", rawsse={"fail_after": 0})
        )
    assert raw.status == 200
    check_openai(raw.events)
    assert data_of(raw.events)[-2]["error"]["code"] == "injected_failure"


async def test_status_commit_waits_only_up_to_its_limit(anyio_backend: str) -> None:
    """A backend slower than ``status_commit_s`` to its first delta still streams (head at
    the limit), and a failure after the limit is in-band."""
    slow = ProbeModel(tokens=3, delay_s=0, first_delay_s=0.15)
    failing_late = ProbeModel(tokens=3, delay_s=0, first_delay_s=0.15, fail_at=0)
    async with chat_server({"slow": slow, "late": failing_late}, status_commit_s=0.05) as srv:
        answer = await post(srv, "/v1/chat/completions", openai_body("slow"))
        late = await post(srv, "/v1/chat/completions", openai_body("late"))
    assert answer.status == 200
    check_openai(answer.events)
    assert openai_text(answer.events) == "t0 t1 t2 "
    assert late.status == 200
    check_openai(late.events)
    assert data_of(late.events)[-2]["error"]["type"] == "server_error"


async def test_server_keeps_serving_other_streams_during_a_failure(anyio_backend: str) -> None:
    """Many concurrent streams, one failing: the others complete and validate."""
    results: dict[int, Any] = {}
    async with demo_server() as srv:

        async def one(i: int, srv: ChatServer = srv) -> None:
            options = {"fail_after": 2} if i == 0 else {"token_delay_s": 0.001}
            results[i] = await post(
                srv, "/v1/chat/completions", openai_body("lorem", max_tokens=20, rawsse=options)
            )

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
    for i, answer in results.items():
        check_openai(answer.events)
        if i:
            assert len(openai_text(answer.events).split()) == 20
    assert "error" in data_of(results[0].events)[-2]


async def test_bearer_key_on_raw_request(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        ok = await post(srv, "/v1/chat/completions", openai_body(), headers=bearer())
        lower = await post(
            srv, "/v1/chat/completions", openai_body(), headers={"authorization": f"bearer {KEY}"}
        )
    assert ok.status == 200 and lower.status == 200
    check_openai(ok.events)
