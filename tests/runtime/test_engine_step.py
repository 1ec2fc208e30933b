"""The engine-step shape: one producer paced by a ``Ticker`` hands a token to every active
stream at each step (as an LLM server's output loop feeds per-request queues), both backends.

The producer is a server task (``Server.spawn``), so its ticks are on the shared timer too;
every stream gets every step's token, in order, each step never before its point of the
schedule, and a stream that leaves stops receiving without disturbing the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from rawsse import App, EventStream, Request, Ticker
from tests.support import (
    blocking_socket,
    get,
    read_to_chunked_end,
    recv_some,
    running_server,
    wait_for,
)

pytestmark = pytest.mark.anyio

STEP_S = 0.02
# A tick is never early; this only absorbs float rounding between two clock readings.
CLOCK_TOLERANCE_S = 1e-4


class Engine:
    def __init__(self) -> None:
        self.active: set[MemoryObjectSendStream[tuple[int, float]]] = set()
        self.origin = 0.0
        self.ticker: Ticker | None = None
        self.steps = 0

    async def run(self) -> None:
        ticker = self.ticker = Ticker(STEP_S)
        self.origin = ticker.next_at
        while True:
            await ticker.tick()
            self.steps += 1
            for queue in list(self.active):
                queue.send_nowait((self.steps, time.monotonic()))


def engine_app(engine: Engine, started: list[bool]) -> App:
    app = App()

    @app.get("/tokens")
    async def tokens(req: Request) -> EventStream:
        count = int(req.query.get("n", "5"))
        if not started:
            started.append(True)
            app.server.spawn(engine.run)
        send, receive = anyio.create_memory_object_stream[tuple[int, float]](math.inf)
        engine.active.add(send)

        async def source() -> AsyncIterator[dict[str, Any]]:
            try:
                with receive:
                    for _ in range(count):
                        step, at = await receive.receive()
                        yield {"step": step, "at": at}
            finally:
                engine.active.discard(send)
                send.close()

        return EventStream(source(), heartbeat_s=0)

    return app


async def read_events(sock: Any) -> list[dict[str, Any]]:
    import json

    seen = await read_to_chunked_end(sock)
    return [json.loads(line[6:]) for line in seen.split(b"\n") if line.startswith(b"data: ")]


async def test_every_stream_gets_every_step_in_order_never_early() -> None:
    engine, started = Engine(), []
    async with running_server(engine_app(engine, started)) as server:
        socks = [blocking_socket(server.port) for _ in range(20)]
        try:
            for sock in socks:
                sock.sendall(get("/tokens?n=5"))
            results = [await read_events(sock) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        assert engine.ticker is not None and engine.ticker._reactor is server.reactor
    for events in results:
        steps = [e["step"] for e in events]
        assert len(steps) == 5
        assert steps == list(range(steps[0], steps[0] + 5))  # consecutive: none lost
        for e in events:  # each step handed out at or after its point of the schedule
            assert e["at"] >= engine.origin + e["step"] * STEP_S - CLOCK_TOLERANCE_S


async def test_a_stream_that_leaves_stops_receiving_and_the_others_go_on() -> None:
    engine, started = Engine(), []
    async with running_server(engine_app(engine, started)) as server:
        leaving = blocking_socket(server.port)
        staying = blocking_socket(server.port)
        try:
            leaving.sendall(get("/tokens?n=1000"))
            staying.sendall(get("/tokens?n=10"))
            seen = b""
            while b"data: " not in seen:
                seen += await recv_some(leaving)
            leaving.close()
            await wait_for(lambda: len(engine.active) <= 1, what="the leaver's queue dropped")
            events = await read_events(staying)
        finally:
            leaving.close()
            staying.close()
    assert [e["step"] for e in events] == list(range(events[0]["step"], events[0]["step"] + 10))


class PushingEngine:
    """The engine queues each stream's event itself (``EventStream.send_nowait``)."""

    def __init__(self) -> None:
        self.streams: dict[EventStream, list[Any]] = {}
        self.every: list[EventStream] = []
        self.steps = 0

    async def run(self) -> None:
        ticker = Ticker(STEP_S)
        while True:
            await ticker.tick()
            self.steps += 1
            for stream, entry in list(self.streams.items()):
                sent, total, done = entry
                if sent < total and stream.send_nowait({"step": self.steps}, id=str(sent)):
                    entry[0] = sent = sent + 1
                    if sent < total:
                        continue
                done.set()
                del self.streams[stream]


def pushing_app(engine: PushingEngine, started: list[bool]) -> App:
    app = App()

    @app.get("/pushed")
    async def pushed(req: Request) -> EventStream:
        total = int(req.query.get("n", "5"))
        if not started:
            started.append(True)
            app.server.spawn(engine.run)

        async def hold(stream: EventStream) -> None:
            done = anyio.Event()
            engine.streams[stream] = [0, total, done]
            engine.every.append(stream)
            try:
                await done.wait()  # the engine ends it (or the client leaves)
            finally:
                engine.streams.pop(stream, None)

        return EventStream(hold, heartbeat_s=0)

    return app


async def test_an_engine_pushing_to_streams_reaches_each_in_order() -> None:
    engine, started = PushingEngine(), []
    async with running_server(pushing_app(engine, started)) as server:
        socks = [blocking_socket(server.port) for _ in range(20)]
        leaver = blocking_socket(server.port)
        try:
            leaver.sendall(get("/pushed?n=1000"))
            for sock in socks:
                sock.sendall(get("/pushed?n=5"))
            seen = b""
            while b"data: " not in seen:
                seen += await recv_some(leaver)
            leaver.close()
            results = [await read_events(sock) for sock in socks]
            await wait_for(lambda: not engine.streams, what="every stream done or gone")
        finally:
            for sock in socks:
                sock.close()
    # The leaver's stream refuses events now: nothing is queued for a client that is gone.
    [gone] = [stream for stream in engine.every if stream.end_reason == "disconnected"]
    assert gone.send_nowait({"step": -1}) is False
    for events in results:
        steps = [e["step"] for e in events]
        assert steps == list(range(steps[0], steps[0] + 5))  # one per step, none lost
