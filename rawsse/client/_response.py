"""One streaming response: opening it (following redirects), and reading its events.

Contract: ``open_response(request, parser, ...)`` connects, sends ``request`` (with the parser's
last event ID as ``Last-Event-ID``), follows redirects by ``StreamRequest.redirect``'s rules (a
new connection per hop), and returns the ``SSEResponse`` that answered. With ``check`` it raises
``SSEStatusError`` for a status other than 200 or 204 and ``SSEContentTypeError`` for a 200 that
is not ``text/event-stream`` (each with the start of the body); without it, any answer is
returned as it is, a redirect included. Connection failures raise ``SSEConnectionError``.

An ``SSEResponse`` parses its body with its own ``EventParser`` (one per connection) into
events, comments and skipped events, in stream order: ``next_event()`` gives the events,
``next_item()`` everything, ``None`` at the body's clean end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from rawsse.client._connection import ClientConnection
from rawsse.client._errors import SSEContentTypeError, SSEError, SSEStatusError
from rawsse.client._exchange import ResponseHead
from rawsse.client._request import StreamRequest
from rawsse.client._wire import WireHook
from rawsse.parser import EventParser, StreamItem
from rawsse.sse import Event

__all__ = ["SSEResponse", "open_response"]

# An error body is read only to explain the error: 1 KiB says why, within 2 s.
_EXCERPT_BYTES = 1024
_EXCERPT_TIMEOUT_S = 2.0


class SSEResponse:
    """One streaming response: its head, and its events by async iteration.

    ``url`` is the URL that answered (after redirects). ``parser`` is this connection's
    ``EventParser``: ``parser.last_event_id`` and ``parser.retry`` are the stream's last event
    ID and reconnection time so far, ``parser.skipped_events`` counts the events skipped for
    passing ``max_event_bytes``. ``records()`` iterates over comments and skipped events too.
    """

    __slots__ = ("_conn", "_index", "_items", "_read_timeout_s", "head", "parser", "url")

    def __init__(
        self,
        conn: ClientConnection,
        head: ResponseHead,
        parser: EventParser,
        read_timeout_s: float | None,
        url: str = "",
    ) -> None:
        self._conn = conn
        self.head = head
        self.parser = parser
        self.url = url
        self._read_timeout_s = read_timeout_s
        self._items: list[StreamItem] = []
        self._index = 0

    @property
    def status(self) -> int:
        """The response status code."""
        return self.head.status

    def buffered_item(self) -> StreamItem | None:
        """The next item already parsed, without reading; ``None`` when there is none."""
        if self._index >= len(self._items):
            return None
        item = self._items[self._index]
        self._index += 1
        return item

    async def receive(self) -> bool:
        """Read the next payload and parse it; ``False`` at the body's clean end."""
        payload = await self._conn.receive_payload(self._read_timeout_s)
        if payload is None:
            # Rule 14 of the parser: an unfinished event at EOF is discarded.
            self.parser.close()
            return False
        self._items = self.parser.feed_all(payload)
        self._index = 0
        return True

    async def next_item(self) -> StreamItem | None:
        """The next event, comment or skipped event, or ``None`` at the body's clean end."""
        while True:
            item = self.buffered_item()
            if item is not None:
                return item
            if not await self.receive():
                return None

    async def next_event(self) -> Event | None:
        """The next event, or ``None`` when the body has ended (cleanly)."""
        while True:
            item = await self.next_item()
            if item is None or isinstance(item, Event):
                return item

    def records(self) -> AsyncIterator[StreamItem]:
        """Iterate over the events, comments (``Comment``) and skipped events in order."""
        return _Items(self)

    async def read_body(self, max_bytes: int) -> bytes:
        """Read up to ``max_bytes`` of the raw body payload (for error excerpts)."""
        data = b""
        while len(data) < max_bytes:
            payload = await self._conn.receive_payload(self._read_timeout_s)
            if payload is None:
                break
            data += payload
        return data[:max_bytes]

    async def aclose(self) -> None:
        """Close the connection."""
        await self._conn.aclose()

    def __aiter__(self) -> SSEResponse:
        return self

    async def __anext__(self) -> Event:
        event = await self.next_event()
        if event is None:
            raise StopAsyncIteration
        return event


class _Items:
    """``SSEResponse.records()``: an iterator object, not an async generator, so that leaving
    the loop early leaves nothing to finalise."""

    __slots__ = ("_response",)

    def __init__(self, response: SSEResponse) -> None:
        self._response = response

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> StreamItem:
        item = await self._response.next_item()
        if item is None:
            raise StopAsyncIteration
        return item


async def _excerpt(response: SSEResponse) -> bytes:
    """Up to 1 KiB of an error body, or what arrived of it within 2 s."""
    with anyio.move_on_after(_EXCERPT_TIMEOUT_S):
        try:
            return await response.read_body(_EXCERPT_BYTES)
        except SSEError:
            pass
    return b""


async def _open_once(
    request: StreamRequest,
    parser: EventParser,
    *,
    connect_timeout_s: float | None,
    read_timeout_s: float | None,
    hook: WireHook | None,
) -> SSEResponse:
    conn = await ClientConnection.open(
        request.target, connect_timeout_s=connect_timeout_s, hook=hook
    )
    try:
        await conn.send(request.exchange(parser.last_event_id))
        head = await conn.receive_head(read_timeout_s)
    except BaseException:
        await conn.aclose()
        raise
    return SSEResponse(conn, head, parser, read_timeout_s, request.url)


async def _check(response: SSEResponse) -> None:
    head = response.head
    if head.status not in (200, 204):
        raise SSEStatusError(head.status, head.reason, await _excerpt(response))
    if head.status == 200 and head.media_type != "text/event-stream":
        raise SSEContentTypeError(head.header("content-type"), await _excerpt(response))


async def open_response(
    request: StreamRequest,
    parser: EventParser,
    *,
    connect_timeout_s: float | None,
    read_timeout_s: float | None,
    hook: WireHook | None,
    check: bool,
    max_redirects: int,
) -> SSEResponse:
    """Open ``request``'s response (see the module contract)."""
    hops = 0
    while True:
        response = await _open_once(
            request,
            parser,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            hook=hook,
        )
        try:
            if not check:
                return response
            hops += 1
            following = request.redirect(response.head, hops, max_redirects)
            if following is None:
                await _check(response)
                return response
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        request = following
