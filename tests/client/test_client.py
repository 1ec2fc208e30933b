"""The SSE client against real servers on 127.0.0.1, and its sans-io body decoders."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import anyio
import anyio.abc
import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.client import (
    BodyEnd,
    ChunkData,
    ChunkHeader,
    EventSource,
    Received,
    Sent,
    SSEConnectionError,
    SSEContentTypeError,
    SSEProtocolError,
    SSEStatusError,
    SSETimeoutError,
    WireRecord,
    connect,
)
from rawsse.client._body import ChunkedBody, CloseBody, LengthBody
from rawsse.client._exchange import Exchange, PreparedRequest, Target
from rawsse.sse import Event
from tests.tools_support import (
    LAST_CHUNK,
    RawRequest,
    chunk,
    closed_port,
    plain_response,
    raw_server,
    rawsse_server,
    sse_head,
)

pytestmark = pytest.mark.anyio


async def _drain(url: str, **options: object) -> list[Event]:
    async with EventSource(url, **options) as events:  # type: ignore[arg-type]
        return [event async for event in events]


# ---------------------------------------------------------------- sans-io body decoders


def _decode_all(decoder: ChunkedBody, data: bytes, step: int) -> bytes:
    out = b""
    for i in range(0, len(data), step):
        out += decoder.feed(data[i : i + step])
    return out


WIRE = b"5\r\nhello\r\n1a;name=value\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: yes\r\n\r\nNEXT"


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(WIRE)])
def test_chunked_body_any_split(step: int) -> None:
    fast = ChunkedBody()
    assert _decode_all(fast, WIRE, step) == b"hello" + b"x" * 26
    assert fast.done
    assert fast.unused == b"NEXT"
    framing: list[WireRecord] = []
    decoder = ChunkedBody(framing)
    assert _decode_all(decoder, WIRE, step) == b"hello" + b"x" * 26
    assert decoder.done
    assert decoder.unused == b"NEXT"
    headers = [r for r in framing if isinstance(r, ChunkHeader)]
    assert [(h.size, h.line) for h in headers] == [
        (5, b"5\r\n"),
        (26, b"1a;name=value\r\n"),
        (0, b"0\r\n"),
    ]
    data = [r for r in framing if isinstance(r, ChunkData)]
    assert sum(r.size for r in data) == 31
    assert sum(r.chunk_start for r in data) == 2
    assert sum(r.chunk_end for r in data) == 2
    assert framing[-1] == BodyEnd(b"Trailer: yes\r\n\r\n")


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nhello\r\n",  # not hex
        b"5\r\nhelloXX",  # data not followed by CRLF
        b"5\r\nhello\n0\r\n\r\n",  # bare LF after data
        b"0x5\r\nhello\r\n",  # int() would take it; HTTP does not
        b"-5\r\nhello\r\n",
        b"1_0\r\n",
        b"12345678901234567\r\n",  # 17 hex digits
        b"1" * 5000,  # a size line that never ends
    ],
)
@pytest.mark.parametrize("traced", [False, True])  # the fast path and the traced one
def test_chunked_body_rejects_malformed(wire: bytes, traced: bool) -> None:
    with pytest.raises(SSEProtocolError):
        ChunkedBody([] if traced else None).feed(wire)


def test_chunked_body_eof_before_last_chunk_is_an_error() -> None:
    decoder = ChunkedBody()
    assert decoder.feed(b"5\r\nhel") == b"hel"
    with pytest.raises(SSEConnectionError, match="before the end"):
        decoder.feed_eof()


def test_length_and_close_bodies() -> None:
    length = LengthBody(5)
    assert length.feed(b"hel") == b"hel"
    assert length.feed(b"lo!!") == b"lo"
    assert length.done
    assert length.unused == b"!!"
    short = LengthBody(5)
    short.feed(b"hi")
    with pytest.raises(SSEConnectionError, match="3 bytes"):
        short.feed_eof()
    close = CloseBody()
    assert close.feed(b"abc") == b"abc"
    assert not close.done
    close.feed_eof()
    assert close.done


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20),
)
def test_chunked_body_matches_h11(pieces: list[bytes], cuts: list[int]) -> None:
    # h11 frames the body (as a server would); our decoder must return the same payload,
    # however the wire is split into reads.
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.next_event()
    server.send(h11.Response(status_code=200, headers=[]))  # no length: h11 goes chunked
    wire = b""
    for piece in pieces:
        wire += server.send(h11.Data(data=piece))
    wire += server.send(h11.EndOfMessage())
    decoder = ChunkedBody()
    out = b""
    i = 0
    for cut in cuts:
        out += decoder.feed(wire[i : i + cut])
        i += cut
    out += decoder.feed(wire[i:])
    assert out == b"".join(pieces)
    assert decoder.done
    assert decoder.unused == b""


def _outcome(framing: list[WireRecord] | None, reads: list[bytes]) -> tuple[object, ...]:
    decoder = ChunkedBody(framing)
    payload = b""
    try:
        for data in reads:
            payload += decoder.feed(data)
    except SSEProtocolError as exc:
        return ("error", str(exc), payload)
    return (payload, decoder.done, decoder.unused, decoder.at_chunk_start)


_PIECES = st.sampled_from(
    [b"5\r\nhello\r\n", b"1a\r\n" + b"x" * 26 + b"\r\n", b"3;e=1\r\nabc\r\n", b"2 \t\r\nab\r\n",
     b"0\r\n\r\n", b"0\r\nT: 1\r\n\r\n", b"\r\n", b"\r", b"\n", b"5\r\n", b"zz\r\n", b"0x3\r\n",
     b"+3\r\n", b"3\r\n\r\n0\r\n", b"a\r\n0123\r\n1a\r\n", b"00000000000000005\r\n"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_PIECES | st.binary(max_size=12), max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=12),
    bulk=st.booleans(),
)
def test_chunked_fast_path_agrees_with_the_general_steps(
    pieces: list[bytes], cuts: list[int], bulk: bool
) -> None:
    # The traced decoder takes only the general steps; the untraced one puts the fast path
    # (one split for reads of 1 KiB and more, then whole chunks) in front of them. On any
    # bytes, however they are cut, both return the same payload or raise the same error.
    wire = b"".join(pieces)
    if bulk:  # enough whole chunks in front for the split to be tried
        wire = b"5\r\nhello\r\n" * 120 + wire
    reads, i = [], 0
    for cut in cuts:
        reads.append(wire[i : i + cut])
        i += cut
    reads.append(wire[i:])
    assert _outcome(None, reads) == _outcome([], reads)


def test_exchange_builds_request_and_reads_head_after_interim() -> None:
    target = Target.from_url("http://127.0.0.1:8000/v1/x?a=1")
    exchange = Exchange(PreparedRequest.build(target, "post", [("X-A", "b")], b'{"k":1}'))
    request = exchange.request_bytes
    assert request.startswith(b"POST /v1/x?a=1 HTTP/1.1\r\n")
    assert b"host: 127.0.0.1:8000\r\n" in request.lower()
    assert b"content-length: 7\r\n" in request.lower()
    assert request.endswith(b'\r\n\r\n{"k":1}')
    head = exchange.feed_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-")
    assert head is None
    head = exchange.feed_head(b"Type: text/event-stream; charset=utf-8\r\n\r\ndata: x")
    assert head is not None
    assert head.status == 200
    assert head.media_type == "text/event-stream"
    assert exchange.unused == b"data: x"
    assert isinstance(exchange.body_decoder(head), CloseBody)


def test_exchange_rejects_a_malformed_head() -> None:
    exchange = Exchange(PreparedRequest.build(Target.from_url("http://h/")))
    with pytest.raises(SSEProtocolError):
        exchange.feed_head(b"HTTP/1.1 2OO OK\r\n\r\n")


def test_target_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="http"):
        Target.from_url("ftp://example.org/")
    assert Target.from_url("https://example.org").authority == "example.org"
    assert Target.from_url("http://[::1]:81/p").authority == "[::1]:81"


def test_backoff_doubles_with_jitter_and_honours_retry() -> None:
    source = EventSource("http://127.0.0.1:1/", retry_ms=100, jitter=0.2, rng=random.Random(1))
    delays = []
    for failures in range(1, 5):
        source._failures = failures
        delays.append(source.backoff_s())
    for failures, delay in enumerate(delays, 1):
        base = 0.1 * 2 ** (failures - 1)
        assert base <= delay <= base * 1.2
    source._failures = 30
    assert source.backoff_s() <= 60 * 1.2


# ---------------------------------------------------------------- against test servers


async def test_get_stream_with_wire_hook() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head())
        await s.send(chunk(b"id: 7\nevent: tick\ndata: one\n") + chunk(b"data: two\n\n"))
        await anyio.sleep(0.01)
        await s.send(chunk(b": comment\n\ndata: three\r\ndata: lines\r\n\r\n") + LAST_CHUNK)

    records: list[tuple[float, WireRecord]] = []
    hook = lambda t, r: records.append((t, r))  # noqa: E731
    async with raw_server(handler) as server, connect(server.url(), hook=hook) as response:
        assert response.status == 200
        events = [event async for event in response]
    assert events == [
        Event("one\ntwo", event="tick", id="7"),
        Event("three\nlines"),
    ]
    assert response.parser.last_event_id == "7"
    request = server.requests[0]
    assert request.method == "GET"
    assert request.headers["accept"] == "text/event-stream"
    assert "last-event-id" not in request.headers
    kinds = [type(r).__name__ for _, r in records]
    assert kinds[0] == "Sent"
    assert kinds.count("ChunkHeader") == 4
    assert kinds[-1] == "BodyEnd"
    received = b"".join(r.data for _, r in records if isinstance(r, Received))
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(LAST_CHUNK)
    sent = [r for _, r in records if isinstance(r, Sent)]
    assert sent[0].data.startswith(b"GET /events HTTP/1.1\r\n")
    stamps = [t for t, _ in records]
    assert stamps == sorted(stamps)


async def test_post_json_and_headers() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + chunk(b"data: " + request.body + b"\n\n") + LAST_CHUNK)

    async with (
        raw_server(handler) as server,
        connect(
            server.url("/chat"), json={"q": "hé"}, headers={"Authorization": "Bearer k"}
        ) as response,
    ):
        events = [event.data async for event in response]
    assert events == ['{"q":"hé"}']
    request = server.requests[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer k"


async def test_reconnects_with_last_event_id_honours_retry_and_stops_on_204() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.index == 0:
            frames = b"retry: 150\nid: 1\ndata: a\n\n"
            await s.send(sse_head() + chunk(frames) + LAST_CHUNK)
        elif request.index == 1:
            await s.send(sse_head() + chunk(b"id: 2\ndata: b\n\ndata: half"))
            # cut short mid-stream: the client must reconnect, discarding "half"
        else:
            await s.send(plain_response("204 No Content", "text/plain", b""))

    async with raw_server(handler) as server, EventSource(server.url()) as events:
        started = time.monotonic()
        received = [event async for event in events]
        elapsed = time.monotonic() - started
    assert [e.data for e in received] == ["a", "b"]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "1", "2"]
    assert events.retry_ms == 150
    assert events.reconnects == 2
    # two waits of at least the server's retry time (150 ms), jitter at most +20 % each
    assert 0.3 <= elapsed < 2.0


async def test_204_at_once_means_no_events_and_no_reconnect() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(plain_response("204 No Content", "text/plain", b""))

    async with raw_server(handler) as server:
        assert await _drain(server.url(), retry_ms=10) == []
    assert len(server.requests) == 1


async def test_wrong_content_type_fails_without_reconnect() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(plain_response("200 OK", "application/json", b'{"not": "a stream"}'))

    async with raw_server(handler) as server:
        with pytest.raises(SSEContentTypeError) as info:
            await _drain(server.url(), retry_ms=10)
    assert info.value.content_type == "application/json"
    assert b"not" in info.value.body_excerpt
    assert "application/json" in str(info.value)
    assert len(server.requests) == 1


async def test_wrong_status_carries_status_and_body_excerpt() -> None:
    body = b'{"error": {"message": "model not found"}}' + b" " * 5000

    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(plain_response("404 Not Found", "application/json", body))

    async with raw_server(handler) as server:
        with pytest.raises(SSEStatusError) as info:
            async with connect(server.url(), json={}):
                pass  # pragma: no cover - never reached
        with pytest.raises(SSEStatusError):
            await _drain(server.url(), retry_ms=10)
    assert info.value.status == 404
    assert info.value.reason == "Not Found"
    assert info.value.body_excerpt.startswith(b'{"error"')
    assert len(info.value.body_excerpt) == 1024
    assert "404 Not Found" in str(info.value)
    assert "model not found" in str(info.value)
    assert len(server.requests) == 2  # one each: no reconnect on a status error


async def test_gives_up_after_max_reconnects() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.aclose()  # accept, read the request, answer nothing

    async with raw_server(handler) as server:
        with pytest.raises(SSEConnectionError, match="gave up after 3") as info:
            await _drain(server.url(), retry_ms=1, max_reconnects=3)
    assert len(server.requests) == 4  # the first attempt and three reconnections
    assert isinstance(info.value.__cause__, SSEConnectionError)


async def test_connection_refused() -> None:
    with pytest.raises(SSEConnectionError, match="cannot connect"):
        async with connect(f"http://127.0.0.1:{closed_port()}/", json={}):
            pass  # pragma: no cover - never reached


async def test_read_timeout() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head())
        await anyio.sleep(5)

    async with raw_server(handler) as server, connect(server.url(), read_timeout_s=0.1) as response:
        with pytest.raises(SSETimeoutError):
            await response.next_event()


async def test_malformed_chunk_is_a_protocol_error() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + b"zz\r\ndata: x\n\n\r\n")

    async with raw_server(handler) as server, connect(server.url()) as response:
        with pytest.raises(SSEProtocolError, match="chunk-size"):
            await response.next_event()


async def test_truncated_body_without_reconnect_raises() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + chunk(b"data: a\n\n") + b"20\r\ndata: cut")

    async with (
        raw_server(handler) as server,
        connect(server.url(), method="POST", json={}) as response,
    ):
        assert (await response.next_event()) == Event("a")
        with pytest.raises(SSEConnectionError, match="before the end"):
            await response.next_event()


async def test_close_delimited_and_event_too_large() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        if request.index == 0:
            await s.send(head + b"data: x\n\ndata: unfinished")
        else:
            await s.send(head + b"id: 1\ndata: " + b"y" * 2000 + b"\n\ndata: after\n\n")

    async with raw_server(handler) as server:
        async with connect(server.url()) as response:
            # the unfinished event at EOF is discarded (WHATWG)
            assert [event.data async for event in response] == ["x"]
        async with connect(server.url(), max_event_bytes=1000) as response:
            # the oversized event is skipped, the stream goes on
            assert [event.data async for event in response] == ["after"]
            assert response.parser.skipped_events == 1
            assert response.parser.last_event_id == "1"


# ---------------------------------------------------------------- against `rawsse serve`


@pytest.fixture(scope="module")
def rawsse_url() -> Iterator[str]:
    with rawsse_server("tests.tools_support:client_test_app") as url:
        yield url


async def test_rawsse_reconnect_retry_last_event_id_and_204(rawsse_url: str) -> None:
    started = time.monotonic()
    async with EventSource(rawsse_url + "/ticks") as events:
        received = [event async for event in events]
    elapsed = time.monotonic() - started
    assert received == [Event("a", id="1"), Event("b", id="2")]
    assert events.retry_ms == 80  # the server's retry: hint replaced the 3 s default
    assert events.reconnects == 2  # once to get "b", once more to be told 204
    assert events.last_event_id == "2"
    assert 0.16 <= elapsed < 2.0


async def test_rawsse_wrong_content_type_and_status(rawsse_url: str) -> None:
    with pytest.raises(SSEContentTypeError) as wrong_type:
        await _drain(rawsse_url + "/v1/models", retry_ms=10)
    assert wrong_type.value.content_type == "application/json"
    assert b'"object":"list"' in wrong_type.value.body_excerpt
    with pytest.raises(SSEStatusError) as wrong_status:
        await _drain(
            rawsse_url + "/v1/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}],
                  "stream": True},
        )  # fmt: skip
    assert wrong_status.value.status == 404
    assert b"no-such-model" in wrong_status.value.body_excerpt


async def test_rawsse_chat_stream_then_resume_across_reconnects(rawsse_url: str) -> None:
    request = {
        "model": "echo",
        "messages": [{"role": "user", "content": "one two three four"}],
        "stream": True,
    }
    async with connect(rawsse_url + "/v1/chat/completions", json=request) as response:
        stream_id = response.head.header("x-rawsse-stream-id")
        first = [await response.next_event(), await response.next_event()]
    # we left after two events; the server keeps producing (resume grace) and we resume with
    # Last-Event-ID. A read timeout shorter than the token delay (0.2 s) cuts each connection
    # while the server is quiet, so the client has to reconnect, again with Last-Event-ID.
    assert stream_id
    assert all(event is not None for event in first)
    last_id = first[-1].id if first[-1] is not None else None
    assert last_id == "2"
    resumed: list[Event] = []
    url = f"{rawsse_url}/v1/chat/completions/{stream_id}/events"
    async with EventSource(url, last_event_id=last_id, read_timeout_s=0.1, retry_ms=20) as events:
        async for event in events:
            resumed.append(event)
            if event.data == "[DONE]":
                break
    assert events.reconnects >= 1
    ids = [int(event.id or 0) for event in resumed]
    assert ids == list(range(3, 3 + len(resumed)))  # no gap, no repeat across reconnections
    text = "".join(
        json.loads(event.data)["choices"][0]["delta"].get("content", "")
        for event in [*first, *resumed]
        if event is not None and event.data != "[DONE]"
    )
    assert text == "one two three four"
