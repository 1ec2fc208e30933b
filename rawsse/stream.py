"""``EventStream``: the response a handler streams Server-Sent Events through.

Contract: an ``EventStream`` is a ``StreamingResponse`` with the SSE headers. It is fed either
by a *source* (an async iterable of events) or by a *producer* (an async function receiving the
stream, calling ``await stream.send(...)``). Either way:

1. Backpressure: frames are queued on the connection's ``BodyWriter``; past its high-water mark
   the producer waits for the socket (``drain``), up to the send timeout, then the client is
   evicted and counted. A faster producer is slowed, never buffered without bound.
2. Heartbeats: after ``heartbeat_s`` of silence the shared reactor timer writes a comment (or
   an ``event: ping`` frame); data resets the silence. No timer task per stream; 0 turns them off.
3. ``retry_ms`` is sent once, before the first event, in a block of its own.
4. Disconnect: a client that closes or resets cancels the producer (the connection driver
   cancels the handler scope), and the source is closed with ``aclose()`` so upstream work stops.
   ``stream.disconnected`` and ``on_close`` callbacks let a handler ask and react.
5. Every exit ends cleanly: a complete frame, then the route's terminal frames (``farewell`` for
   a server shutdown or the end of ``max_lifetime_s``; ``error_frame`` for an exception in the
   producer), then the chunked terminator, which the driver writes.

A task other than the producer (an engine loop feeding many streams) may queue events with
``send_nowait``: no waiting and no backpressure, the client evicted past the hard buffer cap.

Source items may be ``bytes`` (complete pre-encoded frames, sent as they are), ``Event``, ``str``
(one event's data), or any JSON-serialisable value (one ``data:`` line, the chat hot path).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import anyio

from rawsse._counters import METRICS, StreamMetrics
from rawsse._errors import ClientDisconnected
from rawsse._http.body import BodyWriter
from rawsse._runtime.ticker import fresh_sleep_schedule
from rawsse.response import HeadersLike, StreamingResponse
from rawsse.sse import Event, encode_comment, encode_event, encode_json_data, encode_retry

__all__ = ["EventStream", "StreamEnd"]

Producer = Callable[["EventStream"], Awaitable[None]]
# Why a stream ended: passed to ``farewell`` and ``on_close`` callbacks.
StreamEnd = Literal["complete", "disconnected", "evicted", "error", "shutdown", "lifetime"]

PING_FRAME = b'event: ping\ndata: {"type": "ping"}\n\n'
COMMENT_FRAME = encode_comment()
# Closing a cancelled source gets this long to run its cleanup.
_ACLOSE_TIMEOUT_S = 5.0

SSE_HEADERS = [
    ("cache-control", "no-cache, no-transform"),
    # Tells nginx (and proxies that honour it) not to buffer the stream.
    ("x-accel-buffering", "no"),
]
# Encoded once and shared by every stream without headers of its own (memory per held stream).
_SSE_HEADER_BYTES = [
    *((name.encode(), value.encode()) for name, value in SSE_HEADERS),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


def encode_item(item: Any) -> bytes:
    """Encode one source item: bytes pass through, ``Event`` / str / JSON values are framed."""
    if type(item) is bytes:
        return item
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, str):
        return encode_event(item)
    return encode_json_data(item)


def encode_message(
    data: Any, *, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    """One event's frame from ``send``-style arguments (``bytes`` data is UTF-8 text here)."""
    if event is None and id is None and retry is None and not isinstance(data, bytes):
        return encode_item(data)
    return encode_event(data, event=event, id=id, retry=retry)


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response.

    ``source`` is an async iterable of items or an async function ``producer(stream)``.
    ``heartbeat_s`` (``None`` = the server's default of 15 s; 0 = off), ``heartbeat`` is
    ``"comment"`` or ``"ping"`` (an ``event: ping`` frame) or raw frame bytes. ``retry_ms`` sends a
    ``retry:`` hint first, in a block of its own (``None``: the server's default, ``--retry-ms``,
    none unless set; ``"off"``: none even then, for a route whose frames carry the hint, as the
    chat dialects do). ``send_timeout_s`` overrides the server's slow-client timeout for this
    stream. ``max_lifetime_s`` ends the stream after that long, minus up to ``lifetime_jitter`` of
    it at random, so clients do not all reconnect at once. ``farewell(reason)`` returns frames to
    send when the stream is ended by the server (``shutdown``, ``lifetime``) and the client can
    still read them; ``error_frame(exc)`` frames for a failure. ``stop_reason`` tells a producer
    why it is being cancelled.
    """

    __slots__ = (
        "_body",
        "_close_callbacks",
        "_ended_by_server",
        "_source",
        "end_reason",
        "error_frame",
        "events_sent",
        "farewell",
        "heartbeat_frame",
        "heartbeat_s",
        "lifetime_jitter",
        "max_lifetime_s",
        "metrics",
        "retry_ms",
        "send_timeout_s",
    )

    # The server's defaults, set by ``rawsse serve --heartbeat`` (and the like) at startup.
    default_heartbeat_s: float = 15.0
    default_retry_ms: int | None = None

    def __init__(
        self,
        source: AsyncIterable[Any] | Producer | None = None,
        *,
        status: int = 200,
        headers: HeadersLike | None = None,
        heartbeat_s: float | None = None,
        heartbeat: Literal["comment", "ping"] | bytes = "comment",
        retry_ms: int | Literal["off"] | None = None,
        send_timeout_s: float | None = None,
        max_lifetime_s: float | None = None,
        lifetime_jitter: float = 0.1,
        farewell: Callable[[StreamEnd], bytes | None] | None = None,
        error_frame: Callable[[BaseException], bytes | None] | None = None,
        metrics: StreamMetrics = METRICS,
    ) -> None:
        if headers is None:
            self.status = status
            self.headers = _SSE_HEADER_BYTES
            self._chunks = None
        else:
            self.status = status
            self.headers = _sse_headers_with(headers)
            self._chunks = None
        self._source = source
        self.heartbeat_s = self.default_heartbeat_s if heartbeat_s is None else heartbeat_s
        if heartbeat == "comment":
            self.heartbeat_frame = COMMENT_FRAME
        elif heartbeat == "ping":
            self.heartbeat_frame = PING_FRAME
        else:
            self.heartbeat_frame = heartbeat
        self.retry_ms: int | None
        if retry_ms == "off":
            self.retry_ms = None
        else:
            self.retry_ms = self.default_retry_ms if retry_ms is None else retry_ms
        if self.retry_ms is not None:
            encode_retry(self.retry_ms)  # validate now, not mid-stream
        self.send_timeout_s = send_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.lifetime_jitter = lifetime_jitter
        self.farewell = farewell
        self.error_frame = error_frame
        self.metrics = metrics
        self._body: BodyWriter | None = None
        self._close_callbacks: list[Callable[[StreamEnd], Any]] | None = None
        self._ended_by_server: StreamEnd | None = None
        self.end_reason: StreamEnd | None = None
        self.events_sent = 0

    # -- the imperative API ----------------------------------------------------------------

    async def send(
        self,
        data: Any,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        """Send one event; waits only when the client is behind (backpressure)."""
        await self.send_raw(encode_message(data, event=event, id=id, retry=retry))

    async def send_raw(self, frame: bytes) -> None:
        """Send pre-encoded frame bytes as they are (they must be complete frames)."""
        body = self._body
        if body is None:
            raise RuntimeError("the stream has not started: send() belongs inside the producer")
        self.events_sent += 1
        self.metrics.events_total += 1
        if body.write(frame):
            await body.drain()

    def send_nowait(
        self,
        data: Any,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> bool:
        """Queue one event without waiting, from any task of the server: an engine loop feeding
        many streams hands each its token without waking each stream's producer.

        No backpressure: a client that falls behind by more than the hard buffer cap is evicted,
        as a broadcast subscriber is. Returns False (and queues nothing) once the client is gone
        or the stream is ending.
        """
        body = self._body
        if body is None:
            raise RuntimeError("the stream has not started: its producer has not run yet")
        if body.closed or body.finishing:
            return False
        self.events_sent += 1
        self.metrics.events_total += 1
        body.push(encode_message(data, event=event, id=id, retry=retry))
        return not body.closed

    async def comment(self, text: str = "") -> None:
        """Send a comment frame (ignored by clients; keeps intermediaries from timing out)."""
        body = self._body
        if body is None:
            raise RuntimeError("the stream has not started: comment() belongs inside the producer")
        if body.write(encode_comment(text)):
            await body.drain()

    @property
    def disconnected(self) -> bool:
        """True once the client has gone (or was evicted): sending would raise."""
        return self._body is not None and self._body.closed

    @property
    def bytes_queued(self) -> int:
        """Bytes accepted for this stream that the client has not taken yet."""
        return self._body.buffered_bytes if self._body is not None else 0

    @property
    def bytes_sent(self) -> int:
        """Bytes of this stream the socket has taken so far."""
        return self._body.bytes_sent if self._body is not None else 0

    @property
    def send_blocked_s(self) -> float:
        """Total time producers spent waiting for this client (backpressure)."""
        return self._body.send_blocked_s if self._body is not None else 0.0

    @property
    def last_write_s(self) -> float | None:
        """Monotonic time of the last frame queued (data or heartbeat)."""
        return self._body.last_write_s if self._body is not None else None

    def on_close(self, callback: Callable[[StreamEnd], Any]) -> None:
        """Call ``callback(reason)`` when the stream ends, however it ends."""
        if self._close_callbacks is None:
            self._close_callbacks = []
        self._close_callbacks.append(callback)

    # -- server signals --------------------------------------------------------------------

    def on_server_shutdown(self) -> None:
        """The server is stopping: end the producer; the farewell frame follows."""
        self.end("shutdown")

    def end(self, reason: StreamEnd = "shutdown") -> None:
        """End the stream from outside the producer (the producer is cancelled)."""
        if self._ended_by_server is None:
            self._ended_by_server = reason
        body = self._body
        if body is not None and body.cancel_scope is not None:
            body.cancel_scope.cancel()

    # -- driving ---------------------------------------------------------------------------

    async def write_body(self, body: BodyWriter) -> None:
        """Run the producer and write its events (called once by the connection driver).

        The driver runs this inside a cancel scope (``body.cancel_scope``) that a departing
        client, a server shutdown (``end``) or the stream's lifetime cancels. Writes are
        synchronous, so the terminal frames still go out from the cancelled producer.
        """
        self._start(body)
        fresh_sleep_schedule()  # a kept-alive connection's earlier stream paced its own
        metrics = self.metrics
        failure: BaseException | None = None
        source = self._source
        try:
            # The producer runs in this frame, not a helper's: a held stream's stack is memory.
            if source is None:
                pass
            elif callable(source) and not hasattr(source, "__aiter__"):
                await source(self)
            else:
                iterator: AsyncIterator[Any] = aiter(source)
                try:
                    async for item in iterator:
                        self.events_sent += 1
                        metrics.events_total += 1
                        if body.write(item if type(item) is bytes else encode_item(item)):
                            await body.drain()
                finally:
                    await _close_source(iterator)
        except Exception as exc:
            failure = exc  # ends the stream with ``error_frame``; the server goes on
        except BaseException as exc:
            failure = exc  # cancelled: by the client leaving, ``end()`` or the lifetime
            raise
        finally:
            self._end(body, failure)
            # The exception's traceback holds this frame: forget it here, or every cancelled
            # stream is a reference cycle (its source, generator and frames) for the collector.
            failure = None

    def _start(self, body: BodyWriter) -> None:
        """Before the producer runs: counters, timeouts, heartbeats, the retry hint, lifetime."""
        self._body = body
        metrics = self.metrics
        metrics.streams_active += 1
        metrics.streams_total += 1
        if self.send_timeout_s is not None:
            body.send_timeout_s = self.send_timeout_s
        body.enable_keepalive(
            self.heartbeat_frame, self.heartbeat_s, metrics.count_heartbeat_callback
        )
        if self.retry_ms is not None:
            body.write(encode_retry(self.retry_ms))
        scope = body.cancel_scope
        if scope is not None:
            if self._ended_by_server is not None:
                scope.cancel()
            if self.max_lifetime_s:
                lifetime = self.max_lifetime_s * (1 - self.lifetime_jitter * random.random())
                scope.deadline = anyio.current_time() + lifetime

    def _end(self, body: BodyWriter, failure: BaseException | None) -> None:
        """After the producer: the terminal frames, the end reason, counters and callbacks."""
        reason = self._end_reason(body, failure)
        if reason == "error":
            assert failure is not None
            self._write_terminal(body, self.error_frame, failure)
        elif reason in ("shutdown", "lifetime"):
            self._write_terminal(body, self.farewell, reason)
        self.end_reason = reason
        metrics = self.metrics
        metrics.streams_active -= 1
        if reason == "disconnected":
            metrics.client_disconnects_total += 1
        elif reason == "evicted":
            metrics.slow_client_evictions_total += 1
        for callback in self._close_callbacks or ():
            callback(reason)

    def _end_reason(self, body: BodyWriter, failure: BaseException | None) -> StreamEnd:
        """Why the stream ended: the one place that decides it.

        A client that is gone decides first, whatever the producer did last (its final frames
        could not reach it). Then a producer that returned is complete, one that raised an
        exception failed, and one that was cancelled was stopped from outside (``stop_reason``).
        """
        if not body.closed:
            if failure is None:
                return "complete"
            if isinstance(failure, Exception) and not isinstance(failure, ClientDisconnected):
                return "error"
        return self.stop_reason or "disconnected"

    @property
    def stop_reason(self) -> StreamEnd | None:
        """Why the stream is being stopped from outside its producer, or None while it is not.

        ``"disconnected"`` or ``"evicted"`` once the client is gone, ``"shutdown"`` (or the
        reason given to ``end``) once the server ends it, ``"lifetime"`` once ``max_lifetime_s``
        ran out. A producer's ``finally`` can ask it to tell a client that left (nothing more
        can reach it) from a server that ends the stream (its ``farewell`` frames still can).
        """
        body = self._body
        if body is None:
            return self._ended_by_server
        if body.closed:
            return "evicted" if body.evicted else "disconnected"
        if self._ended_by_server is not None:
            return self._ended_by_server
        scope = body.cancel_scope
        if scope is not None and anyio.current_time() >= scope.deadline:
            return "lifetime"
        return None

    def _write_terminal(
        self, body: BodyWriter, make: Callable[[Any], bytes | None] | None, arg: Any
    ) -> None:
        if make is None or body.closed:
            return
        frame = make(arg)
        if frame:
            body.write_last(frame)  # leaves with the terminator, in one send

    async def skip_body(self) -> None:
        """HEAD request: never start the producer; close an async-generator source."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


