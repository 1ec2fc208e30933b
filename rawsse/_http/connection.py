"""The HTTP/1.1 connection driver: one task per connection, h11 for request heads.

Contract: ``Connection.run()`` owns one accepted connection until it closes. It reads a request
(the head through h11, then the whole body up to the body limit), hands a ``Request`` to the
handler, writes the response, and starts the next keep-alive cycle. It knows nothing about SSE.
It talks to its peer only through a ``Transport`` (a socket satisfies it) and the reactor's
reports, and reads time from its context's clock, so its rules can be driven with scripted
bytes and no real socket (``tests/http/driver_support.py``).

Rules the driver keeps:
1. Every malformed request gets a precise status and the connection closes: 400 for bad syntax,
   an invalid Host or target, or ambiguous framing (both ``Content-Length`` and
   ``Transfer-Encoding``: no smuggling); 408 for a header section or body that arrives too
   slowly; 413 for a body over the limit (decided from ``Content-Length`` before reading it, or
   from a chunked body's wire bytes as they come); 414 for a request line longer than the header
   limit; 431 for a header section too large or too many fields (``request_head.py``,
   ``request_body.py``).
2. One empty line (CRLF) before a request line is ignored (RFC 9112 2.2).
3. The peer's end of input (FIN) ends the connection after what it already sent: a request read
   whole is answered, then the connection closes (a half-closed client still reads, RFC 9112
   9.6); a stream is not started once the input has ended, and a FIN while a stream runs ends it
   (for a stream a FIN means the client left, as an ``EventSource`` closing does). A reset
   cancels whatever handler or stream runs. The socket is watched by the shared reactor: no
   reader task per connection.
4. Streaming bodies go out chunked on HTTP/1.1 and close-delimited on HTTP/1.0, through a
   ``BodyWriter`` that coalesces and applies backpressure; a body always ends with its
   terminator, or the connection is closed (never a half-written chunk followed by more).
5. Error responses and the reasons for closing are decided here once; handlers only raise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable

import anyio
import h11

from rawsse._counters import ServerStats
from rawsse._errors import ClientDisconnected, HTTPError
from rawsse._http.body import BodyWriter
from rawsse._http.head import (
    NO_BODY_STATUSES,
    asks_to_close,
    error_response_bytes,
    format_head,
    status_phrase,
)
from rawsse._http.limits import ServerLimits
from rawsse._http.log_fields import loggable_target
from rawsse._http.request_body import ChunkedBody, SizedBody
from rawsse._http.request_head import (
    NO_BODY,
    BodyFraming,
    Refused,
    check_request_head,
    split_target,
)
from rawsse._runtime.reactor import TIMER_SLACK_S, ReactorLike
from rawsse._runtime.scopes import CancelScopeLike
from rawsse._runtime.transport import Transport, peer_closed, recv_now, send_now
from rawsse._runtime.wakeup import Wakeup, new_wakeup
from rawsse.request import Request
from rawsse.response import Response, StreamingResponse

__all__ = ["Connection", "ConnectionContext", "Handler", "error_response_bytes", "linger"]

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]

access_logger = logging.getLogger("rawsse.access")
error_logger = logging.getLogger("rawsse.error")

_RECV_BYTES = 64 * 1024
# After an error response, read (and drop) what the client still sends for at most this long,
# so closing does not reset the connection before the client has read the response.
_LINGER_S = 1.0
_LINGER_BYTES = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ConnectionContext:
    """What every connection of one server shares: handler, limits, reactor, counters, clock."""

    __slots__ = (
        "access_log",
        "all_closed",
        "clock",
        "connections",
        "handler",
        "limits",
        "new_cancel_scope",
        "reactor",
        "shutting_down",
        "stats",
    )

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        reactor: ReactorLike,
        *,
        stats: ServerStats | None = None,
        access_log: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.reactor = reactor
        self.stats = stats if stats is not None else ServerStats()
        self.access_log = access_log
        # Deadlines are on this clock (the reactor's timer calls back with the same one).
        self.clock = clock
        self.shutting_down = False
        # Admitted and not yet closed (a connection counts from its construction: at accept).
        self.connections: set[Connection] = set()
        # Set by the last connection to close once the server is draining them.
        self.all_closed: anyio.Event | None = None
        # The scopes connections hold (the server picks the backend's native class).
        self.new_cancel_scope: Callable[[], CancelScopeLike] = anyio.CancelScope


async def linger(sock: socket.socket) -> None:
    """Half-close a socket no connection drives (a refused one), then drop what the client
    still sends (bounded in time and bytes), so that closing does not become a reset that
    destroys the answer before the client reads it. (A ``Connection`` lingers through its own
    reads: ``Connection._linger``.)"""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    received = 0
    with anyio.move_on_after(_LINGER_S):
        while received < _LINGER_BYTES:
            try:
                data = recv_now(sock, _RECV_BYTES)
            except ClientDisconnected:
                return
            if data is None:
                await anyio.wait_readable(sock)
                continue
            if not data:
                return
            received += len(data)


class _StreamState:
    """One streaming response in progress: what the driver keeps of it while it is held.

    The request's line only (what the logs need), not the request with its headers and body;
    the rest is decided when the stream starts (keep-alive, the writer).
    """

    __slots__ = (
        "answered",
        "head_only",
        "http_version",
        "keep_alive",
        "method",
        "request_id",
        "response",
        "started",
        "target",
        "writer",
    )

    def __init__(
        self, request: Request, response: StreamingResponse, started: float, with_id: bool
    ) -> None:
        self.method = request.method
        self.target = _shared_target(request.target)
        self.http_version = request.http_version
        self.request_id = request.request_id if with_id else ""
        self.response = response
        self.started = started
        self.keep_alive = False
        self.head_only = False
        # False when nothing was sent (the client had left before the stream began).
        self.answered = True
        self.writer: BodyWriter | None = None


# Request targets held streams keep, shared: many streams of one route keep one copy.
_TARGETS: dict[bytes, bytes] = {}
_TARGETS_MAX = 256


def _shared_target(target: bytes) -> bytes:
    """``target``, or an equal copy kept by an earlier stream (for the first few targets)."""
    shared = _TARGETS.get(target)
    if shared is not None:
        return shared
    if len(_TARGETS) < _TARGETS_MAX:
        _TARGETS[target] = target
    return target


class _CloseConnection(Exception):
    """Internal: stop serving this connection (the reason was already handled)."""


async def _abandon(response: StreamingResponse) -> None:
    """Let a response that will never be sent release what it holds (an upstream, a
    generator), even from a cancelled scope, for a bounded time."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        await response.skip_body()


