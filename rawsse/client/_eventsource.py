"""An async Server-Sent Events client: one response (``connect``), or a reconnecting source.

Contract:

- ``connect(url, ...)`` is an async context manager for ONE response: it sends a GET or POST
  (optionally with a JSON body and headers) with a browser's headers, follows redirects, checks
  the answer is ``200`` with ``Content-Type: text/event-stream`` (else ``SSEStatusError`` /
  ``SSEContentTypeError``, carrying a body excerpt), and yields an ``SSEResponse`` whose async
  iteration gives ``Event`` values until the body ends. No reconnection.
- ``EventSource(url, ...)`` is an async context manager and async iterator of ``Event`` values
  that, for GET, reconnects the way a browser's ``EventSource`` does:
  1. after the stream ends or the connection fails, wait the reconnection time (3 s, or what the
     server last set with ``retry:``), doubled for each attempt in a row that delivered no event
     (capped at ``max_backoff_s``), plus up to ``jitter`` of it at random;
  2. connect to the URL it was given (a redirect counted for one connection only), with a fresh
     parser that keeps the last event ID and reconnection time, and send ``Last-Event-ID`` with
     the last ``id:`` seen, if any;
  3. a ``204 No Content`` answer stops the stream (iteration ends);
  4. any other non-200 status, a wrong content type, or a redirect not to follow fails it at once
     (raises);
  5. after ``max_reconnects`` attempts in a row without an event it gives up, raising
     ``SSEConnectionError`` from the last failure.
  POST streams (chat completions) do not reconnect unless asked to. ``restart()`` closes the
  connection and connects again at once. Each change of the connection is an ``Opened``,
  ``ConnectionLost`` or ``GaveUp`` record, given to ``on_state`` and, with the comments and the
  skipped events, to ``records()`` iteration, in stream order.
- An event larger than ``max_event_bytes`` is skipped, not fatal: the stream goes on with the
  next event, the skip shows as an ``EventSkipped`` record and in ``skipped_events``. Failing
  instead would either end a long-lived stream for one event, or, reconnecting, meet the same
  event again after the same ``Last-Event-ID``, forever.
- A ``hook(t, record)`` sees every byte sent and read and the chunked framing (see
  ``rawsse.client``'s wire records), which is how ``rawsse trace`` shows the wire.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from rawsse.client._errors import SSEConnectionError, SSEError
from rawsse.client._exchange import ResponseHead
from rawsse.client._request import DEFAULT_MAX_REDIRECTS, Headers, StreamRequest
from rawsse.client._response import SSEResponse, open_response
from rawsse.client._states import ConnectionLost, GaveUp, Opened, SourceState, StateHook
from rawsse.client._wire import WireHook
from rawsse.parser import DEFAULT_MAX_EVENT_BYTES, EventParser, StreamItem
from rawsse.sse import Event

__all__ = ["EventSource", "SourceRecord", "connect"]

SourceRecord = StreamItem | SourceState
"""What ``EventSource.records()`` gives: events, comments, skipped events, connection states."""

# The reconnection time before a server sets one: browsers use a few seconds (the standard
# leaves it to the user agent; Firefox and Chrome both use 3 s at the time of writing).
DEFAULT_RETRY_MS = 3000


def _parser(max_event_bytes: int, last_event_id: str, retry: int | None) -> EventParser:
    """A parser for one connection, carrying on the source's last event ID and retry."""
    parser = EventParser(max_event_bytes, skip_oversized=True)
    parser.last_event_id = last_event_id
    parser.retry = retry
    return parser


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
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    hook: WireHook | None = None,
    check: bool = True,
) -> AsyncIterator[SSEResponse]:
    """Open one SSE response at ``url`` (no reconnection); the connection closes on exit.

    ``method`` defaults to POST when a ``json`` or ``body`` is given, else GET.
    ``read_timeout_s`` bounds each wait for bytes (``None``: wait as long as the server keeps
    the connection open). Up to ``max_redirects`` redirects are followed. With ``check=False``
    any status and content type is the answer, a redirect's too (the wire inspector shows error
    responses rather than raising).
    """
    request = StreamRequest.build(url, method=method, json=json, body=body, headers=headers)
    response = await open_response(
        request,
        _parser(max_event_bytes, last_event_id, None),
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        hook=hook,
        check=check,
        max_redirects=max_redirects,
    )
    try:
        yield response
    finally:
        await response.aclose()


