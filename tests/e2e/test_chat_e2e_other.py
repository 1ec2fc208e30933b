"""End to end, the ChatGPT-web ``event: delta`` dialect and the generic envelope, both backends.

No vendor SDK reads these, so the clients are httpx-sse (as a web client author would use) and
raw sockets; the frames are checked against the contracts in
``rawsse/chat/chatgpt_web_dialect.py`` and ``rawsse/chat/envelope_dialect.py``: a ChatGPT-web
stream is replayed operation by operation into the final message, an envelope stream is
checked frame by frame (all seven keys, progress, the done frame).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from rawsse.metrics import METRICS
from rawsse.sse import Event
from rawsse.stream import EventStream
from tests.chat_support import (
    KEY,
    TLS_CONTEXT,
    USER_TEXT,
    ChatServer,
    ProbeModel,
    bearer,
    chat_server,
    data_of,
    demo_server,
    echo_tokens,
    get,
    int_ids,
    open_stream,
    openai_body,
    post,
    request,
    stream_id_of,
    wait_streams_idle,
)

pytestmark = pytest.mark.anyio

WEB = "/backend-api/conversation"
ENVELOPE = "/v1/envelope/completions"
TOKENS = echo_tokens(USER_TEXT)
REASONING = "Thinking about the answer before giving it."
ENVELOPE_KEYS = {"id", "type", "model", "text", "progress", "context", "metadata"}


async def sse_events(srv: ChatServer, path: str, body: Any, **headers: str) -> list[Event]:
    """POST ``body`` and read the whole stream with httpx-sse, as ``rawsse.sse.Event``s."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=10.0, verify=TLS_CONTEXT) as client:
        async with aconnect_sse(client, "POST", path, json=body, headers=headers) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            return [Event(sse.data, sse.event, sse.id or None) async for sse in source.aiter_sse()]


# -- ChatGPT web -----------------------------------------------------------------------------


def apply_web_deltas(events: list[Event]) -> tuple[dict[str, Any], list[Any]]:
    """Replay a ChatGPT-web stream's operations; returns the final state and the other data.

    ``delta`` frames are operations ``{"p": path, "o": op, "v": value}``; a frame with only
    ``v`` repeats the previous path and operation (how the web app shortens text appends).
    """
    assert events[0].event == "delta_encoding" and json.loads(events[0].data) == "v1"
    state: dict[str, Any] = {}
    others: list[Any] = []
    last: tuple[str, str] | None = None

    def node(path: str) -> tuple[Any, str]:
        *parents, leaf = path.strip("/").split("/")
        target: Any = state
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        return target, leaf

    def apply(path: str, op: str, value: Any) -> None:
        if path == "" and op == "add":
            state.update(value)
            return
        if path == "" and op == "patch":
            for item in value:
                apply(item["p"], item["o"], item["v"])
            return
        parent, leaf = node(path)
        key: Any = int(leaf) if isinstance(parent, list) else leaf
        if op == "replace":
            parent[key] = value
        elif op == "append" and isinstance(value, str):
            parent[key] += value
        elif op == "append" and isinstance(value, dict):
            parent[key].update(value)
        else:
            raise AssertionError(f"unknown operation {op!r} at {path!r}")

    for event in events[1:]:
        value = json.loads(event.data) if event.data != "[DONE]" else event.data
        if event.event != "delta":
            assert event.event == "message"
            others.append(value)
            continue
        if set(value) == {"v"}:
            assert last is not None, "a bare value before any path"
            apply(*last, value["v"])
        else:
            last = (value["p"], value["o"])
            apply(value["p"], value["o"], value["v"])
            if value["p"] == "" and value["o"] == "add":
                last = None
    return state, others


async def test_web_stream_builds_the_message(anyio_backend: str) -> None:
    async with demo_server() as srv:
        events = await sse_events(srv, WEB, openai_body())
    assert int_ids(events) == list(range(1, len(events) + 1))
    kinds = [e.event for e in events]
    assert kinds[:3] == ["delta_encoding", "delta", "delta"]
    # The first text piece names its path and operation; the later ones are bare values.
    first_text = json.loads(events[2].data)
    assert first_text == {"p": "/message/content/parts/0", "o": "append", "v": TOKENS[0]}
    bare = [json.loads(e.data) for e in events[3 : 3 + len(TOKENS) - 1]]
    assert bare == [{"v": token} for token in TOKENS[1:]]

    state, others = apply_web_deltas(events)
    message = state["message"]
    assert message["content"]["parts"] == [USER_TEXT]
    assert message["status"] == "finished_successfully"
    assert message["end_turn"] is True
    assert message["author"] == {"role": "assistant"}
    assert message["metadata"]["finish_details"] == {"type": "stop"}
    assert message["metadata"]["model_slug"] == "echo"
    conversation = state["conversation_id"]
    assert others == [
        {"type": "message_stream_complete", "conversation_id": conversation},
        "[DONE]",
    ]


