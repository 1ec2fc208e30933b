"""EventStream over real sockets: heartbeats, retry, disconnects, slow clients, exits, broadcast."""

from __future__ import annotations

import socket
import time
from typing import Any

import anyio
import pytest

from rawsse._http.connection import Connection
from rawsse.app import App
from rawsse.broadcast import Broadcast
from rawsse.metrics import METRICS
from rawsse.parser import EventParser
from rawsse.request import Request
from rawsse.response import Response
from rawsse.sse import encode_event
from rawsse.stream import EventStream, StreamEnd
from tests.support import (
    RawClient,
    blocking_socket,
    get,
    parse_responses,
    recv_some,
    reset_close,
    running_server,
)

pytestmark = pytest.mark.anyio


def sse_app(state: dict[str, Any]) -> App:
    app = App()

    @app.get("/ping")
    async def ping(req: Request) -> Response:
        return Response("pong")

    @app.get("/paced")
    async def paced(req: Request) -> EventStream:
        count = int(req.query.get("n", "5"))
        delay = float(req.query.get("delay", "0"))
        heartbeat = float(req.query.get("hb", "0"))

        async def source() -> Any:
            try:
                for i in range(count):
                    yield {"i": i}
                    await anyio.sleep(delay)
            finally:
                state["source_closed"] = True

        retry = req.query.get("retry")
        stream = EventStream(
            source(),
            heartbeat_s=heartbeat,
            retry_ms="off" if retry == "off" else None if retry is None else int(retry),
            heartbeat="ping" if req.query.get("ping") else "comment",
        )
        stream.on_close(lambda reason: state.setdefault("reasons", []).append(reason))
        return stream

    @app.get("/silent")
    async def silent(req: Request) -> EventStream:
        async def producer(stream: EventStream) -> None:
            try:
                await stream.send("hello")
                await anyio.sleep(60)
            finally:
                state["silent_cancelled"] = True

        return EventStream(producer, heartbeat_s=0)

    @app.get("/flood")
    async def flood(req: Request) -> EventStream:
        async def producer(stream: EventStream) -> None:
            payload = "x" * 4000
            for i in range(100_000):
                await stream.send(payload, id=str(i))
                state["queued_max"] = max(state.get("queued_max", 0), stream.bytes_queued)

        return EventStream(producer, heartbeat_s=0, send_timeout_s=0.5)

    @app.get("/fails")
    async def fails(req: Request) -> EventStream:
        async def producer(stream: EventStream) -> None:
            await stream.send("one")
            raise RuntimeError("backend exploded")

        return EventStream(producer, error_frame=lambda exc: encode_event("failed", event="error"))

    @app.get("/forever")
    async def forever(req: Request) -> EventStream:
        async def producer(stream: EventStream) -> None:
            state["stop_reason_while_running"] = stream.stop_reason
            try:
                for i in range(100_000):
                    await stream.send(str(i))
                    await anyio.sleep(0.01)
            finally:
                state["stop_reason"] = stream.stop_reason

        lifetime = float(req.query.get("lifetime", "0")) or None
        return EventStream(
            producer,
            max_lifetime_s=lifetime,
            lifetime_jitter=0,
            farewell=lambda reason: encode_event(reason, event="bye"),
        )

    @app.get("/swallow")
    async def swallow(req: Request) -> EventStream:
        async def producer(stream: EventStream) -> None:
            for _ in range(1000):
                try:
                    await anyio.sleep(0.05)
                except BaseException:
                    state["swallowed"] = state.get("swallowed", 0) + 1
                if stream.disconnected:
                    state["noticed"] = True
                    return

        return EventStream(producer, heartbeat_s=0)

    return app


def events_of(body: bytes) -> list[Any]:
    return EventParser().feed(body)


async def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_stream_headers_and_events() -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state)) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/paced?n=3"))
            [response] = parse_responses(await client.read_until_close())
    assert response.header("content-type") == "text/event-stream; charset=utf-8"
    assert response.header("cache-control") == "no-cache, no-transform"
    assert response.header("x-accel-buffering") == "no"
    assert response.header("content-encoding") is None
    assert [e.data for e in events_of(response.body)] == ['{"i":0}', '{"i":1}', '{"i":2}']
    assert state["reasons"] == ["complete"]


