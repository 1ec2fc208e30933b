"""Test helpers: an in-process server on 127.0.0.1:0, a raw-socket HTTP/1.1 client, and
``wait_for`` / ``wait_for_sync``: the one way a test waits for something to happen (a
condition it can observe, polled, bounded in time), instead of sleeping and hoping."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from rawsse._http.limits import ServerLimits
from rawsse.server import Server

IO_TIMEOUT_S = 5.0
# How often a waiting test looks again: often enough not to slow tests down, rarely enough
# not to load a shared machine.
POLL_S = 0.005


async def wait_for(
    condition: Callable[[], object],
    timeout_s: float = IO_TIMEOUT_S,
    *,
    what: str = "",
    state: Callable[[], object] | None = None,
) -> None:
    """Wait until ``condition()`` is true, looking again every few milliseconds.

    Fails after ``timeout_s`` with ``what`` (and ``state()``, when given: what to show of the
    thing waited on).
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            shown = f" ({state()})" if state is not None else ""
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {what or condition}{shown}"
            )
        await anyio.sleep(POLL_S)


def wait_for_sync(
    condition: Callable[[], object],
    timeout_s: float = IO_TIMEOUT_S,
    *,
    what: str = "",
    state: Callable[[], object] | None = None,
) -> None:
    """``wait_for`` outside an event loop (a test driving a subprocess)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            shown = f" ({state()})" if state is not None else ""
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {what or condition}{shown}"
            )
        time.sleep(POLL_S * 10)


@asynccontextmanager
async def running_server(app: Any, **limits: Any) -> AsyncIterator[Server]:
    """Serve ``app`` on a free loopback port for the duration of the block."""
    server = Server(app, host="127.0.0.1", port=0, access_log=False, limits=ServerLimits(**limits))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            yield server
        finally:
            server.force_exit()


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_responses(data: bytes, *, head_only: bool = False) -> list[RawResponse]:
    """Split raw bytes into HTTP/1.1 responses (hand-written, from RFC 9112)."""
    out: list[RawResponse] = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete header section: {head!r}"
        lines = head.decode("latin-1").split("\r\n")
        _, status, *reason = lines[0].split(" ", 2)
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        response = RawResponse(int(status), " ".join(reason), headers, b"")  # type: ignore[arg-type]
        if int(status) < 200 or head_only:
            out.append(response)
            continue
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            start = rest
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    assert rest.startswith(b"\r\n"), f"bad chunked terminator: {rest[:20]!r}"
                    rest = rest[2:]
                    break
                chunk = rest[:size]
                response.chunks.append(chunk)
                body += chunk
                assert rest[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
                rest = rest[size + 2 :]
            response.raw_body = start[: len(start) - len(rest)]
            response.body = body
        elif response.header("content-length") is not None:
            length = int(response.header("content-length") or 0)
            response.body = rest[:length]
            rest = rest[length:]
        else:
            response.body = rest
            rest = b""
        out.append(response)
    return out


class RawClient:
    """A plain TCP client: send bytes, read until close or until a condition holds."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.received = b""

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[RawClient]:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        try:
            yield cls(stream)
        finally:
            await stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def read_until_close(self, timeout: float = IO_TIMEOUT_S) -> bytes:
        with anyio.fail_after(timeout):
            while True:
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    return self.received
                self.received += data

    async def read_until(self, marker: bytes, timeout: float = IO_TIMEOUT_S) -> bytes:
        with anyio.fail_after(timeout):
            while marker not in self.received:
                try:
                    self.received += await self.stream.receive()
                except anyio.EndOfStream:
                    raise AssertionError(
                        f"connection closed before {marker!r}; got {self.received!r}"
                    ) from None
        return self.received


def blocking_socket(port: int) -> socket.socket:
    """A plain connected socket (loopback connect completes at once), for RST and FIN tests."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    return sock


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on loopback: (the server's end, non-blocking; the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=IO_TIMEOUT_S)
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


def reset_close(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


async def request(port: int, raw: bytes, timeout: float = IO_TIMEOUT_S) -> list[RawResponse]:
    """Send raw request bytes on a new connection, read until the server closes, parse."""
    async with RawClient.connect(port) as client:
        await client.send(raw)
        return parse_responses(await client.read_until_close(timeout))


def get(path: str, extra: str = "", close: bool = True) -> bytes:
    """A minimal GET request."""
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}{connection}\r\n".encode()


async def assert_still_serving(port: int) -> None:
    """The server answers a normal request (used after every bad-input test)."""
    responses = await request(port, get("/ping"))
    assert [r.status for r in responses] == [200], responses
    assert responses[0].body == b"pong"


async def recv_some(sock: socket.socket, timeout: float = IO_TIMEOUT_S) -> bytes:
    """Receive from a plain socket without blocking the event loop."""
    sock.setblocking(False)
    with anyio.fail_after(timeout):
        while True:
            try:
                return sock.recv(65536)
            except BlockingIOError:
                await anyio.wait_readable(sock)


async def read_to_chunked_end(
    sock: socket.socket,
    seen: bytes = b"",
    closed_early: str = "the server closed before the end of the stream",
) -> bytes:
    """Read on from ``seen`` until the chunked body's terminator (bounded: 10 s)."""
    with anyio.fail_after(10):
        while not seen.endswith(b"0\r\n\r\n"):
            data = await recv_some(sock)
            assert data, closed_early
            seen += data
    return seen
