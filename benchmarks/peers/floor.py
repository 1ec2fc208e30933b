"""The Python floor: a bare ``asyncio.Protocol`` server hand-writing the chunked SSE frames.

The least work Python can do for the workload: a minimal HTTP/1.1 request reader (request line,
``Content-Length`` body, keep-alive), one ``transport.write`` per event of a hand-framed chunk,
the transport's own flow control (``pause_writing``/``resume_writing``) as backpressure, and a
``call_later`` timer per idle stream for heartbeats. No validation of anything: it is a yardstick,
not a server. ``GET /plain`` answers a fixed 13-byte body (the plain request/response scenario);
``GET /chunked?size=B&count=C`` streams C chunks of B bytes (the chunked MB/s scenario).
``POST /engine?n=&delay=`` is the engine-step shape: one producer task wakes every ``delay`` s
(on a fixed schedule) and puts one token in every active stream's ``asyncio.Queue``; each
stream's task takes it, builds the chunk and writes it (vLLM's output loop, written bare).
``POST /engine-push``: the engine builds and writes every stream's chunk itself.

Run: ``python -m benchmarks.peers.floor --port 0 [--uvloop]``; prints the rawsse-style ready line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import orjson

from benchmarks.peers.workload import DONE_FRAME, chunk_dict, params_from_query

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
PLAIN = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nhello, world\n"
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
HEARTBEAT = b"3\r\n:\n\n\r\n"
TERMINATOR = b"0\r\n\r\n"


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Engine:
    """One producer for every stream (see the module docstring)."""

    def __init__(self) -> None:
        self.active: set[asyncio.Queue[int]] = set()
        # Streams the engine writes to itself: [tokens sent, tokens to send, done].
        self.pushed: dict[FloorProtocol, list] = {}  # type: ignore[type-arg]
        self.task: asyncio.Task[None] | None = None

    def start(self, delay: float) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run(delay))

    async def run(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = 0
        while True:
            step += 1
            await asyncio.sleep(max(0.0, start + step * delay - loop.time()))
            for queue in self.active:
                queue.put_nowait(step)
            dumps = orjson.dumps
            for proto, entry in list(self.pushed.items()):
                sent, total, done = entry
                if sent < total and proto.transport is not None:
                    payload = b"data: " + dumps(chunk_dict(sent)) + b"\n\n"
                    proto.transport.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                    entry[0] = sent = sent + 1
                    if sent < total:
                        continue
                if not done.done():
                    done.set_result(None)
                del self.pushed[proto]


ENGINE = Engine()


class FloorProtocol(asyncio.Protocol):
    __slots__ = ("buf", "busy", "drained", "hb_handle", "hb_s", "task", "transport")

    def __init__(self) -> None:
        self.buf = b""
        self.busy = False
        self.drained: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.hb_handle: asyncio.TimerHandle | None = None
        self.hb_s = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; say it outright.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.hb_handle is not None:
            self.hb_handle.cancel()
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionResetError())
        self.transport = None

    def pause_writing(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = buf[:end]
        length = 0
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            line_end = lower.find(b"\r\n", at + 2)
            length = int(lower[at + 17 : line_end if line_end >= 0 else None])
        if len(buf) < end + 4 + length:
            return
        self.buf = buf[end + 4 + length :]
        line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
        _, target, _ = line.split(b" ", 2)
        path, _, query = target.partition(b"?")
        transport = self.transport
        assert transport is not None
        if path == b"/stream":
            self.busy = True
            params = params_from_query(query)
            self.task = asyncio.get_running_loop().create_task(self.stream(params))
        elif path == b"/engine":
            self.busy = True
            params = params_from_query(query)
            ENGINE.start(params.delay or 0.04)
            self.task = asyncio.get_running_loop().create_task(self.engine_stream(params))
        elif path == b"/engine-push":
            self.busy = True
            params = params_from_query(query)
            ENGINE.start(params.delay or 0.04)
            self.task = asyncio.get_running_loop().create_task(self.engine_pushed(params))
        elif path == b"/plain":
            transport.write(PLAIN)
            if self.buf:
                self.next_request()
        elif path == b"/chunked":
            self.busy = True
            q = dict(p.split(b"=") for p in query.split(b"&") if b"=" in p)
            size, count = int(q.get(b"size", b"4096")), int(q.get(b"count", b"256"))
            self.task = asyncio.get_running_loop().create_task(self.chunked(size, count))
        else:
            transport.write(NOT_FOUND)

    def done(self) -> None:
        self.busy = False
        self.task = None
        if self.buf and self.transport is not None:
            self.next_request()

    async def stream(self, p) -> None:  # type: ignore[no-untyped-def]
        transport = self.transport
        assert transport is not None
        write = transport.write
        write(SSE_HEAD)
        dumps = orjson.dumps
        delay = p.delay
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(p.n):
            if delay and i:  # on a fixed schedule: lateness does not accumulate
                await asyncio.sleep(max(0.0, start + i * delay - loop.time()))
            payload = b"data: " + dumps(chunk_dict(i)) + b"\n\n"
            if self.transport is None:  # the client left: stop producing
                return
            write(b"%x\r\n%s\r\n" % (len(payload), payload))
            if self.drained is not None:
                await self.drained
        if p.hold:
            if p.hb > 0:
                self.hb_s = p.hb
                self.hb_handle = asyncio.get_running_loop().call_later(p.hb, self.heartbeat)
            await asyncio.sleep(p.hold)
            if self.hb_handle is not None:
                self.hb_handle.cancel()
                self.hb_handle = None
        if self.transport is not None:
            write(chunk(DONE_FRAME) + TERMINATOR)
            self.done()

    async def engine_stream(self, p) -> None:  # type: ignore[no-untyped-def]
        transport = self.transport
        assert transport is not None
        write = transport.write
        write(SSE_HEAD)
        dumps = orjson.dumps
        queue: asyncio.Queue[int] = asyncio.Queue()
        ENGINE.active.add(queue)
        try:
            for i in range(p.n):
                await queue.get()
                payload = b"data: " + dumps(chunk_dict(i)) + b"\n\n"
                if self.transport is None:
                    return
                write(b"%x\r\n%s\r\n" % (len(payload), payload))
                if self.drained is not None:
                    await self.drained
        finally:
            ENGINE.active.discard(queue)
        if self.transport is not None:
            write(chunk(DONE_FRAME) + TERMINATOR)
            self.done()

    async def engine_pushed(self, p) -> None:  # type: ignore[no-untyped-def]
        transport = self.transport
        assert transport is not None
        transport.write(SSE_HEAD)
        done = asyncio.get_running_loop().create_future()
        ENGINE.pushed[self] = [0, p.n, done]
        try:
            await done
        finally:
            ENGINE.pushed.pop(self, None)
        if self.transport is not None:
            self.transport.write(chunk(DONE_FRAME) + TERMINATOR)
            self.done()

    def heartbeat(self) -> None:
        if self.transport is not None:
            self.transport.write(HEARTBEAT)
            self.hb_handle = asyncio.get_running_loop().call_later(self.hb_s, self.heartbeat)

    async def chunked(self, size: int, count: int) -> None:
        transport = self.transport
        assert transport is not None
        piece = chunk(b"x" * size)
        transport.write(CHUNKED_HEAD)
        for _ in range(count):
            if self.transport is None:
                return
            transport.write(piece)
            if self.drained is not None:
                await self.drained
        if self.transport is not None:
            transport.write(TERMINATOR)
            self.done()


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(FloorProtocol, sock=sock, backlog=4096)
    real_port = sock.getsockname()[1]
    print(f"floor listening on http://{host}:{real_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(args.host, args.port))
    sys.stdout.flush()
    os._exit(0)
