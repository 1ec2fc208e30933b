"""Starlette + sse-starlette serving the benchmark workload (for uvicorn, hypercorn, granian).

``app`` streams through sse-starlette's ``EventSourceResponse`` (its ping task is the
heartbeat; ``hb=0`` disables it). ``GET /plain`` is a plain Starlette response and
``GET /chunked?size=B&count=C`` a ``StreamingResponse`` of C chunks of B bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from benchmarks.peers.workload import chunk_dict, params_from_mapping


async def stream(request: Request) -> EventSourceResponse:
    await request.body()
    p = params_from_mapping(request.query_params)

    async def events() -> AsyncIterator[dict[str, str]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(p.n):
            if p.delay and i:  # on a fixed schedule: lateness does not accumulate
                await asyncio.sleep(max(0.0, start + i * p.delay - loop.time()))
            yield {"data": orjson.dumps(chunk_dict(i)).decode()}
        if p.hold:
            await asyncio.sleep(p.hold)
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), ping=p.hb)


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello, world\n")


async def chunked(request: Request) -> StreamingResponse:
    size = int(request.query_params.get("size", 4096))
    count = int(request.query_params.get("count", 256))
    piece = b"x" * size

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield piece

    return StreamingResponse(pieces(), media_type="application/octet-stream")


app = Starlette(
    routes=[
        Route("/stream", stream, methods=["POST"]),
        Route("/plain", plain),
        Route("/chunked", chunked),
    ]
)
