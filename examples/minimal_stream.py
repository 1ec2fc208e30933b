"""A minimal event stream: a clock that ticks once a second.

Run:   rawsse serve examples.minimal_stream:app
Watch: curl -N http://127.0.0.1:8000/clock
"""

from __future__ import annotations

import time

import anyio

from rawsse import App, EventStream, Request

app = App()


@app.get("/clock")
async def clock(request: Request) -> EventStream:
    """Tick every ``interval`` seconds (query parameter, default 1), ``count`` times."""
    interval = float(request.query.get("interval", "1"))
    count = int(request.query.get("count", "10"))

    async def ticks(stream: EventStream) -> None:
        for n in range(count):
            # send() returns at once unless this client is behind: that is the backpressure.
            await stream.send({"n": n, "time": time.time()}, event="tick", id=str(n))
            await anyio.sleep(interval)

    return EventStream(ticks, retry_ms=2000)