async def test_retry_line_comes_before_first_event() -> None:
    async with running_server(sse_app({})) as server, RawClient.connect(server.port) as client:
        await client.send(get("/paced?n=2&retry=2500"))
        [response] = parse_responses(await client.read_until_close())
    assert response.body.startswith(b"retry: 2500\n\n")
    parser = EventParser()
    parser.feed(response.body)
    assert parser.retry == 2500


async def test_server_default_retry_and_a_stream_that_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(EventStream, "default_retry_ms", 700)
    async with running_server(sse_app({})) as server:
        bodies = []
        for query in ("", "&retry=off", "&retry=90"):
            async with RawClient.connect(server.port) as client:
                await client.send(get(f"/paced?n=1{query}"))
                [response] = parse_responses(await client.read_until_close())
                bodies.append(response.body)
    assert bodies == [
        b'retry: 700\n\ndata: {"i":0}\n\n',
        b'data: {"i":0}\n\n',
        b'retry: 90\n\ndata: {"i":0}\n\n',
    ]


async def test_heartbeat_cadence_and_reset_on_data() -> None:
    async with running_server(sse_app({})) as server:
        # Events every 0.3 s, heartbeat after 0.2 s of silence: one heartbeat between events.
        async with RawClient.connect(server.port) as client:
            await client.send(get("/paced?n=4&delay=0.3&hb=0.2"))
            [response] = parse_responses(await client.read_until_close())
        frames = response.body.split(b"\n\n")[:-1]
        kinds = ["hb" if f == b":" else "ev" for f in frames]
        assert kinds[:7] == ["ev", "hb", "ev", "hb", "ev", "hb", "ev"], kinds
        # Fast events (no silence): no heartbeat at all.
        async with RawClient.connect(server.port) as client:
            await client.send(get("/paced?n=20&delay=0.02&hb=0.2"))
            [response] = parse_responses(await client.read_until_close())
        assert b":\n\n" not in response.body


async def test_named_ping_heartbeat() -> None:
    async with running_server(sse_app({})) as server, RawClient.connect(server.port) as client:
        await client.send(get("/paced?n=2&delay=0.35&hb=0.2&ping=1"))
        [response] = parse_responses(await client.read_until_close())
    pings = [e for e in events_of(response.body) if e.event == "ping"]
    assert pings and pings[0].data == '{"type": "ping"}'


async def test_heartbeat_interval_zero_is_off() -> None:
    async with running_server(sse_app({})) as server:
        before = METRICS.heartbeats_total
        async with RawClient.connect(server.port) as client:
            await client.send(get("/paced?n=2&delay=0.3&hb=0"))
            [response] = parse_responses(await client.read_until_close())
        assert b":\n\n" not in response.body
        assert METRICS.heartbeats_total == before
        # No heartbeat timer: what is left are connections' read deadlines.
        assert all(isinstance(t, Connection) for t in server.reactor.timer_targets())


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_disconnect_while_streaming_closes_source(how: str) -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state)) as server:
        before = METRICS.client_disconnects_total
        sock = blocking_socket(server.port)
        sock.sendall(get("/paced?n=100000&delay=0.01"))
        await recv_some(sock)
        if how == "rst":
            reset_close(sock)
        else:
            sock.close()
        await wait_for(lambda: state.get("source_closed"))
        await wait_for(lambda: state.get("reasons") == ["disconnected"])
        assert METRICS.client_disconnects_total == before + 1
        await wait_for(lambda: server.stats.connections_active == 0)


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_disconnect_while_silent_cancels_producer(how: str) -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state)) as server:
        sock = blocking_socket(server.port)
        sock.sendall(get("/silent"))
        seen = b""
        while b"hello" not in seen:
            seen += await recv_some(sock)
        started = time.monotonic()
        if how == "rst":
            reset_close(sock)
        else:
            sock.close()
        await wait_for(lambda: state.get("silent_cancelled"), timeout=2)
        assert time.monotonic() - started < 1.0  # promptly, not at the next write


async def test_swallowed_cancellation_leaves_no_zombie() -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state)) as server:
        sock = blocking_socket(server.port)
        sock.sendall(get("/swallow"))
        await recv_some(sock)
        sock.close()
        await wait_for(lambda: state.get("noticed"))
        await wait_for(lambda: server.stats.connections_active == 0)