class Connection:
    """One client connection, driven from accept to close by ``run()``.

    Constructing it admits the connection: it counts as active (``ctx.stats``,
    ``ctx.connections``) from then until ``release()``, which ``run()`` ends with.
    """

    __slots__ = (
        "_body_writer",
        "_ctx",
        "_handler_scope",
        "_idle_wait",
        "_input",
        "_input_eof",
        "_input_ready",
        "_next_stream",
        "_plain_scope",
        "_read_deadline",
        "_response",
        "_timer_at",
        "_wakeup",
        "client",
        "peer_eof",
        "peer_gone",
        "sock",
    )

    def __init__(self, sock: Transport, client: tuple[str, int] | None, ctx: ConnectionContext):
        self.sock = sock
        self.client = client
        self._ctx = ctx
        ctx.connections.add(self)
        ctx.stats.connections_active += 1
        ctx.stats.connections_total += 1
        # What a reset cancels: the scope around a running handler or stream, else None.
        self._handler_scope: CancelScopeLike | None = None
        # One scope for a run of plain requests (not one per request: a scope costs as much
        # as a tenth of a short request); a streaming response leaves it and has its own.
        self._plain_scope: CancelScopeLike | None = None
        self._body_writer: BodyWriter | None = None
        self._response: StreamingResponse | None = None
        self._next_stream: tuple[Request, StreamingResponse, float] | None = None
        # Bytes the client sent beyond the request being served (the next request's start).
        self._input = b""
        self._input_eof = False  # a read returned the end of input
        self.peer_gone = False  # reset: nothing more can be sent
        self.peer_eof = False  # the peer's FIN was reported
        # Input waits (see _recv): parked on a Wakeup that the reactor's input reports and the
        # shared timer wake; no event-loop registration and no cancel scope per request.
        self._wakeup: Wakeup | None = None  # made at the first wait
        self._input_ready = True  # a fresh connection's request is often there already
        self._read_deadline: float | None = None  # set while parked
        self._idle_wait = False  # parked between requests (shutdown may end the wait)
        # An entry of ours in the reactor's timer heap is due no later than this.
        self._timer_at = math.inf

    # -- reactor callbacks -----------------------------------------------------------------

    def on_peer_gone(self) -> None:
        """The peer reset the connection (or a stream's client left): cancel what runs."""
        self.peer_gone = True
        self._input_ready = True
        self._wake_reader()  # a parked read sees the error
        if self._body_writer is not None:
            self._body_writer.on_peer_gone()
        if self._handler_scope is not None:
            self._handler_scope.cancel()

    def on_peer_eof(self) -> None:
        """The peer ended its input (FIN): a stream ends; a plain request is still answered."""
        self.peer_eof = True
        if self._body_writer is not None:
            self.on_peer_gone()
            return
        self._input_ready = True
        self._wake_reader()  # a parked read sees the end of input

    def on_writable(self) -> None:
        """The socket can take more bytes: of a streaming body, or of a response being sent."""
        if self._body_writer is not None:
            self._body_writer.on_writable()
        else:
            self._wake_reader()

    def _wake_reader(self) -> None:
        if self._wakeup is not None:
            self._wakeup.wake()

    def on_readable(self) -> None:
        """Bytes arrived: a parked read can go on (otherwise the next read tries first)."""
        self._input_ready = True
        if self._read_deadline is not None:
            self._wake_reader()

    def on_timer(self, now: float) -> float | None:
        """The shared timer: end a parked read whose deadline has come."""
        deadline = self._read_deadline
        if deadline is None:
            self._timer_at = math.inf
            return None
        if now + TIMER_SLACK_S >= deadline:
            self._timer_at = math.inf
            self._wake_reader()
            return None
        self._timer_at = deadline  # parked again since, with a later deadline
        return deadline

    # -- shutdown --------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """The server is stopping: end an idle keep-alive wait, ask a stream to finish."""
        if self._idle_wait:
            self._wake_reader()
        response = self._response
        if response is not None:
            on_shutdown = getattr(response, "on_server_shutdown", None)
            if on_shutdown is not None:
                on_shutdown()

    def release(self) -> None:
        """Stop watching and counting this connection and close its socket (idempotent).

        ``run()`` ends with it; the server calls it for a connection whose task never ran.
        """
        ctx = self._ctx
        if self not in ctx.connections:
            return
        ctx.connections.discard(self)
        ctx.stats.connections_active -= 1
        if not ctx.connections and ctx.all_closed is not None:
            ctx.all_closed.set()
        ctx.reactor.unwatch(self)
        self.sock.close()

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests on this connection until either side closes it."""
        ctx = self._ctx
        # Watched from accept to close (no syscall per request): a reset cancels whatever
        # handler is running; between requests it just marks the peer gone.
        ctx.reactor.watch(self)
        new_cancel_scope = ctx.new_cancel_scope
        try:
            first = True
            while True:
                # (Not bound to a local: a held stream must not keep the scope alive.)
                with new_cancel_scope() as self._plain_scope:
                    await self._serve_plain(first)
                self._plain_scope = None
                if self._next_stream is None:
                    break  # closing, or a handler cancelled because the peer went away
                # The body is written from this frame, with no helper coroutine in between:
                # a held stream's stack is memory.
                stream = self._take_stream()
                try:
                    writer = await self._start_stream(stream)
                    if writer is not None:
                        with new_cancel_scope() as scope:
                            self._handler_scope = writer.cancel_scope = scope
                            try:
                                await stream.response.write_body(writer)
                            except ClientDisconnected:
                                pass
                            except Exception:
                                error_logger.exception(
                                    "streaming body failed for %s %s",
                                    stream.method,
                                    loggable_target(stream.target),
                                )
                                # The body cannot be completed honestly: close without a
                                # terminator, so the client sees a truncated body, not an end.
                                writer.close()
                        self._handler_scope = None
                        if writer.closed or self.peer_gone:
                            break
                        if not stream.keep_alive or ctx.shutting_down:
                            _cork(self.sock)  # closing next: the end and the FIN in one packet
                        await writer.finish(b"0\r\n\r\n" if writer.chunked else b"")
                finally:
                    self._end_stream(stream)
                if not stream.keep_alive or self.peer_gone or ctx.shutting_down:
                    break  # (shutting down: no new request cycle, no read, just close)
                first = False
        except (_CloseConnection, ClientDisconnected, OSError):
            pass
        except Exception:  # pragma: no cover - a bug in rawsse itself; keep serving others
            error_logger.exception("unexpected error on connection from %s", self.client)
        finally:
            self.release()

    async def _serve_plain(self, first: bool) -> None:
        """Serve requests with plain responses until one streams (then ``_next_stream`` holds
        request, response and start time, to be served outside this run's cancel scope) or
        the connection is to close (``_next_stream`` left None)."""
        clock = self._ctx.clock
        while True:
            request = await self._read_request(first)
            if request is None:
                return
            started = clock()
            response = await self._run_handler(request)
            if self.peer_gone:
                if isinstance(response, StreamingResponse):
                    await _abandon(response)  # never started
                return
            if not isinstance(response, Response):
                self._next_stream = (request, response, started)
                return
            if not await self._send_response(request, response, started):
                return
            first = False

    # -- reading ---------------------------------------------------------------------------

    async def _recv(self, deadline: float, *, idle: bool = False) -> bytes | None:
        """The next bytes from the client (b"" at the end of input), or None when
        ``deadline`` (on the context's clock) passes first, or, for an ``idle`` wait between
        requests, when the server stops."""
        sock = self.sock
        ctx = self._ctx
        edge_reads = ctx.reactor.edge_reads
        while True:
            # (After a FIN or a reset every read returns at once: the end, or the error.)
            if self._input_ready or self.peer_eof or self.peer_gone or not edge_reads:
                data = recv_now(sock, _RECV_BYTES)
                if data is not None:
                    # A short read took all the socket held (so the next wait parks without
                    # a read that would fail); a full one may have left more behind; the end
                    # of input stays readable.
                    self._input_ready = not data or len(data) == _RECV_BYTES
                    return data
                # Nothing there: input arriving from now on is reported (on_readable).
                self._input_ready = False
            if idle and ctx.shutting_down:
                return None
            if not edge_reads:  # pragma: no cover - off Linux
                with anyio.move_on_after(deadline - ctx.clock()):
                    await anyio.wait_readable(sock)
                    continue
                return None
            # Due within the timer's slack counts as due (the timer fires that early).
            if ctx.clock() + TIMER_SLACK_S >= deadline:
                return None
            await self._park_until(deadline, idle)
            # Woken by input, a hang-up, the timer or a shutdown: the checks above tell which.

    async def _park_until(self, deadline: float, idle: bool) -> None:
        self._read_deadline = deadline
        self._idle_wait = idle
        if deadline < self._timer_at:
            # One entry per connection mostly: a later deadline reuses the pending entry,
            # which re-arms itself when it finds the read still parked.
            self._timer_at = deadline
            self._ctx.reactor.call_at(deadline, self)
        wakeup = self._wakeup
        if wakeup is None:
            wakeup = self._wakeup = new_wakeup()
        try:
            await wakeup.park()
        finally:
            self._read_deadline = None
            self._idle_wait = False

    async def _first_bytes(self, deadline: float, idle: bool) -> bytes | None:
        """The start of the next request: what came after the previous one, else the next
        read, with one empty line before it dropped. None when there is none: the end of
        input, the idle ``deadline`` passed, or the server stopping between requests."""
        data, self._input = self._input, b""
        skipped = False
        while True:
            if not skipped and data[:2] == b"\r\n":
                # RFC 9112 2.2: "a server that is expecting to receive and parse a
                # request-line SHOULD ignore at least one empty line (CRLF) received prior to
                # the request-line" (some clients send one after a POST body).
                data = data[2:]
                skipped = True
            if data:
                return data
            if self._input_eof or (idle and self._ctx.shutting_down):
                return None
            received = await self._recv(deadline, idle=idle)
            if not received:
                self._input_eof = received is not None
                return None
            data = received

    async def _read_head(self, conn: h11.Connection, first: bool) -> h11.Request | None:
        """The next request's head (None: the connection is to close quietly, or was
        answered 408). Raises h11's ``RemoteProtocolError`` for a malformed one."""
        ctx = self._ctx
        limits = ctx.limits
        started = ctx.clock()
        # Wait for the first byte: idle keep-alive, or a fresh connection.
        idle_s = limits.header_timeout_s if first else limits.keepalive_timeout_s
        data = await self._first_bytes(started + idle_s, not first)
        if data is None:
            return None  # idle, or no request at all: close quietly, as nginx and uvicorn do
        # Slowloris: the header section is due within the limit of the connection opening
        # (first request) or of its first byte (later ones).
        deadline = (started if first else ctx.clock()) + limits.header_timeout_s
        while True:
            conn.receive_data(data)  # (b"": the end of input)
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event if isinstance(event, h11.Request) else None
            received = await self._recv(deadline)
            if received is None:
                await self._send_error(408, "request header section not received in time")
                return None
            data = received
            self._input_eof = not data

    async def _read_request(self, first: bool) -> Request | None:
        """Read one request with its body, or answer an error and return None to close."""
        # A fresh h11 connection per request: it parses the head only (the body is read
        # here, and the response formatted here), so nothing carries over between requests
        # but the bytes the client sent beyond this one.
        conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._ctx.limits.max_header_bytes
        )
        try:
            event = await self._read_head(conn, first)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431 and self._request_line_too_long(conn):
                status = 414
            # h11's message quotes the offending bytes: never reflect them to the client.
            detail = {
                414: "request target too long",
                431: "request header section too large",
            }.get(status, "malformed request")
            await self._send_error(status, detail)
            return None
        if event is None:
            return None
        return await self._read_body(conn, event)

    def _request_line_too_long(self, conn: h11.Connection) -> bool:
        # h11 bounds a head still arriving; when its first line alone is over the limit, the
        # target is what is too long (request_head.py, rule 1).
        buffered = conn.trailing_data[0]
        line_end = buffered.find(b"\r\n")
        return line_end < 0 or line_end > self._ctx.limits.max_header_bytes

    async def _read_body(self, conn: h11.Connection, event: h11.Request) -> Request | None:
        headers = list(event.headers)
        rest = conn.trailing_data[0]  # the bytes after the head
        try:
            framing = check_request_head(event.method, event.target, headers, self._ctx.limits)
            if framing is NO_BODY:
                # (Most requests: no body to read.)
                self._input = rest
                body: bytes | None = b""
            else:
                body = await self._receive_body(event, framing, rest)
        except Refused as exc:
            await self._send_error(exc.status, exc.detail, target=event.target, method=event.method)
            return None
        if body is None:
            return None
        return Request(
            _ascii(event.method),
            bytes(event.target),
            headers,
            body,
            client=self.client,
            http_version=_ascii(event.http_version),
        )

    async def _receive_body(
        self, event: h11.Request, framing: BodyFraming, rest: bytes
    ) -> bytes | None:
        """The body (None when the client left first or took too long: then answered 408)."""
        ctx = self._ctx
        length = framing.length
        reader = SizedBody(length) if length is not None else ChunkedBody(ctx.limits.max_body_bytes)
        reader.feed(rest)
        deadline: float | None = None  # armed at the first wait: most bodies come with heads
        while not reader.done:
            if deadline is None:
                deadline = ctx.clock() + ctx.limits.body_timeout_s
                if framing.expects_continue and event.http_version == b"1.1" and not rest:
                    await self._send_all(_CONTINUE)
            data = await self._recv(deadline)
            if data is None:
                await self._send_error(
                    408, "request body not received in time", method=event.method
                )
                return None
            if not data:
                return None  # the client left before its body ended: nobody to answer
            reader.feed(data)
        self._input = reader.rest
        return reader.body()

    # -- writing ---------------------------------------------------------------------------

    async def _send_all(self, data: bytes) -> None:
        sock = self.sock
        # Most responses fit the socket buffer: one send, no timeout armed.
        sent = send_now(sock, data)
        self._ctx.stats.bytes_sent += sent
        if sent == len(data):
            return
        view = memoryview(data)
        reactor = self._ctx.reactor
        wakeup = self._wakeup
        if wakeup is None:
            wakeup = self._wakeup = new_wakeup()
        reactor.want_writable(self, True)
        try:
            with anyio.fail_after(self._ctx.limits.send_timeout_s):
                while True:
                    view = view[sent:]
                    if not view:
                        return
                    # Woken by the reactor's writability report (``on_writable``).
                    await wakeup.park()
                    if self.peer_gone:
                        raise ClientDisconnected("the client has gone")
                    sent = send_now(sock, view)
                    self._ctx.stats.bytes_sent += sent
        finally:
            reactor.want_writable(self, False)

    async def _send_error(
        self,
        status: int,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        target: bytes | None = None,
        method: bytes | None = None,
        head: bool = False,
    ) -> None:
        """Answer ``status`` with ``Connection: close``, then close gracefully.

        ``head``: the request was a HEAD, so the answer carries no body (RFC 9110 9.3.2).

        When the request's target is known, the handler may render the error in its own
        shape (``render_error(path, status, detail)``: a vendor's JSON error, say).
        """
        self._ctx.stats.count_response(status)
        head = head or method == b"HEAD"
        data = None
        render = getattr(self._ctx.handler, "render_error", None)
        if target is not None and render is not None:
            verb = method.decode("ascii", "replace") if method is not None else None
            rendered: Response | None = render(split_target(target)[0], status, detail, verb)
            if rendered is not None:
                data = _rendered_error(status, detail, headers, rendered, head)
        if data is None:
            data = error_response_bytes(status, detail, headers, include_body=not head)
        try:
            await self._send_all(data)
        except (ClientDisconnected, TimeoutError):
            return
        await self._linger()

    async def _linger(self) -> None:
        """Half-close, then drop what the client still sends (bounded in time and bytes), so
        that closing does not become a reset that destroys the answer before it is read."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = self._ctx.clock() + _LINGER_S
        received = 0
        while received < _LINGER_BYTES:
            try:
                data = await self._recv(deadline)
            except ClientDisconnected:
                return
            if not data:
                return
            received += len(data)

    async def _run_handler(self, request: Request) -> Response | StreamingResponse:
        """The handler's response; a reset meanwhile cancels the run's scope."""
        self._handler_scope = self._plain_scope
        try:
            return await self._ctx.handler(request)
        except HTTPError as exc:
            return Response(
                exc.detail or status_phrase(exc.status).decode(),
                exc.status,
                exc.headers,
            )
        except Exception:
            error_logger.exception(
                "handler failed for %s %s (rid=%s)",
                request.method,
                loggable_target(request.target),
                request.request_id,
            )
            return Response("internal server error", 500)
        finally:
            self._handler_scope = None

    def _log(
        self, request: Request | _StreamState, status: int, sent_bytes: int, started: float
    ) -> None:
        ctx = self._ctx
        ctx.stats.count_response(status)
        if ctx.access_log and access_logger.isEnabledFor(logging.INFO):
            # Every field is printable ASCII without '"': the target is escaped; method and
            # version passed h11's grammar; the request id is a safe token or made here.
            access_logger.info(
                '%s - "%s %s HTTP/%s" %d %d %.1fms rid=%s',
                self.client[0] if self.client else "-",
                request.method,
                loggable_target(request.target),
                request.http_version,
                status,
                sent_bytes,
                (ctx.clock() - started) * 1000,
                request.request_id,
            )

    async def _send_response(self, request: Request, response: Response, started: float) -> bool:
        """Write a response with a known body; False when the connection must close.

        Formatted here like a streaming head (h11's send path is most of a small response's
        cost).
        """
        status = response.status
        body = response.body
        sent_bytes = 0
        http11 = request.http_version == "1.1"
        close = not http11 or self._ctx.shutting_down or asks_to_close(request.headers.raw)
        try:
            try:
                head, close = format_head(
                    status, response.headers, http11, close, content_length=len(body)
                )
            except ValueError as exc:
                error_logger.error(
                    "cannot send response to %s %s: %s",
                    request.method,
                    loggable_target(request.target),
                    exc,
                )
                await self._send_error(500, "internal server error", head=request.method == "HEAD")
                return False
            if body and request.method != "HEAD" and status not in NO_BODY_STATUSES:
                await self._send_all(head + body)
                sent_bytes = len(body)
            else:
                await self._send_all(head)
        except (ClientDisconnected, TimeoutError):
            return False
        finally:
            self._log(request, status, sent_bytes, started)
        return not (close or self.peer_gone)

    def _take_stream(self) -> _StreamState:
        """The streaming response ``_serve_plain`` left, with what it needs of its request.

        What a held stream does not need is let go of: the request (its headers and body),
        the head once sent.
        """
        assert self._next_stream is not None
        request, response, started = self._next_stream
        self._next_stream = None
        ctx = self._ctx
        stream = _StreamState(request, response, started, ctx.access_log)
        # Keep-alive as h11 decides it: HTTP/1.1 without "Connection: close" on either side.
        stream.keep_alive = not (
            request.http_version != "1.1" or ctx.shutting_down or asks_to_close(request.headers.raw)
        )
        stream.head_only = request.method == "HEAD"
        return stream

    def _client_left(self) -> bool:
        """Whether the client's input has ended: reported, or there to see now (a look at
        the socket, so a FIN sent with the request is seen whatever the reactor reported)."""
        if self.peer_eof or self.peer_gone:
            return True
        try:
            return peer_closed(self.sock)
        except ClientDisconnected:
            return True

    async def _start_stream(self, stream: _StreamState) -> BodyWriter | None:
        """Send the stream's head and make its writer (None for HEAD, when the client has
        left, or when the head cannot be sent: then the answer is complete here)."""
        ctx = self._ctx
        response = stream.response
        if self._client_left():
            # Rule 3: a FIN means the client left; its stream is not started.
            stream.keep_alive = False
            stream.answered = False
            await _abandon(response)
            return None
        http11 = stream.http_version == "1.1"
        head_only = stream.head_only
        try:
            head, close = format_head(
                response.status, response.headers, http11, not stream.keep_alive
            )
        except ValueError as exc:
            stream.keep_alive = False
            error_logger.error(
                "cannot send response to %s %s: %s",
                stream.method,
                loggable_target(stream.target),
                exc,
            )
            await self._send_error(500, "internal server error", head=head_only)
            return None
        stream.keep_alive = not close
        if head_only:
            await self._send_all(head)
            await response.skip_body()
            return None
        writer = stream.writer = self._body_writer = BodyWriter(
            self.sock,
            ctx.reactor,
            self,
            chunked=http11,
            high_water_bytes=ctx.limits.write_buffer_bytes,
            send_timeout_s=ctx.limits.send_timeout_s,
            totals=ctx.stats,
            # The head goes out with the first chunk: one send for a short stream.
            prefix=head,
        )
        # Made again for the next request's wait: a held stream does not read.
        self._wakeup = None
        self._response = response
        return writer

    def _end_stream(self, stream: _StreamState) -> None:
        """Retire a stream however it ended, and log it."""
        self._handler_scope = None
        self._body_writer = None
        self._response = None
        writer = stream.writer
        if writer is not None:
            # Its heartbeat and eviction timers must not touch the socket once the connection
            # has moved on (keep-alive) or closed.
            writer.close()
            # Its heartbeat entry keeps the writer until it comes due (up to an interval):
            # not the stream's cancel scope too (on asyncio, ~1 KiB).
            writer.cancel_scope = None
        if stream.answered:
            sent = writer.bytes_sent if writer else 0
            self._log(stream, stream.response.status, sent, stream.started)


def _cork(sock: Transport) -> None:
    """Hold back a TCP socket's last partial segment until the close sends it, the FIN with it
    (Linux ``TCP_CORK``): one packet for the client to take, not two (measured on loopback, ~6 us
    less of the server's CPU per stream ended, 100,000 of them at a shutdown)."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None and _TCP_CORK is not None:
        with contextlib.suppress(OSError):  # not TCP (a Unix socket)
            setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)


_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


def _rendered_error(
    status: int,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None,
    rendered: Response,
    head: bool,
) -> bytes:
    """An error the application rendered in its own shape, as a ``Connection: close`` answer."""
    content_type = b"text/plain; charset=utf-8"
    extra = list(headers or [])
    for name, value in rendered.headers:
        if name.lower() == b"content-type":
            content_type = value
        else:
            extra.append((name, value))
    return error_response_bytes(
        status,
        detail,
        extra,
        body=rendered.body,
        content_type=content_type,
        include_body=not head,
    )


# Methods and HTTP versions decoded once: a held stream keeps its request line for the log,
# and "GET" or "HTTP/1.1" need not be a string of its own per stream.
_ASCII: dict[bytes, str] = {}


def _ascii(token: bytes) -> str:
    text = _ASCII.get(token)
    if text is None:
        text = token.decode("ascii")
        if len(_ASCII) < 64:  # a client may send any method: bounded
            _ASCII[bytes(token)] = text
    return text
