"""End to end, Gemini dialect: google-genai against a real rawsse server, on asyncio and trio.

google-genai's sync methods run in a worker thread (its ``aio`` client, on asyncio only, in
``test_async_client_on_asyncio``). Gemini frames are ``data:`` only, with no ``id:`` line and
no ``[DONE]`` (google-genai's reader would choke on either): the checks here say so.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from rawsse.metrics import METRICS
from rawsse.sse import Event
from rawsse.stream import EventStream
from tests.chat_support import (
    KEY,
    USER_TEXT,
    ChatServer,
    ProbeModel,
    Recorder,
    chat_server,
    demo_server,
    echo_tokens,
    gemini_client,
    in_thread,
    open_stream,
    post,
    request,
    wait_streams_idle,
)

pytestmark = pytest.mark.anyio

TOKENS = echo_tokens(USER_TEXT)
REASONING = "Thinking about the answer before giving it."
STREAM_PATH = "/v1beta/models/{model}:streamGenerateContent?alt=sse"


def config(**fields: Any) -> types.GenerateContentConfig:
    """A generation config; ``rawsse`` goes to the demo models through ``extra_body``."""
    rawsse = fields.pop("rawsse", None)
    if rawsse is not None:
        fields["http_options"] = types.HttpOptions(extra_body={"rawsse": rawsse})
    return types.GenerateContentConfig(**fields)


def gemini_body(text: str = USER_TEXT, **fields: Any) -> dict[str, Any]:
    """A ``generateContent`` body in the REST API's camelCase."""
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **fields}


def check_gemini(events: list[Event], *, error: bool = False) -> list[dict[str, Any]]:
    """Gemini's stream rules as google-genai reads them; returns the decoded chunks.

    Every event is an unnamed ``data:`` JSON object without ``id:``; no ``[DONE]``; unless
    the stream failed, each candidate's last chunk has a ``finishReason`` and the last chunk
    has ``usageMetadata`` (only the last).
    """
    chunks = []
    for event in events:
        assert event.event == "message" and event.id is None, event
        chunk = json.loads(event.data)
        assert isinstance(chunk, dict)
        chunks.append(chunk)
    if error:
        assert set(chunks[-1]) == {"error"}
        assert all("error" not in chunk for chunk in chunks[:-1])
        return chunks
    assert all("usageMetadata" not in chunk for chunk in chunks[:-1])
    usage = chunks[-1]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    finished: set[int] = set()
    for chunk in chunks:
        for candidate in chunk["candidates"]:
            assert candidate["index"] not in finished, "a chunk after the candidate finished"
            assert candidate["content"]["role"] == "model"
            if "finishReason" in candidate:
                finished.add(candidate["index"])
    seen = {c["index"] for chunk in chunks for c in chunk["candidates"]}
    assert finished == seen
    return chunks


def streamed_text(chunks: list[Any], index: int = 0) -> str:
    """The concatenated non-thought text of candidate ``index`` (SDK response objects)."""
    return "".join(
        part.text or ""
        for chunk in chunks
        for candidate in chunk.candidates or []
        if candidate.index == index
        for part in candidate.content.parts or []
        if not part.thought
    )


def _stream(client: genai.Client, model: str, **kwargs: Any) -> list[Any]:
    return list(client.models.generate_content_stream(model=model, contents=USER_TEXT, **kwargs))


# -- answers ---------------------------------------------------------------------------------


