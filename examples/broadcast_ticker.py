"""A broadcast ticker: one producer, any number of subscribers, each at its own pace.

Run:   rawsse serve examples.broadcast_ticker:app
Watch: curl -N http://127.0.0.1:8000/ticker        (in several terminals)
Post:  curl -X POST http://127.0.0.1:8000/ticker -d 'ACME 12.5'

Each published price is encoded once and the same bytes are queued for every subscriber. A
subscriber that stops reading is evicted after the send timeout; the others never wait for it.
"""

from __future__ import annotations

from rawsse import App, Broadcast, Request, Response
from rawsse.stream import EventStream

app = App()
channel = Broadcast()
_published = 0


@app.get("/ticker")
async def subscribe(request: Request) -> EventStream:
    """Follow the ticker (heartbeat every 15 s keeps proxies from closing an idle stream)."""
    return channel.subscribe(heartbeat_s=15)


@app.post("/ticker")
async def publish(request: Request) -> Response:
    """Publish the request body (UTF-8 text) as one ``price`` event to every subscriber."""
    global _published
    try:
        price = request.body.decode()
    except UnicodeDecodeError:
        return Response("the body must be UTF-8 text\n", 400)
    _published += 1
    count = channel.publish(price, event="price", id=str(_published))
    return Response(f"sent to {count} subscribers\n")
