"""rawsse serving the benchmark workload.

Run: ``rawsse serve benchmarks.peers.rawsse_app:app --port 0 --no-access-log [--backend trio]``.

Two apps differ only in how a stream waits (between paced events, and while held):
``app`` with ``anyio.sleep`` (what any anyio code writes), ``ticker_app`` with
``rawsse.Ticker`` (rawsse's own pacing, on the server's shared timer). Bursts are the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio

from benchmarks.peers.workload import DONE_FRAME, Params, chunk_dict, params_from_mapping
from rawsse._runtime.ticker import Ticker
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


async def _ticker_source(p: Params) -> AsyncIterator[bytes]:
    ticker = Ticker(p.delay)  # the same fixed schedule, on the server's shared timer
    for i in range(p.n):
        if p.delay and i:
            await ticker.tick()
        yield encode_json_data(chunk_dict(i))
    if p.hold:
        await ticker.tick(p.hold)  # a held stream waits on the shared timer too
    yield DONE_FRAME


def make_app(source: Callable[[Params], AsyncIterator[bytes]]) -> App:
    """The workload's routes, with ``source`` producing each stream's frames."""
    app = App()

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
ticker_app = make_app(_ticker_source)
