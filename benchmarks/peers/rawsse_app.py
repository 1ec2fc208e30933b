"""rawsse serving the benchmark workload.

Run: ``rawsse serve benchmarks.peers.rawsse_app:app --port 0 --no-access-log [--backend trio]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from benchmarks.peers.workload import DONE_FRAME, chunk_dict, params_from_mapping
from rawsse.app import App
from rawsse.request import Request
from rawsse.response import Response, StreamingResponse
from rawsse.sse import encode_json_data
from rawsse.stream import EventStream

app = App()


@app.post("/stream")
async def stream(request: Request) -> EventStream:
    p = params_from_mapping(request.query)

    async def source() -> AsyncIterator[bytes]:
        delay = p.delay
        start = anyio.current_time()
        for i in range(p.n):
            if delay and i:  # on a fixed schedule: lateness does not accumulate
                await anyio.sleep(max(0.0, start + i * delay - anyio.current_time()))
            yield encode_json_data(chunk_dict(i))
        if p.hold:
            await anyio.sleep(p.hold)
        yield DONE_FRAME

    return EventStream(source(), heartbeat_s=p.hb)


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
