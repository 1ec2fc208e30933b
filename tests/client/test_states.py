"""What the client lets a caller see: connection states, comments, and a restart on demand.

``on_state`` and ``records()`` show a browser's ``open`` and ``error`` as ``Opened``,
``ConnectionLost`` (with the reason and the wait before the next attempt) and ``GaveUp``;
``records()`` also shows comments; ``restart()`` reconnects at once with the last event ID.
Against a scripted server and rawsse's own, on asyncio and trio.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from rawsse.client import (
    Comment,
    ConnectionLost,
    EventSource,
    GaveUp,
    Opened,
    SourceState,
    SSEConnectionError,
    SSETimeoutError,
    connect,
)
from rawsse.sse import Event
from tests.client.client_support import kinds
from tests.tools_support import (
    LAST_CHUNK,
    RawRequest,
    chunk,
    plain_response,
    raw_server,
    reset,
    sse_head,
)

pytestmark = pytest.mark.anyio

NO_CONTENT = plain_response("204 No Content", "text/plain", b"")


# ---------------------------------------------------------------- connection states


async def test_a_dropped_connection_is_visible_and_typed() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.index == 0:
            await s.send(sse_head() + chunk(b"retry: 20\nid: 1\ndata: a\n\n"))
            await reset(s)  # a TCP reset mid-stream
        elif request.index == 1:
            await s.send(sse_head() + chunk(b"id: 2\ndata: b\n\n") + LAST_CHUNK)
        else:
            await s.send(NO_CONTENT)

    states: list[SourceState] = []
    async with (
        raw_server(handler) as server,
        EventSource(server.url(), on_state=states.append, jitter=0.5) as source,
    ):
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    assert kinds(records) == [
        "Opened", "Event", "ConnectionLost", "Opened", "Event", "ConnectionLost",
    ]  # fmt: skip
    assert states == [r for r in records if not isinstance(r, Event)]
    first, lost, again, ended = (r for r in records if not isinstance(r, Event))
    assert first == Opened(server.url(), 0, "")
    assert isinstance(lost, ConnectionLost)
    assert isinstance(lost.error, SSEConnectionError)
    assert lost.reason == str(lost.error)
    assert 0.02 <= lost.retry_s <= 0.02 * 1.5  # the server's retry, with up to 50 % jitter
    assert lost.attempt == 1
    assert again == Opened(server.url(), 1, "1")
    assert isinstance(ended, ConnectionLost)
    assert ended.error is None
    assert ended.reason == "the server ended the stream"
    # plain iteration gives the events only
    assert source.reconnects == 2


async def test_a_read_timeout_is_visible() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        if request.index == 0:
            await s.send(sse_head() + chunk(b"data: a\n\n"))
            await anyio.sleep(10)  # silent: the client's read timeout fires
        else:
            await s.send(NO_CONTENT)

    async with (
        raw_server(handler) as server,
        EventSource(server.url(), read_timeout_s=0.1, retry_ms=1) as source,
    ):
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    assert kinds(records) == ["Opened", "Event", "ConnectionLost"]
    lost = records[2]
    assert isinstance(lost, ConnectionLost)
    assert isinstance(lost.error, SSETimeoutError)
    assert "0.1 s" in lost.reason


async def test_giving_up_is_visible_then_raised() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.aclose()  # read the request, answer nothing

    states: list[SourceState] = []
    async with raw_server(handler) as server:
        source = EventSource(server.url(), retry_ms=1, max_reconnects=2, on_state=states.append)
        records: list[object] = []

        async def collect() -> None:
            async for record in source.records():
                records.append(record)  # noqa: PERF401 - kept when the iteration raises

        with anyio.fail_after(10), pytest.raises(SSEConnectionError, match="gave up after 2"):
            await collect()
    assert kinds(records) == ["ConnectionLost", "ConnectionLost", "GaveUp"]
    assert states == records
    assert [r.attempt for r in records if isinstance(r, ConnectionLost)] == [1, 2]
    assert [r.retry_s > 0 for r in records if isinstance(r, ConnectionLost)] == [True, True]
    gave_up = records[-1]
    assert isinstance(gave_up, GaveUp)
    assert isinstance(gave_up.error.__cause__, SSEConnectionError)
    assert len(server.requests) == 3
    # closed for good: nothing more, no more connections
    with pytest.raises(StopAsyncIteration):
        await source.__anext__()
    assert len(server.requests) == 3


async def test_reconnects_are_visible_rawsse(app_url: str) -> None:
    states: list[SourceState] = []
    async with EventSource(app_url + "/ticks", on_state=states.append, jitter=0) as source:
        with anyio.fail_after(10):
            events = [event async for event in source]
    assert events == [Event("a", id="1"), Event("b", id="2")]
    assert states == [
        Opened(app_url + "/ticks", 0, ""),
        ConnectionLost("the server ended the stream", 0.08, 1),
        Opened(app_url + "/ticks", 1, "1"),
        ConnectionLost("the server ended the stream", 0.08, 1),
    ]  # then 204: the stream is over


async def test_a_read_timeout_is_visible_rawsse(app_url: str) -> None:
    async with EventSource(
        app_url + "/held", read_timeout_s=0.2, retry_ms=1, max_reconnects=1
    ) as source:
        with anyio.fail_after(10):
            records = [record async for record in source.records()]
    # a, silence (timeout), reconnect with Last-Event-ID 1: b, the end, then 204
    assert kinds(records) == [
        "Opened", "Event", "ConnectionLost", "Opened", "Event", "ConnectionLost",
    ]  # fmt: skip
    assert isinstance(records[2], ConnectionLost)
    assert isinstance(records[2].error, SSETimeoutError)


# ---------------------------------------------------------------- comments


async def test_comments_are_records_in_stream_order() -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        frames = b":Hello\n: ping\n\ndata: x\n\n:\n:World\r\n"
        await s.send(sse_head() + chunk(frames[:9]) + chunk(frames[9:]) + LAST_CHUNK)

    async with raw_server(handler) as server:
        async with connect(server.url()) as response:
            items = [item async for item in response.records()]
        async with connect(server.url()) as response:
            events = [event async for event in response]
        async with EventSource(server.url(), reconnect=False) as source:
            records = [record async for record in source.records()]
    assert items == [Comment("Hello"), Comment(" ping"), Event("x"), Comment(""), Comment("World")]
    assert events == [Event("x")]  # plain iteration: events only
    assert [r for r in records if not isinstance(r, (Opened, ConnectionLost))] == items


async def test_comments_are_records_rawsse(app_url: str) -> None:
    async with connect(app_url + "/comments") as response:
        items = [item async for item in response.records()]
    assert items == [Comment(" hello"), Event("x"), Comment(" ping")]


# ---------------------------------------------------------------- restart


async def held(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    """id 1 then a held stream; after Last-Event-ID 1, id 2 and the end; then 204."""
    last = request.headers.get("last-event-id")
    if last is None:
        await s.send(sse_head() + chunk(b"id: 1\ndata: a\n\n"))
        await anyio.sleep(30)  # held open until the client leaves
    elif last == "1":
        await s.send(sse_head() + chunk(b"id: 2\ndata: b\n\n") + LAST_CHUNK)
    else:
        await s.send(NO_CONTENT)


async def test_restart_reconnects_at_once_with_the_last_event_id() -> None:
    async with raw_server(held) as server, EventSource(server.url(), retry_ms=60_000) as source:
        records = []
        with anyio.fail_after(10):
            async for record in source.records():
                records.append(record)
                if record == Event("a", id="1"):
                    await source.restart()  # between events, from the iterating task
                if record == Event("b", id="2"):
                    break
    assert kinds(records) == ["Opened", "Event", "ConnectionLost", "Opened", "Event"]
    assert records[2] == ConnectionLost("restarted", 0.0, 0)
    assert records[3] == Opened(server.url(), 1, "1")
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "1"]


async def test_restart_from_another_task_interrupts_a_read() -> None:
    got_a = anyio.Event()
    records: list[object] = []

    async def consume(source: EventSource) -> None:
        async for record in source.records():
            records.append(record)
            if record == Event("a", id="1"):
                got_a.set()  # then blocks reading the held stream
            if record == Event("b", id="2"):
                return

    async with raw_server(held) as server, EventSource(server.url(), retry_ms=60_000) as source:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, source)
                await got_a.wait()
                await source.restart()
    assert kinds(records) == ["Opened", "Event", "ConnectionLost", "Opened", "Event"]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "1"]


async def test_aclose_from_another_task_ends_the_iteration() -> None:
    got_a = anyio.Event()
    events: list[Event] = []

    async def consume(source: EventSource) -> None:
        async for event in source:
            events.append(event)
            got_a.set()

    async with raw_server(held) as server:
        source = EventSource(server.url())
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, source)
                await got_a.wait()
                await source.aclose()
    assert events == [Event("a", id="1")]
    assert len(server.requests) == 1


async def test_restart_rawsse(app_url: str) -> None:
    states: list[SourceState] = []
    async with EventSource(app_url + "/held", retry_ms=60_000, on_state=states.append) as source:
        events = []
        with anyio.fail_after(10):
            async for event in source:
                events.append(event)
                if event.id == "1":
                    await source.restart()
                else:
                    break
    assert events == [Event("a", id="1"), Event("b", id="2")]
    assert states == [
        Opened(app_url + "/held", 0, ""),
        ConnectionLost("restarted", 0.0, 0),
        Opened(app_url + "/held", 1, "1"),
    ]