async def _close_source(iterator: AsyncIterator[Any]) -> None:
    """Close a source iterator so that its upstream work stops, even when cancelled."""
    aclose = getattr(iterator, "aclose", None)
    # An async generator that ran to its end is closed already (no frame left): no cleanup
    # to wait for, so no shielded scopes (they cost ~5% of a short stream).
    if aclose is not None and getattr(iterator, "ag_frame", True) is not None:
        # Shielded so the source's own cleanup runs even though we were cancelled.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_ACLOSE_TIMEOUT_S):
            await aclose()


# Header names seen in streams' own headers, encoded once (a few names, many streams).
_NAME_BYTES: dict[str, bytes] = {}


def _sse_headers_with(headers: HeadersLike) -> list[tuple[bytes, bytes]]:
    """The SSE headers (the shared encoded pairs) plus a stream's own: per stream, only its
    own values are new bytes (a held chat stream keeps its headers for its whole life)."""
    names = _NAME_BYTES
    extra = []
    for name, value in _items(headers):
        encoded = names.get(name)
        if encoded is None:
            encoded = name.encode("latin-1")
            if len(names) < 256:
                names[name] = encoded
        extra.append((encoded, value.encode("latin-1")))
    *sse, content_type = _SSE_HEADER_BYTES
    if any(name.lower() == b"content-type" for name, _ in extra):
        return [*sse, *extra]  # the stream names its own content type
    return [*sse, *extra, content_type]


def _items(headers: HeadersLike | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)  # type: ignore[arg-type]