async def test_generate_content_echo_is_verbatim_with_usage(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        recorder = Recorder()
        client = gemini_client(srv, recorder)
        response = await in_thread(client.models.generate_content, model="echo", contents=USER_TEXT)
    assert recorder.last.path == "/v1beta/models/echo:generateContent"
    assert recorder.last.request_headers["x-goog-api-key"] == KEY
    assert response.text == USER_TEXT
    [candidate] = response.candidates or []
    assert candidate.finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None
    assert usage.candidates_token_count == len(TOKENS)
    assert usage.total_token_count == (usage.prompt_token_count or 0) + len(TOKENS)
    assert response.model_version == "echo"


async def test_stream_generate_content(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        recorder = Recorder()
        chunks = await in_thread(_stream, gemini_client(srv, recorder), "echo")
    exchange = recorder.last
    assert exchange.path == "/v1beta/models/echo:streamGenerateContent"
    assert exchange.query == "alt=sse"
    assert exchange.headers["content-type"].startswith("text/event-stream")
    raw = check_gemini(exchange.events)
    assert b"id:" not in bytes(exchange.body) and b"[DONE]" not in bytes(exchange.body)
    pieces = [c["candidates"][0]["content"]["parts"][0]["text"] for c in raw]
    assert pieces[:-1] == TOKENS and pieces[-1] == ""
    assert streamed_text(chunks) == USER_TEXT
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == len(TOKENS)
    assert all(chunk.response_id == exchange.headers["x-rawsse-stream-id"] for chunk in chunks)


async def test_v1_paths_and_key_in_query(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        recorder = Recorder()
        client = gemini_client(srv, recorder, api_version="v1")
        chunks = await in_thread(_stream, client, "lorem", config=config(max_output_tokens=3))
        response = await in_thread(client.models.generate_content, model="echo", contents="a b")
        by_query = await post(srv, f"/v1/models/echo:generateContent?key={KEY}", gemini_body("q"))
        by_header = await post(
            srv, STREAM_PATH.format(model="echo"), gemini_body("h"), {"x-goog-api-key": KEY}
        )
    assert [e.path for e in recorder.exchanges] == [
        "/v1/models/lorem:streamGenerateContent",
        "/v1/models/echo:generateContent",
    ]
    assert streamed_text(chunks) == "Lorem ipsum dolor"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.text == "a b"
    assert by_query.status == 200
    assert by_query.json()["candidates"][0]["content"]["parts"] == [{"text": "q"}]
    assert by_header.status == 200
    check_gemini(by_header.events)


async def test_candidate_count(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = gemini_client(srv)
        chunks = await in_thread(_stream, client, "echo", config=config(candidate_count=2))
        response = await in_thread(
            client.models.generate_content,
            model="echo",
            contents=USER_TEXT,
            config=config(candidate_count=2),
        )
    assert streamed_text(chunks, 0) == USER_TEXT
    assert streamed_text(chunks, 1) == USER_TEXT
    # Interleaved: candidate 0 then 1 for each token.
    order = [c.candidates[0].index for c in chunks[:4]]
    assert order == [0, 1, 0, 1]
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == 2 * len(TOKENS)
    assert [c.index for c in response.candidates or []] == [0, 1]
    assert all(c.content.parts[0].text == USER_TEXT for c in response.candidates or [])


async def test_function_call(anyio_backend: str) -> None:
    tools = [
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(
                    name="search_docs",
                    description="Search the docs.",
                    parameters=types.Schema(
                        type=types.Type.OBJECT,
                        properties={"query": types.Schema(type=types.Type.STRING)},
                    ),
                )
            ]
        )
    ]
    options = config(
        tools=tools,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        rawsse={"answer": "tool_call"},
    )
    async with demo_server() as srv:
        recorder = Recorder()
        client = gemini_client(srv, recorder)
        chunks = await in_thread(_stream, client, "echo", config=options)
        response = await in_thread(
            client.models.generate_content, model="echo", contents=USER_TEXT, config=options
        )
    check_gemini(recorder.exchanges[0].events)
    calls = [
        part.function_call
        for chunk in chunks
        for part in chunk.candidates[0].content.parts or []
        if part.function_call
    ]
    [call] = calls  # Gemini sends a call whole, not in fragments
    assert call.name == "search_docs"
    assert call.args == {"query": USER_TEXT}
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    [call] = response.function_calls or []
    assert call.name == "search_docs" and call.args == {"query": USER_TEXT}


async def test_thought_parts(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = gemini_client(srv)
        options = config(rawsse={"answer": "reasoning"})
        chunks = await in_thread(_stream, client, "echo", config=options)
        response = await in_thread(
            client.models.generate_content, model="echo", contents=USER_TEXT, config=options
        )
    thoughts = "".join(
        part.text or ""
        for chunk in chunks
        for part in chunk.candidates[0].content.parts or []
        if part.thought
    )
    assert thoughts == REASONING
    assert streamed_text(chunks) == USER_TEXT
    thought, answer = response.candidates[0].content.parts
    assert (thought.thought, thought.text) == (True, REASONING)
    assert answer.text == USER_TEXT and not answer.thought


async def test_max_output_tokens(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = gemini_client(srv)
        response = await in_thread(
            client.models.generate_content,
            model="echo",
            contents=USER_TEXT,
            config=config(max_output_tokens=2),
        )
    assert response.text == "".join(TOKENS[:2])
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
# google-genai's aio client subclasses aiohttp's ClientSession, which aiohttp deprecates.
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
async def test_async_client_on_asyncio(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        client = genai.Client(
            api_key=KEY, http_options=types.HttpOptions(base_url=srv.url, api_version="v1beta")
        )
        try:
            response = await client.aio.models.generate_content(model="echo", contents=USER_TEXT)
            stream = await client.aio.models.generate_content_stream(
                model="lorem", contents=USER_TEXT, config=config(max_output_tokens=4)
            )
            chunks = [chunk async for chunk in stream]
        finally:
            await client.aio.aclose()
    assert response.text == USER_TEXT
    assert streamed_text(chunks) == "Lorem ipsum dolor sit"


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"contents": []}, "contents", id="contents-empty"),
        pytest.param(
            {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]},
            "contents[0].role",
            id="role",
        ),
        pytest.param(
            gemini_body(generationConfig={"temperature": 5}),
            "generationConfig.temperature",
            id="temperature",
        ),
        pytest.param(
            gemini_body(generationConfig={"candidateCount": 0}),
            "generationConfig.candidateCount",
            id="candidateCount",
        ),
        pytest.param(gemini_body(rawsse={"ttft_s": -1}), "rawsse.ttft_s", id="rawsse-ttft"),
    ],
)
async def test_invalid_body_is_400_in_google_shape(
    anyio_backend: str, body: dict[str, Any], param: str
) -> None:
    async with demo_server() as srv:
        answer = await post(srv, STREAM_PATH.format(model="echo"), body)
    assert answer.status == 400
    assert answer.json()["error"]["code"] == 400
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert param in answer.json()["error"]["message"]


