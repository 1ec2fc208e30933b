"""An async Server-Sent Events client on anyio, h11 and ``EventParser``.

Contract:

- ``connect(url, ...)`` is an async context manager for ONE response: it sends a GET or POST
  (optionally with a JSON body and headers), checks the answer is ``200`` with
  ``Content-Type: text/event-stream`` (else ``SSEStatusError`` / ``SSEContentTypeError``, carrying
  a body excerpt), and yields an ``SSEResponse`` whose async iteration gives ``Event`` values until
  the body ends. No reconnection.
- ``EventSource(url, ...)`` is an async context manager and async iterator of
  ``Event`` values that, for GET, reconnects the way a browser's ``EventSource`` does:
  1. after the stream ends or the connection fails, wait the reconnection time (3 s, or what the
     server last set with ``retry:``), doubled for each attempt in a row that delivered no event
     (capped at ``max_backoff_s``), plus up to ``jitter`` of it at random;
  2. send ``Last-Event-ID`` with the last ``id:`` seen, if any;
  3. a ``204 No Content`` answer stops the stream (iteration ends);
  4. any other non-200 status, or a wrong content type, fails it at once (raises);
  5. after ``max_reconnects`` attempts in a row without an event it gives up, raising
     ``SSEConnectionError`` from the last failure.
  POST streams (chat completions) do not reconnect unless asked to.
- A ``hook(t, record)`` sees every byte sent and read and the chunked framing (see
  ``rawsse.client``'s wire records), which is how ``rawsse trace`` shows the wire.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from rawsse.client._connection import ClientConnection
from rawsse.client._errors import (
    SSEConnectionError,
    SSEContentTypeError,
    SSEError,
    SSEProtocolError,
    SSEStatusError,
    SSETimeoutError,
)
from rawsse.client._exchange import Exchange, PreparedRequest, ResponseHead, Target
from rawsse.client._wire import WireHook
from rawsse.jsonio import dumps
from rawsse.parser import DEFAULT_MAX_EVENT_BYTES, EventParser, EventTooLarge
from rawsse.sse import Event

__all__ = [
    "EventSource",
    "SSEConnectionError",
    "SSEContentTypeError",
    "SSEError",
    "SSEProtocolError",
    "SSEResponse",
    "SSEStatusError",
    "SSETimeoutError",
    "connect",
]

Headers = Mapping[str, str] | Sequence[tuple[str, str]]

# The reconnection time before a server sets one: browsers use a few seconds (the standard
# leaves it to the user agent; Firefox and Chrome both use 3 s at the time of writing).
DEFAULT_RETRY_MS = 3000
# An error body is read only to explain the error: 1 KiB says why, within 2 s.
_EXCERPT_BYTES = 1024
_EXCERPT_TIMEOUT_S = 2.0


def _build_exchange(
    target: Target,
    method: str,
    headers: Headers | None,
    json: Any,
    body: bytes | None,
    last_event_id: str,
) -> Exchange:
    if json is not None:
        if body is not None:
            raise ValueError("give json or body, not both")
        body = dumps(json)
    given = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    names = {name.lower() for name, _ in given}
    defaults = [("Accept", "text/event-stream"), ("Cache-Control", "no-store")]
    if json is not None:
        defaults.append(("Content-Type", "application/json"))
    if last_event_id:
        defaults.append(("Last-Event-ID", last_event_id))
    merged = [(name, value) for name, value in defaults if name.lower() not in names] + given
    return Exchange(PreparedRequest.build(target, method, merged, body))


class SSEResponse:
    """One streaming response: its head, and its events by async iteration.

    ``parser`` is the ``EventParser`` in use, so ``parser.last_event_id`` and ``parser.retry``
    are the stream's last event ID and reconnection time so far.
    """

    __slots__ = ("_conn", "_events", "_index", "_read_timeout_s", "head", "parser")

    def __init__(
        self,
        conn: ClientConnection,
        head: ResponseHead,
        parser: EventParser,
        read_timeout_s: float | None,
    ) -> None:
        self._conn = conn
        self.head = head
        self.parser = parser
        self._read_timeout_s = read_timeout_s
        self._events: list[Event] = []
        self._index = 0

    @property
    def status(self) -> int:
        """The response status code."""
        return self.head.status

    async def next_event(self) -> Event | None:
        """The next event, or ``None`` when the body has ended (cleanly)."""
        while self._index >= len(self._events):
            payload = await self._conn.receive_payload(self._read_timeout_s)
            if payload is None:
                # Rule 14 of the parser: an unfinished event at EOF is discarded.
                self.parser.close()
                return None
            try:
                self._events = self.parser.feed(payload)
            except EventTooLarge as exc:
                raise SSEProtocolError(str(exc)) from exc
            self._index = 0
        event = self._events[self._index]
        self._index += 1
        return event

    async def read_body(self, max_bytes: int) -> bytes:
        """Read up to ``max_bytes`` of the raw body payload (for error excerpts)."""
        data = b""
        while len(data) < max_bytes:
            payload = await self._conn.receive_payload(self._read_timeout_s)
            if payload is None:
                break
            data += payload
        return data[:max_bytes]

    def __aiter__(self) -> SSEResponse:
        return self

    async def __anext__(self) -> Event:
        event = await self.next_event()
        if event is None:
            raise StopAsyncIteration
        return event


async def _excerpt(response: SSEResponse) -> bytes:
    """Up to 1 KiB of an error body, or what arrived of it within 2 s."""
    with anyio.move_on_after(_EXCERPT_TIMEOUT_S):
        try:
            return await response.read_body(_EXCERPT_BYTES)
        except SSEError:
            pass
    return b""


async def _open(
    target: Target,
    exchange: Exchange,
    parser: EventParser,
    *,
    connect_timeout_s: float | None,
    read_timeout_s: float | None,
    hook: WireHook | None,
    check: bool,
) -> SSEResponse:
    conn = await ClientConnection.open(target, connect_timeout_s=connect_timeout_s, hook=hook)
    try:
        await conn.send(exchange)
        head = await conn.receive_head(read_timeout_s)
        response = SSEResponse(conn, head, parser, read_timeout_s)
        if check and head.status not in (200, 204):
            raise SSEStatusError(head.status, head.reason, await _excerpt(response))
        if check and head.status == 200 and head.media_type != "text/event-stream":
            raise SSEContentTypeError(head.header("content-type"), await _excerpt(response))
    except BaseException:
        await conn.aclose()
        raise
    return response


@asynccontextmanager
async def connect(
    url: str,
    *,
    method: str | None = None,
    json: Any = None,
    body: bytes | None = None,
    headers: Headers | None = None,
    last_event_id: str = "",
    connect_timeout_s: float | None = 10.0,
    read_timeout_s: float | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    hook: WireHook | None = None,
    check: bool = True,
) -> AsyncIterator[SSEResponse]:
    """Open one SSE response at ``url`` (no reconnection); the connection closes on exit.

    ``method`` defaults to POST when a ``json`` or ``body`` is given, else GET.
    ``read_timeout_s`` bounds each wait for bytes (``None``: wait as long as the server keeps
    the connection open). With ``check=False`` any status and content type is accepted (the
    wire inspector shows error responses rather than raising).
    """
    target = Target.from_url(url)
    has_body = json is not None or body is not None
    chosen = method or ("POST" if has_body else "GET")
    exchange = _build_exchange(target, chosen, headers, json, body, last_event_id)
    parser = EventParser(max_event_bytes)
    response = await _open(
        target,
        exchange,
        parser,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        hook=hook,
        check=check,
    )
    try:
        yield response
    finally:
        await response._conn.aclose()


class EventSource:
    """A reconnecting stream of events (see the module contract).

    Use: ``async with EventSource(url) as events: async for event in events: ...``.

    ``last_event_id`` and ``retry_ms`` are the stream's current values, ``reconnects`` how many
    times it has reconnected, ``head`` the last response head received.
    """

    def __init__(
        self,
        url: str,
        *,
        method: str | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Headers | None = None,
        last_event_id: str = "",
        reconnect: bool | None = None,
        max_reconnects: int = 5,
        retry_ms: int = DEFAULT_RETRY_MS,
        max_backoff_s: float = 60.0,
        jitter: float = 0.2,
        connect_timeout_s: float | None = 10.0,
        read_timeout_s: float | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        hook: WireHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._target = Target.from_url(url)
        has_body = json is not None or body is not None
        self._method = method or ("POST" if has_body else "GET")
        self._headers = headers
        self._json = json
        self._body = body
        self._reconnect = self._method == "GET" if reconnect is None else reconnect
        self._max_reconnects = max_reconnects
        self._max_backoff_s = max_backoff_s
        self._jitter = jitter
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._hook = hook
        self._rng = rng or random.Random()
        self._parser = EventParser(max_event_bytes)
        self._parser.last_event_id = last_event_id
        self._default_retry_ms = retry_ms
        self._response: SSEResponse | None = None
        self._closed = False
        self._failures = 0  # connection attempts in a row that delivered no event
        self.reconnects = 0
        self.head: ResponseHead | None = None

    @property
    def last_event_id(self) -> str:
        """The last event ID string: sent as ``Last-Event-ID`` when reconnecting."""
        return self._parser.last_event_id

    @property
    def retry_ms(self) -> int:
        """The reconnection time in milliseconds: the server's ``retry:``, or the default."""
        retry = self._parser.retry
        return self._default_retry_ms if retry is None else retry

    def backoff_s(self) -> float:
        """How long to wait before the next reconnection attempt (rule 1 of the contract)."""
        base = self.retry_ms / 1000 * 2.0 ** max(self._failures - 1, 0)
        delay = min(base, self._max_backoff_s)
        return delay * (1 + self._jitter * self._rng.random())

    async def aclose(self) -> None:
        """Close the current connection; iteration ends."""
        self._closed = True
        await self._drop()

    async def __aenter__(self) -> EventSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> EventSource:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._response is None:
                try:
                    self._response = await self._connect()
                except SSEConnectionError as exc:
                    await self._wait_to_reconnect(exc)
                    continue
                if self._response.status == 204:
                    # "HTTP 204 No Content ... prevent the user agent from reconnecting"
                    await self.aclose()
                    raise StopAsyncIteration
            try:
                event = await self._response.next_event()
            except SSEConnectionError as exc:
                await self._drop()
                await self._wait_to_reconnect(exc)
                continue
            if event is None:
                await self._drop()
                await self._wait_to_reconnect(None)
                continue
            self._failures = 0
            return event

    async def _connect(self) -> SSEResponse:
        exchange = _build_exchange(
            self._target, self._method, self._headers, self._json, self._body, self.last_event_id
        )
        response = await _open(
            self._target,
            exchange,
            self._parser,
            connect_timeout_s=self._connect_timeout_s,
            read_timeout_s=self._read_timeout_s,
            hook=self._hook,
            check=True,
        )
        self.head = response.head
        return response

    async def _drop(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            await response._conn.aclose()

    async def _wait_to_reconnect(self, cause: SSEConnectionError | None) -> None:
        if not self._reconnect:
            if cause is None:
                self._closed = True
                return
            raise cause
        self._failures += 1
        if self._failures > self._max_reconnects:
            self._closed = True
            raise SSEConnectionError(
                f"gave up after {self._max_reconnects} reconnection attempts without an event"
                + (f": {cause}" if cause is not None else "")
            ) from cause
        await anyio.sleep(self.backoff_s())
        self.reconnects += 1