async def test_web_max_tokens_and_dropped_parts(anyio_backend: str) -> None:
    async with demo_server() as srv:
        cut = await sse_events(srv, WEB, openai_body("lorem", max_tokens=3))
        reasoning = await sse_events(srv, WEB, openai_body(rawsse={"answer": "reasoning"}))
        tool = await sse_events(srv, WEB, openai_body(rawsse={"answer": "tool_call"}))
    state, _ = apply_web_deltas(cut)
    assert state["message"]["content"]["parts"] == ["Lorem ipsum dolor"]
    assert state["message"]["metadata"]["finish_details"] == {"type": "max_tokens"}
    # Reasoning and tool calls have no place in this format: only answer text is rendered.
    state, _ = apply_web_deltas(reasoning)
    assert state["message"]["content"]["parts"] == [USER_TEXT]
    state, _ = apply_web_deltas(tool)
    assert state["message"]["content"]["parts"] == [""]
    assert state["message"]["status"] == "finished_successfully"


async def test_web_failure_mid_stream(anyio_backend: str) -> None:
    async with demo_server() as srv:
        events = await sse_events(
            srv, WEB, openai_body("lorem", max_tokens=20, rawsse={"fail_after": 2})
        )
    state, others = apply_web_deltas(events)
    assert state["message"]["content"]["parts"] == ["Lorem ipsum"]
    assert state["message"]["status"] == "in_progress"  # never finished
    assert others == [
        {
            "error": "Injected failure after 2 tokens (rawsse.fail_after).",
            "conversation_id": state["conversation_id"],
        },
        "[DONE]",
    ]


