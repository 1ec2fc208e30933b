"""What the client tests serve with rawsse itself, and helpers to read what the client reports.

``rawsse serve tests.client.client_support:client_app`` serves the demo app plus:

- ``GET|POST /headers``: one event whose data is JSON ``{"method", "path", "headers", "body"}``
  (header names lower case), then the end of the stream;
- ``GET|POST /redirect/{status}?to=URL``: that status with ``Location: URL``;
- ``GET /ticks``: ``retry: 80``, ``id: 1``, ``a``; after ``Last-Event-ID: 1``, ``id: 2``, ``b``;
  after ``Last-Event-ID: 2``, 204 (a browser-style reconnect, ended by the server);
- ``GET /big?size=N``: one event of ``N`` bytes of ``x`` (id ``big``), then ``small``;
- ``GET /oversized``: ``data: small-1``, an event of 2 MiB (id ``big``), then ``small-2``,
  ``small-3``;
- ``GET /comments``: comments ``hello`` and `` ping`` around an event ``x``;
- ``GET /held``: ``id: 1``, ``a``, then holds the stream open (heartbeats off); after
  ``Last-Event-ID: 1``, ``id: 2``, ``b``, then the end; after ``Last-Event-ID: 2``, 204.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from rawsse.app import App
from rawsse.cli._demo_app import DemoOptions, create_demo_app
from rawsse.request import Request
from rawsse.response import Response
from rawsse.sse import Event, encode_comment
from rawsse.stream import EventStream
from tests.tools_support import rawsse_server

OVERSIZED_BYTES = 2 * 1024 * 1024


async def _items(*items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _items_then_hold(*items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item
    await anyio.sleep_forever()  # until the client leaves


def client_app() -> App:
    """The demo app plus the routes of the module docstring."""
    app = create_demo_app(DemoOptions(token_delay_s=0.0))

    async def headers(request: Request) -> EventStream:
        seen = {
            "method": request.method,
            "path": request.path,
            "headers": {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in request.headers.raw
            },
            "body": request.body.decode("utf-8", "replace"),
        }
        return EventStream(_items(Event(json.dumps(seen))), heartbeat_s=0)

    async def redirect(request: Request) -> Response:
        status = int(request.path_params["status"])
        return Response(b"", status, [("Location", request.query["to"])])

    async def ticks(request: Request) -> Response | EventStream:
        last = request.last_event_id
        if last is None:
            return EventStream(_items(Event("a", id="1")), retry_ms=80, heartbeat_s=0)
        if last == "1":
            return EventStream(_items(Event("b", id="2")), heartbeat_s=0)
        return Response(b"", status=204)

    async def big(request: Request) -> EventStream:
        size = int(request.query["size"])
        return EventStream(_items(Event("x" * size, id="big"), Event("small")), heartbeat_s=0)

    async def oversized(request: Request) -> EventStream:
        events = [
            Event("small-1"),
            Event("y" * OVERSIZED_BYTES, id="big"),
            Event("small-2"),
            Event("small-3"),
        ]
        return EventStream(_items(*events), heartbeat_s=0)

    async def comments(request: Request) -> EventStream:
        items = [encode_comment("hello"), Event("x"), b": ping\n\n"]
        return EventStream(_items(*items), heartbeat_s=0)

    async def held(request: Request) -> Response | EventStream:
        last = request.last_event_id
        if last is None:
            return EventStream(_items_then_hold(Event("a", id="1")), heartbeat_s=0)
        if last == "1":
            return EventStream(_items(Event("b", id="2")), heartbeat_s=0)
        return Response(b"", status=204)

    app.add_route("/headers", headers, ("GET", "POST"))
    app.add_route("/redirect/{status}", redirect, ("GET", "POST"))
    app.add_route("/ticks", ticks)
    app.add_route("/big", big)
    app.add_route("/oversized", oversized)
    app.add_route("/comments", comments)
    app.add_route("/held", held)
    return app


@contextmanager
def client_app_server() -> Iterator[str]:
    """``rawsse serve`` of ``client_app`` in a subprocess: its base URL."""
    with rawsse_server("tests.client.client_support:client_app", "--heartbeat", "0") as url:
        yield url


def kinds(records: list[Any]) -> list[str]:
    """The class names of ``records``, for comparing sequences at a glance."""
    return [type(record).__name__ for record in records]
