"""A minimal event stream: a clock that ticks once a second.

Run:   rawsse serve examples.minimal_stream:app
Watch: curl -N http://127.0.0.1:8000/clock
       curl -N 'http://127.0.0.1:8000/clock?interval=0.2&count=5'
"""

from __future__ import annotations

import math
import time

import rawsse
from rawsse import App, EventStream, Request, Response

app = App()


@app.get("/clock")
async def clock(request: Request) -> EventStream | Response:
    """Tick every ``interval`` seconds (default 1, at most 3600), ``count`` times (default 10)."""
    try:
        interval = float(request.query.get("interval", "1"))
        count = int(request.query.get("count", "10"))
    except ValueError:
        return Response("interval must be a number of seconds and count an integer\n", 400)
    if not (math.isfinite(interval) and 0 <= interval <= 3600) or count < 0:
        return Response("interval must be between 0 and 3600 seconds, count at least 0\n", 400)

    async def ticks(stream: EventStream) -> None:
        for n in range(count):
            # send() returns at once unless this client is behind: that is the backpressure.
            await stream.send({"n": n, "time": time.time()}, event="tick", id=str(n))
            await rawsse.sleep(interval)  # the server's shared timer: cheap per stream

    return EventStream(ticks, retry_ms=2000)
