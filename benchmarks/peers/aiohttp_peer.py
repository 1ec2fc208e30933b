"""aiohttp + aiohttp-sse serving the benchmark workload.

Run: ``python -m benchmarks.peers.aiohttp_peer --port 0``; prints a ready line with the port.
aiohttp-sse starts a ping task per stream (its heartbeat); ``hb=0`` is not allowed by it, so a
very long interval stands in for "off".
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import orjson
from aiohttp import web
from aiohttp_sse import sse_response

from benchmarks.peers.workload import chunk_dict, params_from_mapping


async def stream(request: web.Request) -> web.StreamResponse:
    await request.read()
    p = params_from_mapping(request.query)
    async with sse_response(
        request, ping_interval=p.hb if p.hb > 0 else 1e9, allow_all_methods=True
    ) as resp:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(p.n):
            if p.delay and i:  # on a fixed schedule: lateness does not accumulate
                await asyncio.sleep(max(0.0, start + i * p.delay - loop.time()))
            await resp.send(orjson.dumps(chunk_dict(i)).decode())
        if p.hold:
            await asyncio.sleep(p.hold)
        await resp.send("[DONE]")
    return resp


async def plain(request: web.Request) -> web.Response:
    return web.Response(text="hello, world\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/stream", stream)
    app.router.add_get("/plain", plain)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"aiohttp listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, backlog=4096, handle_signals=True)


if __name__ == "__main__":
    main()
