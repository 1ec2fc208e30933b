"""End to end, Anthropic dialect: the anthropic SDK against a real rawsse server, both backends.

The SDK's sync client runs in a worker thread (its async client, on asyncio only, in
``test_async_client_on_asyncio``). Every stream it read is parsed from the recorded bytes and
run through the Anthropic grammar with rawsse's ``id:`` numbering.
"""

from __future__ import annotations

from typing import Any

import anthropic
import anyio
import pytest

from rawsse.metrics import METRICS
from rawsse.stream import EventStream
from tests.chat_support import (
    KEY,
    USER_TEXT,
    ProbeModel,
    Recorder,
    anthropic_body,
    anthropic_client,
    anthropic_headers,
    anthropic_text,
    bearer,
    chat_server,
    check_anthropic,
    data_of,
    demo_server,
    echo_tokens,
    get,
    in_thread,
    open_stream,
    post,
    request,
    wait_streams_idle,
)

pytestmark = pytest.mark.anyio

MESSAGES: Any = [{"role": "user", "content": USER_TEXT}]
TOKENS = echo_tokens(USER_TEXT)
REASONING = "Thinking about the answer before giving it."
TOOLS: Any = [
    {
        "name": "search_docs",
        "description": "Search the docs.",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
    {"name": "other_tool", "input_schema": {"type": "object"}},
]


def _helper_stream(client: anthropic.Anthropic, **kwargs: Any) -> tuple[list[Any], Any, str]:
    """Run the SDK's ``messages.stream`` helper: events, final message, text."""
    with client.messages.stream(**kwargs) as stream:
        events = list(stream)
        message = stream.get_final_message()
        text = "".join(block.text for block in message.content if block.type == "text")
        return events, message, text


# -- answers ---------------------------------------------------------------------------------


async def test_non_streaming_echo_is_verbatim_with_usage(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        client = anthropic_client(srv)
        message = await in_thread(
            client.messages.create, model="echo", max_tokens=100, messages=MESSAGES
        )
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "echo"
    [block] = message.content
    assert block.type == "text" and block.text == USER_TEXT
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.output_tokens == len(TOKENS)
    assert message.usage.input_tokens > 0


async def test_streaming_through_the_sdk_helper(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        recorder = Recorder()
        client = anthropic_client(srv, recorder)
        events, message, text = await in_thread(
            _helper_stream,
            client,
            model="echo",
            max_tokens=100,
            messages=MESSAGES,
            system="You repeat.",
        )
    raw = recorder.last.events
    check_anthropic(raw)
    assert recorder.last.headers["content-type"].startswith("text/event-stream")
    assert [e.event for e in raw[:3]] == ["message_start", "ping", "content_block_start"]
    assert [e.event for e in raw[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert text == USER_TEXT
    assert anthropic_text(raw) == USER_TEXT
    deltas = [d["delta"]["text"] for d in data_of(raw) if d["type"] == "content_block_delta"]
    assert deltas == TOKENS
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(TOKENS)
    assert message.id == f"msg_{recorder.last.headers['x-rawsse-stream-id']}"
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"


async def test_raw_event_iteration_with_stream_true(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = anthropic_client(srv)

        def run() -> list[Any]:
            with client.messages.create(
                model="lorem", max_tokens=4, messages=MESSAGES, stream=True
            ) as stream:
                return list(stream)

        events = await in_thread(run)
    types = [e.type for e in events]
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops the ping
    delta = events[-2]
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 4


async def test_tool_use_stream_and_complete(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = anthropic_client(srv, recorder)
        _, streamed, _ = await in_thread(
            _helper_stream,
            client,
            model="echo",
            max_tokens=100,
            messages=MESSAGES,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "other_tool"},
            extra_body={"rawsse": {"answer": "tool_call"}},
        )
        raw = recorder.exchanges[0].events
        complete = await in_thread(
            client.messages.create,
            model="echo",
            max_tokens=100,
            messages=MESSAGES,
            tools=TOOLS,
            extra_body={"rawsse": {"answer": "tool_call"}},
        )
    check_anthropic(raw)
    pieces = [
        d["delta"]["partial_json"]
        for d in data_of(raw)
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert len(pieces) > 2  # the input arrives in several pieces

    assert streamed.stop_reason == "tool_use"
    [block] = streamed.content
    assert block.type == "tool_use"
    assert block.name == "other_tool"  # the tool the request forced
    assert block.id.startswith("toolu_")
    assert block.input == {"query": USER_TEXT}

    assert complete.stop_reason == "tool_use"
    [block] = complete.content
    assert block.type == "tool_use" and block.name == "search_docs"  # the first tool
    assert block.input == {"query": USER_TEXT}


async def test_tool_result_round_trip_is_accepted(anyio_backend: str) -> None:
    """A follow-up turn carrying the tool_use and its tool_result validates and is echoed."""
    messages: Any = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "search_docs", "input": {"q": 1}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found it"},
                {"type": "text", "text": "and now answer"},
            ],
        },
    ]
    async with demo_server() as srv:
        message = await in_thread(
            anthropic_client(srv).messages.create,
            model="echo",
            max_tokens=50,
            messages=messages,
            tools=TOOLS,
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == "and now answer"


async def test_thinking_then_text(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = anthropic_client(srv, recorder)
        _, streamed, text = await in_thread(
            _helper_stream,
            client,
            model="echo",
            max_tokens=100,
            messages=MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 1024},
            extra_body={"rawsse": {"answer": "reasoning"}},
        )
        complete = await in_thread(
            client.messages.create,
            model="echo",
            max_tokens=100,
            messages=MESSAGES,
            extra_body={"rawsse": {"answer": "reasoning"}},
        )
    check_anthropic(recorder.exchanges[0].events)
    for message in (streamed, complete):
        thinking, answer = message.content
        assert thinking.type == "thinking" and thinking.thinking == REASONING
        assert answer.type == "text" and answer.text == USER_TEXT
        assert message.usage.output_tokens == len(echo_tokens(REASONING)) + len(TOKENS)
    assert text == USER_TEXT


async def test_max_tokens_stop_reason(anyio_backend: str) -> None:
    async with demo_server() as srv:
        recorder = Recorder()
        client = anthropic_client(srv, recorder)
        _, lorem, text = await in_thread(
            _helper_stream, client, model="lorem", max_tokens=5, messages=MESSAGES
        )
        echo_cut = await in_thread(
            client.messages.create, model="echo", max_tokens=2, messages=MESSAGES
        )
    check_anthropic(recorder.exchanges[0].events)
    assert text == "Lorem ipsum dolor sit amet"
    assert lorem.stop_reason == "max_tokens"
    assert lorem.usage.output_tokens == 5
    assert echo_cut.content[0].text == "".join(TOKENS[:2])
    assert echo_cut.stop_reason == "max_tokens"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_client_on_asyncio(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        client = anthropic.AsyncAnthropic(
            base_url=srv.url, api_key=KEY, max_retries=0, timeout=10.0
        )
        async with client:
            async with client.messages.stream(
                model="echo", max_tokens=100, messages=MESSAGES
            ) as stream:
                text = "".join([piece async for piece in stream.text_stream])
                message = await stream.get_final_message()
            complete = await client.messages.create(model="lorem", max_tokens=3, messages=MESSAGES)
    assert text == USER_TEXT
    assert message.stop_reason == "end_turn"
    assert complete.stop_reason == "max_tokens"


# -- errors before the stream ------------------------------------------------------------------

INVALID_BODIES = [
    pytest.param({"temperature": 1.5}, "temperature", id="temperature"),
    pytest.param({"top_k": -1}, "top_k", id="top_k"),
    pytest.param({"messages": []}, "messages", id="messages-empty"),
    pytest.param({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role", id="role"),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
        "messages.0.content.0.type",
        id="block-type",
    ),
    pytest.param({"tool_choice": {"type": "bogus"}}, "tool_choice.type", id="tool_choice"),
    pytest.param({"thinking": {"type": "maybe"}}, "thinking.type", id="thinking"),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max_tokens"),
    pytest.param({"rawsse": {"answer": "poem"}}, "rawsse.answer", id="rawsse-answer"),
]


@pytest.mark.parametrize(("fields", "param"), INVALID_BODIES)
async def test_invalid_body_is_400_in_anthropic_shape(
    anyio_backend: str, fields: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": "echo", "max_tokens": 10, "messages": MESSAGES, **fields}
    async with demo_server(api_keys=(KEY,)) as srv:
        client = anthropic_client(srv)
        with pytest.raises(anthropic.BadRequestError) as info:
            await in_thread(
                client.messages.create,
                model=body.pop("model"),
                max_tokens=body.pop("max_tokens"),
                messages=body.pop("messages"),
                extra_body=body,
            )
    error = info.value
    assert error.status_code == 400
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert set(error.body["error"]) == {"type", "message"}
    assert error.body["error"]["type"] == "invalid_request_error"
    assert param in error.body["error"]["message"]


async def test_missing_max_tokens_and_version_are_400(anyio_backend: str) -> None:
    async with demo_server() as srv:
        body = anthropic_body()
        del body["max_tokens"]
        no_max = await post(srv, "/v1/messages", body, anthropic_headers())
        no_version = await post(srv, "/v1/messages", anthropic_body(), {})
        not_json = await request(
            srv, "POST", "/v1/messages", content=b"{", headers=anthropic_headers()
        )
    for answer in (no_max, no_version, not_json):
        assert answer.status == 400
        assert answer.json()["type"] == "error"
        assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in no_max.json()["error"]["message"]
    assert "anthropic-version" in no_version.json()["error"]["message"]


async def test_missing_and_wrong_key_are_401(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        missing = anthropic_client(srv, Recorder(strip_headers=("x-api-key", "authorization")))
        wrong = anthropic_client(srv, api_key="sk-wrong")
        with pytest.raises(anthropic.AuthenticationError) as no_key:
            await in_thread(missing.messages.create, model="echo", max_tokens=10, messages=MESSAGES)
        with pytest.raises(anthropic.AuthenticationError) as bad_key:
            await in_thread(
                wrong.messages.create, model="echo", max_tokens=10, messages=MESSAGES, stream=True
            )
        # Authorization: Bearer is accepted on this route too.
        ok = await post(srv, "/v1/messages", anthropic_body(), {**anthropic_headers(), **bearer()})
    for error in (no_key.value, bad_key.value):
        assert error.status_code == 401
        assert isinstance(error.body, dict)
        assert error.body["error"]["type"] == "authentication_error"
    assert ok.status == 200
    check_anthropic(ok.events)


async def test_unknown_model_is_404(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = anthropic_client(srv)
        with pytest.raises(anthropic.NotFoundError) as info:
            await in_thread(
                client.messages.create, model="claude-9", max_tokens=10, messages=MESSAGES
            )
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "claude-9" in info.value.body["error"]["message"]


async def test_oversized_body_is_413_in_anthropic_shape(anyio_backend: str) -> None:
    async with demo_server(max_body_bytes=2048) as srv:
        client = anthropic_client(srv)
        with pytest.raises(anthropic.APIStatusError) as info:
            await in_thread(
                client.messages.create,
                model="echo",
                max_tokens=10,
                messages=[{"role": "user", "content": "x" * 4096}],
            )
        ok = await in_thread(client.messages.create, model="echo", max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == 413
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "request_too_large"
    assert ok.content[0].text == USER_TEXT


async def test_wrong_method_is_405(anyio_backend: str) -> None:
    async with demo_server() as srv:
        answer = await get(srv, "/v1/messages")
    assert answer.status == 405
    assert "POST" in answer.headers["allow"]


# -- errors during the stream ----------------------------------------------------------------


async def test_failure_mid_stream_is_an_error_event(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = anthropic_client(srv)
        texts: list[str] = []

        def consume() -> None:
            with client.messages.stream(
                model="lorem",
                max_tokens=20,
                messages=MESSAGES,
                extra_body={"rawsse": {"fail_after": 3, "fail_status": 529}},
            ) as stream:
                texts.extend(stream.text_stream)

        with pytest.raises(anthropic.APIStatusError) as info:
            await in_thread(consume)
        raw = await post(
            srv,
            "/v1/messages",
            anthropic_body("lorem", rawsse={"fail_after": 3}),
            anthropic_headers(),
        )
    assert "".join(texts) == "Lorem ipsum dolor"
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "overloaded_error"
    assert "fail_after" in info.value.body["error"]["message"]

    assert raw.status == 200
    events = raw.events
    check_anthropic(events)
    assert events[-1].event == "error"
    assert data_of(events)[-1] == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "Injected failure after 3 tokens (rawsse.fail_after).",
        },
    }
    assert anthropic_text(events) == "Lorem ipsum dolor"


async def test_status_commit_gives_an_early_failure_its_status(anyio_backend: str) -> None:
    async with chat_server(status_commit_s=2.0) as srv:
        client = anthropic_client(srv)
        with pytest.raises(anthropic.RateLimitError) as info:
            await in_thread(
                _helper_stream,
                client,
                model="lorem",
                max_tokens=10,
                messages=MESSAGES,
                extra_body={"rawsse": {"fail_after": 0, "fail_status": 429}},
            )
        _, message, text = await in_thread(
            _helper_stream, client, model="echo", max_tokens=100, messages=MESSAGES
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert text == USER_TEXT
    assert message.stop_reason == "end_turn"


# -- disconnects and heartbeats ----------------------------------------------------------------


async def test_sdk_closing_the_stream_stops_the_backend(anyio_backend: str) -> None:
    probe = ProbeModel(tokens=10_000, delay_s=0.005)
    baseline = METRICS.snapshot()
    async with chat_server({"probe": probe}) as srv:
        client = anthropic_client(srv)

        def read_three() -> list[str]:
            got = []
            with client.messages.stream(model="probe", max_tokens=10, messages=MESSAGES) as s:
                for piece in s.text_stream:
                    got.append(piece)
                    if len(got) == 3:
                        break
            return got

        got = await in_thread(read_three)
        with anyio.fail_after(5):
            await probe.closed.wait()
        await wait_streams_idle(baseline["streams_active"])
    assert got == ["t0 ", "t1 ", "t2 "]
    assert not probe.completed
    assert METRICS.client_disconnects_total == baseline["client_disconnects_total"] + 1


async def test_heartbeats_are_ping_events(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    async with demo_server() as srv:
        body = anthropic_body(rawsse={"ttft_s": 0.4})
        async with open_stream(srv, "/v1/messages", body=body, headers=anthropic_headers()) as s:
            events = await s.read_to_end()
    pings = [i for i, e in enumerate(events) if e.event == "ping"]
    assert len(pings) >= 4  # the one after message_start, then heartbeats
    assert all(events[i].id is None for i in pings[1:])  # heartbeats carry no id
    assert all(data_of([events[i]]) == [{"type": "ping"}] for i in pings)
    first_delta = next(i for i, e in enumerate(events) if e.event == "content_block_delta")
    assert all(i < first_delta for i in pings)
    check_anthropic(events)
    assert anthropic_text(events) == USER_TEXT


async def test_sdk_reads_through_heartbeats(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    async with demo_server() as srv:
        recorder = Recorder()
        _, message, text = await in_thread(
            _helper_stream,
            anthropic_client(srv, recorder),
            model="echo",
            max_tokens=100,
            messages=MESSAGES,
            extra_body={"rawsse": {"ttft_s": 0.25}},
        )
    assert sum(e.event == "ping" for e in recorder.last.events) >= 3
    check_anthropic(recorder.last.events)
    assert text == USER_TEXT
    assert message.stop_reason == "end_turn"
