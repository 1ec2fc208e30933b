"""Ending many streams at once, and what an ended stream leaves behind, both backends.

- A server shutdown with many held streams ends every one with its farewell frame and the
  chunked terminator, then closes the connection (no new request cycle on it), and leaves the
  garbage collector as it found it.
- An ended stream (client gone, server shutdown, a chat stream too) leaves no reference cycle:
  its source and state are freed when it ends, with the cyclic collector off.
"""

from __future__ import annotations

import gc
import socket
import types
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from rawsse.app import App
from rawsse.chat.dialect import DialectStream
from rawsse.chat.mount import mount_chat
from rawsse.chat.request import ChatRequest
from rawsse.chat.transcript import Transcript
from rawsse.request import Request
from rawsse.stream import EventStream, StreamEnd
from tests.support import blocking_socket, get, recv_some, running_server, wait_for

pytestmark = pytest.mark.anyio

STREAMS = 200
FAREWELL = b"event: bye\ndata: shutdown\n\n"
TERMINATOR = b"0\r\n\r\n"


def held_app(sources: list[weakref.ref[Any]]) -> App:
    app = App()

    def farewell(reason: StreamEnd) -> bytes:
        return b"event: bye\ndata: " + reason.encode() + b"\n\n"

    @app.get("/held")
    async def held(req: Request) -> EventStream:
        async def source() -> AsyncIterator[dict[str, int]]:
            yield {"i": 0}
            await anyio.sleep_forever()

        generator = source()
        sources.append(weakref.ref(generator))
        return EventStream(generator, heartbeat_s=0, farewell=farewell)

    return app


async def open_held(port: int, count: int, path: str = "/held") -> list[socket.socket]:
    """``count`` keep-alive streams, each read up to its first event."""
    socks = []
    for _ in range(count):
        sock = blocking_socket(port)
        sock.sendall(get(path, close=False))
        socks.append(sock)
    for sock in socks:
        seen = b""
        while b"data: " not in seen:
            data = await recv_some(sock)
            assert data, "closed before the first event"
            seen += data
    return socks


async def read_to_eof(sock: socket.socket) -> bytes:
    seen = b""
    with anyio.fail_after(10):
        while data := await recv_some(sock):
            seen += data
    return seen


@contextmanager
def no_cycles_of(*types: type) -> Iterator[None]:
    """Inside, the cyclic collector is off; at the end, nothing of ``types`` may be garbage
    that only it could free (reference counting frees what is in no cycle)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, types)]
        assert not cyclic, f"left in reference cycles: {cyclic}"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


async def test_shutdown_ends_many_streams_with_farewell_and_terminator() -> None:
    sources: list[weakref.ref[Any]] = []
    async with running_server(held_app(sources), shutdown_grace_s=10) as server:
        socks = await open_held(server.port, STREAMS)
        try:
            assert gc.isenabled()
            server.shutdown()
            # Every stream: its farewell, then the terminator, then the server closes the
            # connection (a keep-alive connection does not start a new request cycle).
            for sock in socks:
                tail = (await read_to_eof(sock))[-64:]
                assert tail.endswith(FAREWELL + b"\r\n" + TERMINATOR), tail
            await wait_for(lambda: server.stats.connections_active == 0)
        finally:
            for sock in socks:
                sock.close()
    assert gc.isenabled()  # switched off while the streams ended, and back on


@pytest.mark.parametrize("how", ["client leaves", "server shuts down"])
async def test_an_ended_stream_leaves_no_reference_cycle(how: str) -> None:
    sources: list[weakref.ref[Any]] = []
    with no_cycles_of(EventStream, types.AsyncGeneratorType):
        async with running_server(held_app(sources), shutdown_grace_s=10) as server:
            socks = await open_held(server.port, 3)
            if how == "client leaves":
                for sock in socks:
                    sock.close()
            else:
                server.shutdown()
                for sock in socks:
                    await read_to_eof(sock)
                    sock.close()
            await wait_for(lambda: server.stats.connections_active == 0)
        assert all(ref() is None for ref in sources)  # freed as the streams ended


async def test_an_ended_chat_stream_leaves_no_reference_cycle() -> None:
    async def model(request: ChatRequest) -> AsyncIterator[str]:
        yield "Hello"
        await anyio.sleep_forever()

    app = App()
    mount_chat(app, {"held": model})
    body = b'{"model": "held", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )
    with no_cycles_of(DialectStream, Transcript, EventStream, types.AsyncGeneratorType):
        async with running_server(app, shutdown_grace_s=10) as server:
            socks = []
            for _ in range(3):
                sock = blocking_socket(server.port)
                sock.sendall(raw)
                socks.append(sock)
            for sock in socks:
                seen = b""
                while b"Hello" not in seen:
                    data = await recv_some(sock)
                    assert data, "closed before the first token"
                    seen += data
            socks[0].close()  # one client leaves, the server ends the others
            await wait_for(lambda: server.stats.connections_active == 2)
            server.shutdown()
            for sock in socks[1:]:
                assert (await read_to_eof(sock)).endswith(TERMINATOR)
                sock.close()
            await wait_for(lambda: server.stats.connections_active == 0)
