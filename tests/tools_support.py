"""Test servers for the tools: raw anyio listeners that write hand-written HTTP responses.

They exist so the client, trace and bench can be tested against servers that misbehave on
purpose (wrong status, wrong content type, malformed chunks, truncated streams, in-band error
frames, resets) as well as ones that behave. Every byte a handler writes is spelled out here,
never produced by rawsse's own encoder or server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc

from rawsse.app import App
from rawsse.cli._demo_app import DemoOptions, create_demo_app
from rawsse.request import Request
from rawsse.response import Response
from rawsse.sse import Event
from rawsse.stream import EventStream

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class RawRequest:
    """A request as the test server read it: header names lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    index: int  # 0 for the server's first request, 1 for the second, ...
    peer: tuple[str, int] = ("", 0)  # the client's address and port

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


Handler = Callable[[RawRequest, anyio.abc.SocketStream], Awaitable[None]]


@dataclass
class RawServer:
    """A running test server: where it listens and what it was asked."""

    port: int
    requests: list[RawRequest] = field(default_factory=list)

    def url(self, path: str = "/events") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def _read_request(stream: anyio.abc.SocketStream) -> RawRequest | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            data = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += await stream.receive()
    return RawRequest(method, path, headers, body, index=-1)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    """Serve one request per connection with ``handler``, then close the connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = RawServer(port)

    async def serve_one(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = await _read_request(stream)
            if request is None:
                return
            # numbered in the order requests complete, which is unique across connections
            request.index = len(server.requests)
            request.peer = stream.extra(anyio.abc.SocketAttribute.remote_address)  # type: ignore[assignment]
            server.requests.append(request)
            # the client may leave first: fine for a test server
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await handler(request, stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_one)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body, framed by hand."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def sse_head(status: str = "200 OK", content_type: str = "text/event-stream") -> bytes:
    """A chunked response head."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()


def plain_response(status: str, content_type: str, body: bytes) -> bytes:
    """A response with a Content-Length body."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def chat_chunk(content: str) -> bytes:
    """An OpenAI ``chat.completion.chunk`` frame, written out by hand."""
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"' + content.encode() + b'"},"finish_reason":null}]}\n\n'
    )


DONE_FRAME = b"data: [DONE]\n\n"
ERROR_FRAME = b'data: {"error":{"message":"backend failed","type":"server_error"}}\n\n'


async def reset(stream: anyio.abc.SocketStream) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN: a crashed or hostile peer."""
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def closed_port() -> int:
    """A port on 127.0.0.1 with no listener (bound, then closed): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def rawsse_command(*args: str) -> list[str]:
    """``python -m rawsse ARGS`` with this interpreter."""
    return [sys.executable, "-m", "rawsse", *args]


async def run_rawsse(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m rawsse ARGS`` to completion (without raising on its exit status)."""
    with anyio.fail_after(timeout_s):
        return await anyio.run_process(rawsse_command(*args), check=False, cwd=REPO_ROOT)