class EventSource:
    """A reconnecting stream of events (see the module contract).

    Use: ``async with EventSource(url) as events: async for event in events: ...``, or
    ``async for record in events.records()`` for comments and connection states too.

    ``last_event_id`` and ``retry_ms`` are the stream's current values, ``reconnects`` how many
    times it has reconnected, ``skipped_events`` how many events it skipped for passing
    ``max_event_bytes``, ``head`` the last response head received.
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
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        on_state: StateHook | None = None,
        hook: WireHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._request = StreamRequest.build(
            url, method=method, json=json, body=body, headers=headers
        )
        self._reconnect = self._request.method == "GET" if reconnect is None else reconnect
        self._max_reconnects = max_reconnects
        self._max_backoff_s = max_backoff_s
        self._jitter = jitter
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_event_bytes = max_event_bytes
        self._max_redirects = max_redirects
        self._on_state = on_state
        self._hook = hook
        self._rng = rng or random.Random()
        self._default_retry_ms = retry_ms
        # The source's own values, carried from one connection's parser to the next.
        self._last_event_id = last_event_id
        self._retry: int | None = None
        self._skipped = 0
        self._response: SSEResponse | None = None
        self._pending: deque[SourceRecord] = deque()  # records to give before reading on
        self._error: SSEError | None = None  # raised once the pending records are given
        self._wait_s: float | None = None  # the wait due before the next connection
        self._scope: anyio.CancelScope | None = None  # around the I/O of the iterating task
        self._restarting = False
        self._attempted = False
        self._closed = False
        self._failures = 0  # connection attempts in a row that delivered no event
        self.reconnects = 0
        self.head: ResponseHead | None = None

    @property
    def url(self) -> str:
        """The URL this source connects to (each connection starts from it)."""
        return self._request.url

    @property
    def last_event_id(self) -> str:
        """The last event ID string: sent as ``Last-Event-ID`` when reconnecting."""
        if self._response is not None:
            return self._response.parser.last_event_id
        return self._last_event_id

    @property
    def retry_ms(self) -> int:
        """The reconnection time in milliseconds: the server's ``retry:``, or the default."""
        retry = self._retry if self._response is None else self._response.parser.retry
        return self._default_retry_ms if retry is None else retry

    @property
    def skipped_events(self) -> int:
        """How many events were skipped for passing ``max_event_bytes``, on any connection."""
        current = 0 if self._response is None else self._response.parser.skipped_events
        return self._skipped + current

    def backoff_s(self) -> float:
        """How long to wait before the next reconnection attempt (rule 1 of the contract)."""
        base = self.retry_ms / 1000 * 2.0 ** max(self._failures - 1, 0)
        delay = min(base, self._max_backoff_s)
        return delay * (1 + self._jitter * self._rng.random())

    def records(self) -> AsyncIterator[SourceRecord]:
        """Iterate over everything in order: ``Event``, ``Comment`` and ``EventSkipped``
        records, and the ``Opened``, ``ConnectionLost`` and ``GaveUp`` states."""
        return _Records(self)

    async def restart(self) -> None:
        """Close the connection now and connect again at once (no wait), sending the last
        event ID. From another task, the iterating task closes and reconnects."""
        if self._closed:
            return
        self._restarting = True
        if self._scope is not None:
            self._scope.cancel()
        else:
            await self._restart_now()

    async def aclose(self) -> None:
        """Close the current connection; iteration ends. From another task, the iterating
        task closes the connection."""
        self._closed = True
        self._pending.clear()
        self._error = None
        if self._scope is not None:
            self._scope.cancel()
        else:
            await self._drop()

    async def __aenter__(self) -> EventSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> EventSource:
        return self

    async def __anext__(self) -> Event:
        while True:
            record = await self.next_record()
            if isinstance(record, Event):
                return record

    async def next_record(self) -> SourceRecord:
        """The next record (see ``records``); raises ``StopAsyncIteration`` at the end."""
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._closed:
                raise StopAsyncIteration
            if self._response is not None:
                item = self._response.buffered_item()
                if item is not None:
                    if isinstance(item, Event):
                        self._failures = 0
                    return item
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    await (self._connect() if self._response is None else self._read())
                finally:
                    self._scope = None
            # restart() or aclose() from another task may have cancelled the scope.
            if self._closed:
                await self._drop()
            elif self._restarting:
                await self._restart_now()

    def _emit(self, record: SourceState) -> None:
        self._pending.append(record)
        if self._on_state is not None:
            self._on_state(record)

    async def _connect(self) -> None:
        if self._wait_s is not None:
            await anyio.sleep(self._wait_s)
            self._wait_s = None
        if self._attempted:
            self.reconnects += 1
        self._attempted = True
        parser = _parser(self._max_event_bytes, self._last_event_id, self._retry)
        try:
            response = await open_response(
                self._request,
                parser,
                connect_timeout_s=self._connect_timeout_s,
                read_timeout_s=self._read_timeout_s,
                hook=self._hook,
                check=True,
                max_redirects=self._max_redirects,
            )
        except SSEConnectionError as exc:
            self._lost(exc)
            return
        except SSEError:
            self._closed = True  # rule 4: fail the connection
            raise
        self.head = response.head
        if response.status == 204:
            # "HTTP 204 No Content ... prevent the user agent from reconnecting"
            self._closed = True
            await response.aclose()
            return
        self._response = response
        self._emit(Opened(response.url, self.reconnects, parser.last_event_id))

    async def _read(self) -> None:
        assert self._response is not None
        try:
            more = await self._response.receive()
        except SSEConnectionError as exc:
            await self._drop()
            self._lost(exc)
            return
        if not more:
            await self._drop()
            self._lost(None)

    async def _drop(self) -> None:
        """Close the connection, keeping what its parser learnt."""
        response, self._response = self._response, None
        if response is not None:
            parser = response.parser
            self._last_event_id = parser.last_event_id
            self._retry = parser.retry
            self._skipped += parser.skipped_events
            await response.aclose()

    async def _restart_now(self) -> None:
        self._restarting = False
        self._wait_s = None
        await self._drop()
        if self._attempted:
            self._emit(ConnectionLost("restarted", 0.0, self._failures))

    def _lost(self, cause: SSEConnectionError | None) -> None:
        """The connection ended (``cause`` ``None``) or failed: wait and retry, or stop."""
        if not self._reconnect:
            self._closed = True
            self._error = cause
            return
        self._failures += 1
        if self._failures > self._max_reconnects:
            self._closed = True
            error = SSEConnectionError(
                f"gave up after {self._max_reconnects} reconnection attempts without an event"
                + (f": {cause}" if cause is not None else "")
            )
            error.__cause__ = cause
            self._error = error
            self._emit(GaveUp(error))
            return
        self._wait_s = self.backoff_s()
        reason = "the server ended the stream" if cause is None else str(cause)
        self._emit(ConnectionLost(reason, self._wait_s, self._failures, cause))


class _Records:
    """``EventSource.records()``: an iterator object (nothing to finalise if left early)."""

    __slots__ = ("_source",)

    def __init__(self, source: EventSource) -> None:
        self._source = source

    def __aiter__(self) -> _Records:
        return self

    async def __anext__(self) -> SourceRecord:
        return await self._source.next_record()
