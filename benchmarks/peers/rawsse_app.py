"""rawsse serving the benchmark workload.

Run: ``rawsse serve benchmarks.peers.rawsse_app:app --port 0 --no-access-log [--backend trio]``.

The apps differ only in how a stream waits (between paced events, and while held):
``app`` with ``anyio.sleep`` on a fixed schedule (what any anyio code writes), ``ticker_app``
with ``rawsse.Ticker`` (rawsse's own pacing, on the server's shared timer), ``sleep_app`` with
``await rawsse.sleep(delay)`` between events, relative to the last one (the way the demo models
and most hand-written producers pace), ``asyncio_app`` with ``asyncio.sleep`` and the loop's
clock on the fixed schedule, exactly as the floor waits (asyncio only: it tells rawsse's cost
per event from anyio's). Bursts are the same.

``POST /engine?n=&delay=``: the engine-step shape (see ``Engine``): one producer task wakes every
``delay`` seconds and hands one token to each active stream through the stream's own memory
object stream, as vLLM's output loop feeds per-request queues; the stream encodes and sends it.
``POST /engine-push``: the same engine queues each stream's event itself (``send_nowait``): no
stream task wakes per token.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from benchmarks.peers.workload import DONE_FRAME, Params, chunk_dict, params_from_mapping
from rawsse._runtime.ticker import Ticker, sleep
from rawsse.app import App
from rawsse.request import Request
from rawsse.response import Response, StreamingResponse
from rawsse.sse import encode_json_data
from rawsse.stream import EventStream


async def _anyio_source(p: Params) -> AsyncIterator[bytes]:
    delay = p.delay
    start = anyio.current_time()
    for i in range(p.n):
        if delay and i:  # on a fixed schedule: lateness does not accumulate
            await anyio.sleep(max(0.0, start + i * delay - anyio.current_time()))
        yield encode_json_data(chunk_dict(i))
    if p.hold:
        await anyio.sleep(p.hold)
    yield DONE_FRAME


async def _asyncio_source(p: Params) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    delay = p.delay
    start = loop.time()
    for i in range(p.n):
        if delay and i:  # the floor's own wait, on the same fixed schedule
            await asyncio.sleep(max(0.0, start + i * delay - loop.time()))
        yield encode_json_data(chunk_dict(i))
    if p.hold:
        await asyncio.sleep(p.hold)
    yield DONE_FRAME


async def _ticker_source(p: Params) -> AsyncIterator[bytes]:
    ticker = Ticker(p.delay)  # the same fixed schedule, on the server's shared timer
    for i in range(p.n):
        if p.delay and i:
            await ticker.tick()
        yield encode_json_data(chunk_dict(i))
    if p.hold:
        await ticker.tick(p.hold)  # a held stream waits on the shared timer too
    yield DONE_FRAME


async def _sleep_source(p: Params) -> AsyncIterator[bytes]:
    for i in range(p.n):
        if p.delay and i:
            await sleep(p.delay)  # relative to the last event, as the demo models pace
        yield encode_json_data(chunk_dict(i))
    if p.hold:
        await sleep(p.hold)
    yield DONE_FRAME


class Engine:
    """One producer for every stream: each step (``delay`` apart, on a fixed schedule) hands
    the step number to every active stream's queue, like an LLM engine's output loop."""

    def __init__(self, wait: str) -> None:
        self.wait = wait
        self.active: set[MemoryObjectSendStream[int]] = set()
        # Streams fed by push: [tokens sent, tokens to send, done].
        self.pushed: dict[EventStream, list[Any]] = {}
        self.running = False

    async def run(self, delay: float) -> None:
        step = 0
        if self.wait == "ticker":
            ticker = Ticker(delay)
            while True:
                await ticker.tick()
                step += 1
                self._hand_out(step)
        start = anyio.current_time()
        while True:
            step += 1
            await anyio.sleep(max(0.0, start + step * delay - anyio.current_time()))
            self._hand_out(step)

    def _hand_out(self, step: int) -> None:
        for queue in self.active:
            queue.send_nowait(step)
        for stream, entry in list(self.pushed.items()):
            sent, total, done = entry
            if sent < total and stream.send_nowait(chunk_dict(sent)):
                entry[0] = sent = sent + 1
                if sent < total:
                    continue
            done.set()
            del self.pushed[stream]

    async def held(self, stream: EventStream, total: int) -> None:
        """A stream the engine pushes its tokens to (``send_nowait``): no task wakes per token."""
        done = anyio.Event()
        self.pushed[stream] = [0, total, done]
        try:
            await done.wait()  # no deadline: the engine ends it, or the client leaves
        finally:
            self.pushed.pop(stream, None)
        await stream.send_raw(DONE_FRAME)

    async def tokens(self, p: Params) -> AsyncIterator[bytes]:
        send, receive = anyio.create_memory_object_stream[int](math.inf)
        self.active.add(send)
        try:
            with receive:
                for i in range(p.n):
                    await receive.receive()
                    yield encode_json_data(chunk_dict(i))
        finally:
            self.active.discard(send)
            send.close()
        yield DONE_FRAME


def make_app(source: Callable[[Params], AsyncIterator[bytes]], engine_wait: str = "anyio") -> App:
    """The workload's routes, with ``source`` producing each stream's frames."""
    app = App()
    engine = Engine(engine_wait)

    @app.post("/engine")
    async def engine_stream(request: Request) -> EventStream:
        params = params_from_mapping(request.query)
        if not engine.running:
            engine.running = True
            app.server.spawn(engine.run, params.delay or 0.04)
        return EventStream(engine.tokens(params), heartbeat_s=params.hb)

    @app.post("/engine-push")
    async def engine_push(request: Request) -> EventStream:
        params = params_from_mapping(request.query)
        if not engine.running:
            engine.running = True
            app.server.spawn(engine.run, params.delay or 0.04)
        return EventStream(lambda stream: engine.held(stream, params.n), heartbeat_s=params.hb)

    @app.post("/stream")
    async def stream(request: Request) -> EventStream:
        params = params_from_mapping(request.query)
        return EventStream(source(params), heartbeat_s=params.hb)

    @app.get("/plain")
    async def plain(request: Request) -> Response:
        return Response(b"hello, world\n")

    @app.get("/chunked")
    async def chunked(request: Request) -> StreamingResponse:
        size = int(request.query.get("size", 4096))
        count = int(request.query.get("count", 256))
        piece = b"x" * size

        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield piece

        return StreamingResponse(pieces())

    return app


app = make_app(_anyio_source)
ticker_app = make_app(_ticker_source, "ticker")
sleep_app = make_app(_sleep_source, "ticker")
asyncio_app = make_app(_asyncio_source)