async def test_invalid_config_through_the_sdk_is_client_error(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = gemini_client(srv)
        with pytest.raises(genai_errors.ClientError) as info:
            await in_thread(_stream, client, "echo", config=config(temperature=5))
        with pytest.raises(genai_errors.ClientError) as top_p:
            await in_thread(
                client.models.generate_content,
                model="echo",
                contents=USER_TEXT,
                config=config(top_p=2),
            )
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert "generationConfig.temperature" in (info.value.message or "")
    assert top_p.value.code == 400


async def test_missing_and_wrong_key_are_401(anyio_backend: str) -> None:
    async with demo_server(api_keys=(KEY,)) as srv:
        missing = gemini_client(srv, Recorder(strip_headers=("x-goog-api-key",)))
        wrong = gemini_client(srv, api_key="wrong-key")
        with pytest.raises(genai_errors.ClientError) as no_key:
            await in_thread(missing.models.generate_content, model="echo", contents="x")
        with pytest.raises(genai_errors.ClientError) as bad_key:
            await in_thread(_stream, wrong, "echo")
        bad_query = await post(srv, "/v1beta/models/echo:generateContent?key=nope", gemini_body())
    for error in (no_key.value, bad_key.value):
        assert (error.code, error.status) == (401, "UNAUTHENTICATED")
    assert bad_query.status == 401
    assert bad_query.json()["error"]["status"] == "UNAUTHENTICATED"


async def test_unknown_model_is_404(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = gemini_client(srv)
        with pytest.raises(genai_errors.ClientError) as info:
            await in_thread(_stream, client, "gemini-9")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    assert "gemini-9" in (info.value.message or "")


async def test_oversized_body_is_413(anyio_backend: str) -> None:
    async with demo_server(max_body_bytes=2048) as srv:
        client = gemini_client(srv)
        with pytest.raises(genai_errors.ClientError) as info:
            await in_thread(client.models.generate_content, model="echo", contents="x" * 4096)
        ok = await in_thread(client.models.generate_content, model="echo", contents="fine")
    assert info.value.code == 413
    assert ok.text == "fine"


async def test_oversized_body_413_is_in_google_shape(anyio_backend: str) -> None:
    async with demo_server(max_body_bytes=2048) as srv:
        answer = await post(srv, STREAM_PATH.format(model="echo"), gemini_body("x" * 4096))
    assert answer.status == 413
    assert answer.json()["error"]["code"] == 413


async def test_wrong_method_is_405(anyio_backend: str) -> None:
    async with demo_server() as srv:
        answer = await request(srv, "GET", "/v1beta/models/echo:generateContent")
    assert answer.status == 405
    assert "POST" in answer.headers["allow"]


async def test_failure_mid_stream_is_an_error_chunk(anyio_backend: str) -> None:
    async with demo_server() as srv:
        client = gemini_client(srv)
        received: list[Any] = []

        def consume() -> None:
            stream = client.models.generate_content_stream(
                model="lorem",
                contents=USER_TEXT,
                config=config(max_output_tokens=20, rawsse={"fail_after": 3, "fail_status": 503}),
            )
            received.extend(stream)

        with pytest.raises(genai_errors.ServerError) as info:
            await in_thread(consume)
        raw = await post(
            srv,
            STREAM_PATH.format(model="lorem"),
            gemini_body(generationConfig={"maxOutputTokens": 20}, rawsse={"fail_after": 3}),
        )
    assert (info.value.code, info.value.status) == (503, "UNAVAILABLE")
    assert streamed_text(received) == "Lorem ipsum dolor"
    assert raw.status == 200
    chunks = check_gemini(raw.events, error=True)
    assert chunks[-1]["error"] == {
        "code": 500,
        "message": "Injected failure after 3 tokens (rawsse.fail_after).",
        "status": "INTERNAL",
    }


async def test_status_commit_gives_an_early_failure_its_status(anyio_backend: str) -> None:
    async with chat_server(status_commit_s=2.0) as srv:
        client = gemini_client(srv)
        with pytest.raises(genai_errors.ClientError) as info:
            await in_thread(
                _stream,
                client,
                "lorem",
                config=config(rawsse={"fail_after": 0, "fail_status": 429}),
            )
        chunks = await in_thread(_stream, client, "echo")
    assert (info.value.code, info.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert streamed_text(chunks) == USER_TEXT


async def test_disconnect_stops_the_backend(anyio_backend: str) -> None:
    probe = ProbeModel(tokens=10_000, delay_s=0.005)
    baseline = METRICS.snapshot()
    async with chat_server({"probe": probe}) as srv:
        async with open_stream(srv, STREAM_PATH.format(model="probe"), body=gemini_body()) as s:
            await s.read_events(3)
        with anyio.fail_after(5):
            await probe.closed.wait()
        await wait_streams_idle(baseline["streams_active"])
    assert not probe.completed
    assert METRICS.client_disconnects_total == baseline["client_disconnects_total"] + 1


async def _heartbeat_stream(srv: ChatServer) -> tuple[bytes, list[Event]]:
    body = gemini_body(rawsse={"ttft_s": 0.3})
    async with open_stream(srv, STREAM_PATH.format(model="echo"), body=body) as stream:
        events = await stream.read_to_end()
    return stream.raw, events


async def test_heartbeats_are_blank_lines_the_sdk_ignores(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventStream, "default_heartbeat_s", 0.05)
    async with demo_server() as srv:
        raw, events = await _heartbeat_stream(srv)
    # No opening frame in Gemini: the wait for the first token is all heartbeats.
    head = raw[: raw.index(b"data:")]
    assert head == b"\n" * len(head) and len(head) >= 3
    check_gemini(events)
    async with demo_server() as srv:
        recorder = Recorder()
        chunks = await in_thread(
            _stream, gemini_client(srv, recorder), "echo", config=config(rawsse={"ttft_s": 0.2})
        )
    assert bytes(recorder.last.body).startswith(b"\n\n")
    assert streamed_text(chunks) == USER_TEXT
