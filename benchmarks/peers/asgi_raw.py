"""A bare ASGI app (no framework) for the HTTP benchmarks: what uvicorn costs by itself.

``GET /plain`` answers a fixed 13-byte body; ``GET /chunked?size=B&count=C`` streams C body
messages of B bytes (uvicorn sends each as one chunk). Anything else: 404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

PLAIN_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
STREAM_HEADERS = [(b"content-type", b"application/octet-stream")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    path = scope["path"]
    if path == "/plain":
        await send({"type": "http.response.start", "status": 200, "headers": PLAIN_HEADERS})
        await send({"type": "http.response.body", "body": b"hello, world\n"})
    elif path == "/chunked":
        q = parse_qs(scope["query_string"].decode())
        size = int(q.get("size", ["4096"])[0])
        count = int(q.get("count", ["256"])[0])
        piece = b"x" * size
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        for _ in range(count):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