def read_ready_line(
    proc: subprocess.Popen[bytes], timeout_s: float, explain: Callable[[], str] = str
) -> str:
    """The base URL from ``rawsse serve``'s ready line (``rawsse listening on URL``).

    Fails, with ``explain()`` appended (say, the server's stderr), when the line does not come
    within ``timeout_s`` or is something else.
    """
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=timeout_s):
            raise AssertionError(f"rawsse serve printed nothing within {timeout_s:g} s {explain()}")
    line = proc.stdout.readline().decode()
    prefix = "rawsse listening on "
    assert line.startswith(prefix), f"no ready line from rawsse serve: {line!r} {explain()}"
    return line[len(prefix) :].strip()


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGINT ``proc`` (a graceful stop), SIGKILL it after ``timeout_s``, close its stdout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def rawsse_server(*args: str) -> Iterator[str]:
    """Run ``rawsse serve --port 0 ARGS`` in a subprocess; yield its base URL; stop it."""
    proc = subprocess.Popen(
        rawsse_command("serve", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    try:
        yield read_ready_line(proc, 15)
    finally:
        stop_process(proc)


# What the misbehaving chat server does with request k, by k % 5, and how bench must count it.
MISBEHAVIOURS = ("ok", "status", "in_band", "truncated", "disconnect")


async def misbehaving_chat(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    """A chat server that fails on purpose in a different way for each request in turn.

    ``ok``: three chunks and ``[DONE]``; ``status``: 503 with a JSON error; ``in_band``: one
    chunk, an error frame, ``[DONE]``; ``truncated``: two chunks then a clean end of the body
    without ``[DONE]``; ``disconnect``: one chunk then a TCP reset mid-body.
    """
    kind = MISBEHAVIOURS[request.index % len(MISBEHAVIOURS)]
    if kind == "status":
        body = b'{"error":{"message":"overloaded","type":"server_error"}}'
        await s.send(plain_response("503 Service Unavailable", "application/json", body))
        return
    await s.send(sse_head())
    if kind == "ok":
        frames = [chat_chunk("a"), chat_chunk("b"), chat_chunk("c"), DONE_FRAME]
    elif kind == "in_band":
        frames = [chat_chunk("a"), ERROR_FRAME, DONE_FRAME]
    elif kind == "truncated":
        frames = [chat_chunk("a"), chat_chunk("b")]
    else:
        await s.send(chunk(chat_chunk("a")))
        await anyio.sleep(0.01)
        await reset(s)
        return
    await s.send(b"".join(chunk(frame) for frame in frames) + LAST_CHUNK)


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event


def client_test_app() -> App:
    """What the client tests serve with ``rawsse serve tests.tools_support:client_test_app``.

    The demo app (token delay 0.2 s, so a stream lasts long enough to be cut and resumed;
    resume grace 5 s) plus ``GET /ticks``, a stream that ends after each event, the way a
    browser-style reconnect is exercised: the first connection gets ``retry: 80``, ``id: 1``;
    a reconnection with ``Last-Event-ID: 1`` gets ``id: 2``; one with ``Last-Event-ID: 2`` gets
    ``204 No Content``, which must stop the client. ``GET /idle`` sends one event, then only
    heartbeats (one a second): a stream to hold open.
    """
    app = create_demo_app(DemoOptions(token_delay_s=0.2, resume_grace_s=5.0))

    async def ticks(request: Request) -> Response | EventStream:
        last = request.last_event_id
        if last is None:
            return EventStream(_events(Event("a", id="1")), retry_ms=80)
        if last == "1":
            return EventStream(_events(Event("b", id="2")))
        return Response(b"", status=204)

    async def idle(request: Request) -> EventStream:
        # one event, then only heartbeats (every second) until the client leaves
        return EventStream(_events_then_wait(Event("hello")), heartbeat_s=1.0)

    app.add_route("/ticks", ticks)
    app.add_route("/idle", idle)
    return app


async def _events_then_wait(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event
    await anyio.sleep_forever()


class _IdleProtocol(asyncio.Protocol):
    """Answers any request with an event stream: one event, then a comment every second."""

    def __init__(self, streams: set[asyncio.Transport]) -> None:
        self.streams = streams
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf and self.transport not in self.streams:
            assert self.transport is not None
            self.transport.write(sse_head() + chunk(b"data: hello\n\n"))
            self.streams.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.streams.discard(self.transport)  # type: ignore[arg-type]


async def _serve_idle() -> None:
    # A bare asyncio server, so that 10,000 held streams cost the server side little.
    loop = asyncio.get_running_loop()
    streams: set[asyncio.Transport] = set()
    server = await loop.create_server(lambda: _IdleProtocol(streams), "127.0.0.1", 0, backlog=4096)
    print(f"idle listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for transport in list(streams):
                transport.write(chunk(b":\n\n"))


@contextmanager
def idle_server() -> Iterator[str]:
    """``python -m tests.tools_support idle`` in a subprocess: its base URL; stopped on exit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.tools_support", "idle"],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "listening on " in line, line
        yield line.split()[-1]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def slow_drain_app() -> App:
    """``GET /drain``: a stream that, told to end, takes a second per stream this process holds
    to finish (whatever cancels it), so a worker's open connections fall one a second while it
    stops."""
    app = App()
    held = [0]

    async def drain(request: Request) -> EventStream:
        held[0] += 1
        delay_s = float(held[0])

        async def produce(stream: EventStream) -> None:
            await stream.send("started")
            try:
                await anyio.sleep_forever()
            finally:
                # A teardown that takes its time (a model flushing its state): it finishes
                # even when the server, its grace over, cancels the connection outright.
                deadline = anyio.current_time() + delay_s
                while (left_s := deadline - anyio.current_time()) > 0:
                    try:
                        with anyio.CancelScope(shield=True):
                            await anyio.sleep(left_s)
                    except anyio.get_cancelled_exc_class():
                        continue

        return EventStream(produce)

    app.add_route("/drain", drain)
    return app


# Longer than the supervisor's stall bound (``rawsse.cli._workers.STALL_S``).
BLOCKED_END_S = 6.0


def blocking_end_app() -> App:
    """``GET /block``: a stream whose end, the first in its process, blocks the event loop for
    ``BLOCKED_END_S`` (a synchronous teardown; or a worker whose loop is busy ending thousands
    of streams at once), then ends it with its farewell as usual."""
    app = App()
    blocked = [False]

    async def block(request: Request) -> EventStream:
        async def produce(stream: EventStream) -> None:
            await stream.send("started")
            try:
                await anyio.sleep_forever()
            finally:
                if not blocked[0]:
                    blocked[0] = True
                    time.sleep(BLOCKED_END_S)  # noqa: ASYNC251 - blocks the loop on purpose

        return EventStream(produce, farewell=lambda reason: b"data: bye\n\n")

    app.add_route("/block", block)
    return app


def hang_app() -> App:
    """``GET /hang``: waits a while (the worker reports holding it), creates the file named by
    ``$RAWSSE_TEST_MARKER``, then blocks its event loop for a minute: a hung worker."""
    app = App()

    async def hang(request: Request) -> Response:
        await anyio.sleep(1.5)  # three status reports with this connection open
        with open(os.environ["RAWSSE_TEST_MARKER"], "w"):  # noqa: ASYNC230 - a marker
            pass
        time.sleep(60)  # noqa: ASYNC251 - blocks the event loop on purpose
        return Response("never")

    app.add_route("/hang", hang)
    return app


if __name__ == "__main__" and sys.argv[1:] == ["idle"]:
    asyncio.run(_serve_idle())
