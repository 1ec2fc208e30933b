"""Large and oversized events, and a fresh parser for each connection.

An event over ``max_event_bytes`` is skipped (reported as ``EventSkipped``) and the stream goes
on; the cap can be raised far enough for a 7 MB event, sent in one chunk or split in two.
Against a scripted server and rawsse's own, on asyncio and trio.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from rawsse.client import EventSkipped, EventSource, Opened, connect
from rawsse.parser import DEFAULT_MAX_EVENT_BYTES
from rawsse.sse import Event
from tests.client.client_support import OVERSIZED_BYTES, kinds
from tests.tools_support import LAST_CHUNK, RawRequest, chunk, plain_response, raw_server, sse_head

pytestmark = pytest.mark.anyio

SEVEN_MB = 7 * 1000 * 1000
ROOMY = 8 * 1024 * 1024  # a cap that allows a 7 MB event


def _big_frame(size: int) -> bytes:
    return b"id: big\ndata: " + b"x" * size + b"\n\n"


@pytest.mark.parametrize("chunks", [1, 2])
async def test_a_7_mb_event_when_the_cap_allows_it(chunks: int) -> None:
    frame = _big_frame(SEVEN_MB)
    cut = len(frame) // 2 if chunks == 2 else len(frame)  # two chunks: cut inside the data line
    body = chunk(frame[:cut]) + (chunk(frame[cut:]) if chunks == 2 else b"")

    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + body + chunk(b"data: small\n\n") + LAST_CHUNK)

    async with raw_server(handler) as server:
        with anyio.fail_after(30):
            async with connect(server.url(), max_event_bytes=ROOMY) as response:
                events = [event async for event in response]
            async with EventSource(server.url(), max_event_bytes=ROOMY, reconnect=False) as source:
                from_source = [event async for event in source]
    assert [(len(e.data), e.id) for e in events] == [(SEVEN_MB, "big"), (5, None)]
    assert events[0].data == "x" * SEVEN_MB
    assert from_source == events


async def test_a_7_mb_event_when_the_cap_allows_it_rawsse(app_url: str) -> None:
    with anyio.fail_after(30):
        async with EventSource(
            f"{app_url}/big?size={SEVEN_MB}", max_event_bytes=ROOMY, reconnect=False
        ) as source:
            events = [event async for event in source]
    assert [(len(e.data), e.id) for e in events] == [(SEVEN_MB, "big"), (5, None)]
    assert source.skipped_events == 0


async def test_the_default_cap_skips_a_7_mb_event_and_goes_on() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + chunk(_big_frame(SEVEN_MB)) + chunk(b"data: small\n\n"))
        await s.send(LAST_CHUNK)

    async with raw_server(handler) as server:
        with anyio.fail_after(30):
            async with connect(server.url()) as response:
                items = [item async for item in response.records()]
    assert kinds(items) == ["EventSkipped", "Event"]
    assert items[1] == Event("small")
    skipped = items[0]
    assert isinstance(skipped, EventSkipped)
    assert skipped.discarded_bytes > DEFAULT_MAX_EVENT_BYTES
    assert response.parser.skipped_events == 1


async def test_an_oversized_event_then_small_ones() -> None:
    frames = [
        b"data: small-1\n\n",
        b"event: huge\nid: big\ndata: " + b"y" * 3000 + b"\ndata: more\n\n",
        b"data: small-2\n\n",
        b"data: small-3\n\n",
    ]

    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.index == 0:
            await s.send(sse_head() + b"".join(chunk(frame) for frame in frames) + LAST_CHUNK)
        else:
            await s.send(plain_response("204 No Content", "text/plain", b""))

    async with (
        raw_server(handler) as server,
        EventSource(server.url(), max_event_bytes=1000, retry_ms=1) as source,
    ):
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    events = [r for r in records if isinstance(r, Event)]
    assert [e.data for e in events] == ["small-1", "small-2", "small-3"]
    skipped = [r for r in records if isinstance(r, EventSkipped)]
    assert [(s.event, s.id) for s in skipped] == [("huge", "big")]
    assert skipped[0].discarded_bytes >= 3000
    assert kinds(records)[:4] == ["Opened", "Event", "EventSkipped", "Event"]
    assert source.skipped_events == 1
    # the skipped event's id counted: the reconnection does not ask for it again
    assert server.requests[1].headers["last-event-id"] == "big"


async def test_an_oversized_event_then_small_ones_rawsse(app_url: str) -> None:
    async with EventSource(f"{app_url}/oversized", reconnect=False) as source:
        with anyio.fail_after(20):
            records = [record async for record in source.records()]
    assert kinds(records) == ["Opened", "Event", "EventSkipped", "Event", "Event"]
    assert [r.data for r in records if isinstance(r, Event)] == ["small-1", "small-2", "small-3"]
    skipped = records[2]
    assert isinstance(skipped, EventSkipped)
    assert skipped.id == "big"
    assert skipped.discarded_bytes >= OVERSIZED_BYTES
    assert source.skipped_events == 1
    assert source.last_event_id == "big"


async def test_the_cap_is_exact_and_settable() -> None:
    # the cap counts data values plus a line feed each: "x" * 99 + LF is 100 bytes
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        frames = b"data: " + b"x" * 99 + b"\n\ndata: " + b"x" * 100 + b"\n\ndata: end\n\n"
        await s.send(sse_head() + chunk(frames) + LAST_CHUNK)

    async with raw_server(handler) as server, connect(server.url(), max_event_bytes=100) as r:
        items = [item async for item in r.records()]
    assert kinds(items) == ["Event", "EventSkipped", "Event"]
    assert items[0] == Event("x" * 99)


async def test_each_connection_gets_a_fresh_parser() -> None:
    # The first connection ends inside an oversized event, after retry and id: the next
    # connection's small events must all arrive (a parser left failed by the first
    # connection once failed every later one), with the last event ID and retry carried on.
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.index == 0:
            await s.send(sse_head() + chunk(b"retry: 5\nid: 1\ndata: a\n\n"))
            await s.send(chunk(b"data: " + b"z" * 5000))  # never ended: cut by the close
        elif request.index == 1:
            await s.send(sse_head() + chunk(b"\xef\xbb\xbfdata: b\n\ndata: c\n\n") + LAST_CHUNK)
        else:
            await s.send(plain_response("204 No Content", "text/plain", b""))

    async with (
        raw_server(handler) as server,
        EventSource(server.url(), max_event_bytes=1000) as source,
    ):
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    # a BOM at the start of the new connection's stream is stripped again
    assert [r.data for r in records if isinstance(r, Event)] == ["a", "b", "c"]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "1", "1"]
    assert source.retry_ms == 5
    opened = [r for r in records if isinstance(r, Opened)]
    assert [o.last_event_id for o in opened] == ["", "1"]
    assert source.skipped_events == 0  # cut by the end of the stream: discarded, not skipped