async def test_web_errors_in_openai_shape(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,), max_body_bytes=4096) as srv:
        several = await post(srv, WEB, openai_body(n=2), bearer())
        invalid = await post(srv, WEB, openai_body(temperature=9), bearer())
        missing = await post(srv, WEB, openai_body())
        wrong = await post(srv, WEB, openai_body(), bearer("sk-wrong"))
        unknown = await post(srv, WEB, openai_body("gpt-9"), bearer())
        large = await post(srv, WEB, openai_body(text="x" * 8192), bearer())
        method = await get(srv, WEB)
    assert (several.status, several.json()["error"]["param"]) == (400, "n")
    assert (invalid.status, invalid.json()["error"]["param"]) == (400, "temperature")
    assert (missing.status, missing.json()["error"]["code"]) == (401, "missing_api_key")
    assert (wrong.status, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    assert (unknown.status, unknown.json()["error"]["code"]) == (404, "model_not_found")
    assert (large.status, large.json()["error"]["code"]) == (413, "request_too_large")
    assert method.status == 405


async def test_web_disconnect_stops_the_backend(anyio_backend: str) -> None:
    probe = ProbeModel(tokens=10_000, delay_s=0.005)
    baseline = METRICS.snapshot()
    async with chat_server({"probe": probe}) as srv:
        async with open_stream(srv, WEB, body=openai_body("probe")) as stream:
            await stream.read_events(5)
        with anyio.fail_after(5):
            await probe.closed.wait()
        await wait_streams_idle(baseline["streams_active"])
    assert not probe.completed


async def test_web_stream_resumes(anyio_backend: str) -> None:
    async with demo_server() as srv:
        async with open_stream(srv, WEB, body=openai_body()) as stream:
            events = await stream.read_to_end()
            stream_id = stream_id_of(stream)
        resumed = await get(srv, f"/v1/chat/completions/{stream_id}/events", {"last-event-id": "3"})
    assert resumed.events == events[3:]
    state, _ = apply_web_deltas(events[:3] + resumed.events)
    assert state["message"]["content"]["parts"] == [USER_TEXT]


async def test_web_and_envelope_heartbeats_are_not_events(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone comment line: httpx-sse dispatches nothing for it, even after ``id:`` lines."""
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.03)
    body = openai_body(rawsse={"ttft_s": 0.1, "token_delay_s": 0.07})
    before = METRICS.heartbeats_total
    streams: dict[str, list[Event]] = {}
    async with demo_server() as srv:

        async def read(path: str, srv: ChatServer = srv) -> None:
            streams[path] = await sse_events(srv, path, body)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, WEB)
            tg.start_soon(read, ENVELOPE)
    web, envelope = streams[WEB], streams[ENVELOPE]
    assert METRICS.heartbeats_total >= before + 6
    assert all(event.data for event in web + envelope)
    state, _ = apply_web_deltas(web)
    assert state["message"]["content"]["parts"] == [USER_TEXT]
    assert envelopes(envelope)[-1]["text"] == USER_TEXT


@pytest.mark.parametrize("path", [WEB, ENVELOPE])
async def test_streaming_first_routes_stream_without_the_flag(
    anyio_backend: str, path: str
) -> None:
    body = openai_body()
    del body["stream"]
    async with demo_server() as srv:
        answer = await post(srv, path, body)
    assert answer.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize("path", [WEB, ENVELOPE])
async def test_streaming_first_routes_answer_json_when_told_not_to_stream(
    anyio_backend: str, path: str
) -> None:
    async with demo_server() as srv:
        answer = await post(srv, path, openai_body(stream=False))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    if path == WEB:
        assert body["message"]["content"]["parts"] == [USER_TEXT]
        assert body["message"]["status"] == "finished_successfully"
        assert body["conversation_id"].startswith("conv-")
    else:
        assert (body["type"], body["text"], body["progress"]) == ("done", USER_TEXT, len(TOKENS))
        assert body["metadata"] == {"finish_reason": "stop"}


# -- what every route shares -----------------------------------------------------------------

CHAT_ROUTES = [
    ("/v1/chat/completions", "openai"),
    ("/v1/messages", "anthropic"),
    ("/v1beta/models/echo:generateContent", "gemini"),
    (WEB, "openai"),
    (ENVELOPE, "openai"),
]


@pytest.mark.parametrize(("path", "shape"), CHAT_ROUTES)
async def test_a_body_not_declared_as_json_is_415_in_the_vendor_shape(
    anyio_backend: str, path: str, shape: str
) -> None:
    body = json.dumps(openai_body(stream=False)).encode()
    headers = {"anthropic-version": "2023-06-01"}
    not_json = ("text/plain", "application/x-www-form-urlencoded")
    async with demo_server() as srv:
        refused = [
            await request(srv, "POST", path, content=body, headers={**headers, "content-type": t})
            for t in not_json
        ]
        accepted = [
            await request(srv, "POST", path, content=body, headers={**headers, **extra})
            for extra in ({"content-type": "Application/JSON; charset=utf-8"}, {})
        ]
    for answer, content_type in zip(refused, not_json, strict=True):
        assert answer.status == 415
        message = f"Unsupported Content-Type '{content_type}'"
        error = answer.json()
        if shape == "openai":
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["code"] == "unsupported_media_type"
        elif shape == "anthropic":
            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
        else:
            assert (error["error"]["code"], error["error"]["status"]) == (415, "INVALID_ARGUMENT")
        assert error["error"]["message"].startswith(message)
    # JSON with parameters or in any case, and a body with no type at all, are read as JSON
    # (the body is OpenAI's, so only the routes that take OpenAI bodies answer 200).
    assert all(answer.status != 415 for answer in accepted)
    if shape == "openai":
        assert [answer.status for answer in accepted] == [200, 200]


# -- the generic envelope --------------------------------------------------------------------


def envelopes(events: list[Event]) -> list[dict[str, Any]]:
    """Check the envelope rules common to every stream; return the objects.

    Every frame is ``event: message`` with an ``id:`` 1, 2, 3 ...; every object has exactly
    the seven keys and the stream's id and model; ``progress`` never decreases; the first is
    ``meta``, the last (only the last) is ``done``.
    """
    assert int_ids(events) == list(range(1, len(events) + 1))
    values = data_of(events)
    assert all(event.event == "message" for event in events)
    assert all(set(value) == ENVELOPE_KEYS for value in values)
    assert len({(value["id"], value["model"]) for value in values}) == 1
    progress = [value["progress"] for value in values]
    assert progress == sorted(progress)
    assert values[0]["type"] == "meta"
    assert [value["type"] == "done" for value in values] == [False] * (len(values) - 1) + [True]
    return values


async def test_envelope_text_stream(anyio_backend: str) -> None:
    async with demo_server() as srv:
        events = await sse_events(srv, ENVELOPE, openai_body(max_tokens=100))
    values = envelopes(events)
    start, *middle, done = values
    assert start["context"]["max_tokens"] == 100 and start["context"]["prompt_tokens"] > 0
    assert set(start["metadata"]) == {"created"}
    assert [v["type"] for v in middle] == ["text"] * len(TOKENS)
    assert [v["text"] for v in middle] == TOKENS
    assert [v["progress"] for v in middle] == list(range(1, len(TOKENS) + 1))
    assert done["text"] == USER_TEXT
    assert done["metadata"] == {"finish_reason": "stop"}
    usage = done["context"]["usage"]
    assert usage["completion_tokens"] == len(TOKENS) == done["progress"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_envelope_reasoning_and_tool_call_are_meta_frames(anyio_backend: str) -> None:
    tools = [{"type": "function", "function": {"name": "search_docs"}}]
    async with demo_server() as srv:
        reasoning = envelopes(
            await sse_events(srv, ENVELOPE, openai_body(rawsse={"answer": "reasoning"}))
        )
        tool = envelopes(
            await sse_events(
                srv, ENVELOPE, openai_body(tools=tools, rawsse={"answer": "tool_call"})
            )
        )
    thoughts = [v["metadata"]["reasoning"] for v in reasoning[1:-1] if v["type"] == "meta"]
    assert "".join(thoughts) == REASONING
    assert reasoning[-1]["text"] == USER_TEXT

    fragments = [v["metadata"]["tool_call"] for v in tool[1:-1]]
    assert all(v["type"] == "meta" for v in tool[1:-1])
    assert fragments[0]["name"] == "search_docs" and fragments[0]["id"]
    assert all(f["id"] is None and f["name"] is None for f in fragments[1:])
    assert json.loads("".join(f["arguments"] for f in fragments)) == {"query": USER_TEXT}
    assert tool[-1]["metadata"] == {"finish_reason": "tool_calls"}
    assert tool[-1]["text"] == ""


async def test_envelope_max_tokens_and_failure(anyio_backend: str) -> None:
    async with demo_server() as srv:
        cut = envelopes(await sse_events(srv, ENVELOPE, openai_body("lorem", max_tokens=4)))
        failed = envelopes(
            await sse_events(
                srv, ENVELOPE, openai_body("lorem", rawsse={"fail_after": 2, "fail_status": 503})
            )
        )
    assert cut[-1]["text"] == "Lorem ipsum dolor sit"
    assert cut[-1]["metadata"] == {"finish_reason": "length"}
    assert [v["text"] for v in failed if v["type"] == "text"] == ["Lorem", " ipsum"]
    assert failed[-1]["metadata"] == {
        "finish_reason": "error",
        "error": {
            "status": 503,
            "message": "Injected failure after 2 tokens (rawsse.fail_after).",
            "type": "server_error",
            "code": "injected_failure",
        },
    }
    assert failed[-1]["text"] is None


async def test_envelope_errors_in_openai_shape(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        several = await post(srv, ENVELOPE, openai_body(n=3), bearer())
        missing = await post(srv, ENVELOPE, openai_body())
        unknown = await post(srv, ENVELOPE, openai_body("gpt-9"), bearer())
        not_json = await request(srv, "POST", ENVELOPE, content=b"nope", headers=bearer())
    assert (several.status, several.json()["error"]["param"]) == (400, "n")
    assert missing.status == 401
    assert unknown.status == 404
    assert not_json.status == 400 and not_json.json()["error"]["type"] == "invalid_request_error"


async def test_envelope_status_commit(anyio_backend: str) -> None:
    async with chat_server(status_commit_s=1.0) as srv:
        early = await post(
            srv, ENVELOPE, openai_body("lorem", rawsse={"fail_after": 0, "fail_status": 502})
        )
    assert early.status == 502
    assert early.json()["error"]["code"] == "injected_failure"