async def test_client_that_never_reads_is_bounded_and_evicted() -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state), write_buffer_bytes=64 * 1024) as server:
        before = METRICS.slow_client_evictions_total
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(get("/flood"))
        # Never read. The producer must be throttled, then the client evicted.
        await wait_for(lambda: METRICS.slow_client_evictions_total == before + 1, timeout=5)
        # At most the high-water mark plus one frame was ever queued in the process.
        assert state["queued_max"] <= 64 * 1024 + 4100
        await wait_for(lambda: server.stats.connections_active == 0)
        sock.close()


async def test_exception_in_producer_ends_with_error_frame_and_terminator() -> None:
    async with running_server(sse_app({})) as server, RawClient.connect(server.port) as client:
        await client.send(get("/fails"))
        [response] = parse_responses(await client.read_until_close())
    events = events_of(response.body)
    assert [(e.event, e.data) for e in events] == [("message", "one"), ("error", "failed")]


async def test_shutdown_sends_farewell_and_terminator() -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state), shutdown_grace_s=3) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/forever"))
            await client.read_until(b"data: 3\n\n")
            server.shutdown()
            data = await client.read_until_close()
    [response] = parse_responses(data)  # asserts the chunked terminator is there
    assert [e.event for e in events_of(response.body)][-1] == "bye"
    assert events_of(response.body)[-1].data == "shutdown"
    # The producer could tell, in its finally, why it was stopped.
    assert (state["stop_reason_while_running"], state["stop_reason"]) == (None, "shutdown")


async def test_max_lifetime_ends_stream_cleanly() -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state)) as server, RawClient.connect(server.port) as client:
        await client.send(get("/forever?lifetime=0.2"))
        [response] = parse_responses(await client.read_until_close())
    assert events_of(response.body)[-1].event == "bye"
    assert events_of(response.body)[-1].data == "lifetime"
    assert state["stop_reason"] == "lifetime"


async def test_producer_sees_a_client_that_left() -> None:
    state: dict[str, Any] = {}
    async with running_server(sse_app(state)) as server:
        async with RawClient.connect(server.port) as client:
            await client.send(get("/forever"))
            await client.read_until(b"data: 3\n\n")
        await wait_for(lambda: "stop_reason" in state)
    assert state["stop_reason"] == "disconnected"


async def test_broadcast_one_encode_many_subscribers_one_stalled() -> None:
    channel = Broadcast()
    app = App()

    @app.get("/sub")
    async def sub(req: Request) -> EventStream:
        return channel.subscribe(heartbeat_s=0, send_timeout_s=0.5)

    async with running_server(app) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(get("/sub"))
        readers = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(5)]
        for reader in readers:
            await reader.send(get("/sub"))
        await wait_for(lambda: channel.subscriber_count == 6)
        # Enough to overflow the stalled client's socket buffers (loopback buffers are large).
        payload = "y" * 16000
        received = [bytearray() for _ in readers]

        async def read_all(i: int) -> None:
            with anyio.move_on_after(5):
                while (
                    not received[i].endswith(b"\n\n\r\n")
                    or b"id: 399\n" not in received[i][-17000:]
                ):
                    received[i] += await readers[i].receive()

        async with anyio.create_task_group() as tg:
            for i in range(len(readers)):
                tg.start_soon(read_all, i)
            for i in range(400):
                channel.publish(payload, id=str(i))
                await anyio.sleep(0.005)
        assert [r.count(b"id: 399\n") for r in received] == [1] * len(readers), [
            len(r) for r in received
        ]
        # The stalled subscriber is evicted on its own.
        await wait_for(lambda: channel.subscriber_count == 5, timeout=4)
        channel.close()
        for reader in readers:
            with anyio.fail_after(3):
                try:
                    while True:
                        await reader.receive()
                except anyio.EndOfStream:
                    pass
            await reader.aclose()
        stalled.close()


def test_stream_end_reasons_are_documented() -> None:
    reasons: tuple[StreamEnd, ...] = (
        "complete",
        "disconnected",
        "evicted",
        "error",
        "shutdown",
        "lifetime",
    )
    assert len(set(reasons)) == 6
