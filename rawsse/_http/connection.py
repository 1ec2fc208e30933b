"""The HTTP/1.1 connection driver: one task per connection, h11 in, h11 out.

Contract: ``Connection.run()`` owns one accepted socket until it closes. It reads a request
(header section, then the whole body up to the body limit), hands a ``Request`` to the handler,
writes the response, and starts the next keep-alive cycle. It knows nothing about SSE.

Rules the driver keeps:
1. Every malformed request gets a precise status and the connection closes: 400 for bad syntax
   or ambiguous framing (both ``Content-Length`` and ``Transfer-Encoding``: no smuggling), 408 for
   a header section or body that arrives too slowly, 413 for a body over the limit (decided from
   ``Content-Length`` before reading it), 431 for a header section too large or too many headers.
2. A peer that goes away while its handler runs (FIN or RST) cancels the handler: the socket is
   watched by the shared reactor, so no reader task per connection is needed.
3. Streaming bodies go out chunked on HTTP/1.1 and close-delimited on HTTP/1.0, through a
   ``BodyWriter`` that coalesces and applies backpressure; a body always ends with its
   terminator, or the connection is closed (never a half-written chunk followed by more).
4. Error responses and the reasons for closing are decided here once; handlers only raise.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import anyio
import h11

from rawsse._counters import ServerStats
from rawsse._errors import ClientDisconnected, HTTPError
from rawsse._http.body import BodyWriter
from rawsse._http.limits import ServerLimits
from rawsse._runtime.reactor import TIMER_SLACK_S, Reactor
from rawsse._runtime.scopes import CancelScopeLike
from rawsse._runtime.wakeup import Wakeup, new_wakeup
from rawsse.request import Request
from rawsse.response import Response, StreamingResponse

__all__ = ["Connection", "ConnectionContext", "Handler", "linger"]

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]

access_logger = logging.getLogger("rawsse.access")
error_logger = logging.getLogger("rawsse.error")

_RECV_BYTES = 64 * 1024
# After an error response, read (and drop) what the client still sends for at most this long,
# so closing does not reset the connection before the client has read the response.
_LINGER_S = 1.0
_LINGER_BYTES = 256 * 1024


class ConnectionContext:
    """What every connection of one server shares: handler, limits, reactor, counters."""

    __slots__ = (
        "access_log",
        "all_closed",
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
        reactor: Reactor,
        *,
        stats: ServerStats | None = None,
        access_log: bool = True,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.reactor = reactor
        self.stats = stats if stats is not None else ServerStats()
        self.access_log = access_log
        self.shutting_down = False
        self.connections: set[Connection] = set()
        # Set by the last connection to close once the server is draining them.
        self.all_closed: anyio.Event | None = None
        # The scopes connections hold (the server picks the backend's native class).
        self.new_cancel_scope: Callable[[], CancelScopeLike] = anyio.CancelScope


class _DateHeader:
    """The ``Date`` header value, formatted at most once per second."""

    value = b""
    second = -1

    @classmethod
    def get(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = formatdate(now, usegmt=True).encode()
        return cls.value


_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


def _status_phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"")


def error_response_bytes(
    status: int,
    detail: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    *,
    body: bytes | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
    include_body: bool = True,
) -> bytes:
    """A complete ``Connection: close`` error response, formatted without h11.

    Used when h11 cannot (or should not) frame the answer: after a protocol error, or to
    refuse a connection over the limit before reading its request. ``body`` replaces the
    plain-text ``detail`` (an application's own error shape).
    """
    if body is None:
        body = (detail or _status_phrase(status).decode()).encode() + b"\n"
    lines = [
        b"HTTP/1.1 %d %b\r\n" % (status, _status_phrase(status)),
        b"date: " + _DateHeader.get() + b"\r\n",
        b"content-type: " + content_type + b"\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-content-type-options: nosniff\r\n",
        b"connection: close\r\n",
    ]
    for name, value in extra_headers or ():
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines) + (body if include_body else b"")


# Query parameters whose values are credentials (Gemini's ?key=, signed URLs, tokens).
_SECRET_PARAMS = re.compile(
    rb"(?i)((?:^|[?&;])(?:key|api_key|apikey|api-key|token|access_token|resume_token|auth|password"
    rb"|sig|signature)=)"
    rb"[^&;#]*"
)


def _loggable_target(target: bytes) -> str:
    """The request target for the access log, with credential values in the query redacted."""
    path, sep, query = target.partition(b"?")
    if sep:
        query = _SECRET_PARAMS.sub(rb"\1[redacted]", b"?" + query)[1:]
    return (path + sep + query).decode("latin-1").encode("unicode_escape").decode("ascii")


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
# Framing is the driver's to decide; an application's own framing headers are dropped.
_FRAMING_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def _asks_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)


# Validated and formatted header lines, by (name, value): most responses repeat the same few
# (content types, cache control), and checking them is a fifth of a short response's cost.
_HEADER_LINES: dict[tuple[bytes, bytes], bytes] = {}
_HEADER_LINES_MAX = 1024

# Statuses whose responses have no body (RFC 9110 6.4.1): no Content-Length either.
_NO_BODY_STATUSES = frozenset((204, 304))


def _format_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    http11: bool,
    close: bool,
    *,
    content_length: int | None = None,
) -> tuple[bytes, bool]:
    """A response head, and whether the connection closes after it.

    Formatted here rather than by h11, whose per-header validation is a fifth of a short
    response's cost; the same rules are checked (names are tokens, values hold no CR, LF or
    NUL). With ``content_length`` the body has that length; without, it is chunked on HTTP/1.1
    and close-delimited on HTTP/1.0.
    """
    parts = [
        b"HTTP/1.1 %d %b\r\ndate: %b\r\nserver: rawsse\r\n"
        % (status, _status_phrase(status), _DateHeader.get())
    ]
    lines = _HEADER_LINES
    for header in headers:
        line = lines.get(header)
        if line is None:
            name, value = header
            lower = name.lower()
            if lower in _FRAMING_HEADERS:
                if lower == b"connection" and b"close" in value.lower():
                    close = True
                continue
            if not _TOKEN.match(name) or _FORBIDDEN_IN_VALUE.search(value):
                raise ValueError(f"illegal response header {name!r}: {value!r}")
            line = b"%b: %b\r\n" % (name, value)
            if len(lines) < _HEADER_LINES_MAX:
                lines[header] = line
        parts.append(line)
    if content_length is not None:
        if status not in _NO_BODY_STATUSES:
            parts.append(b"content-length: %d\r\n" % content_length)
    elif http11:
        parts.append(b"transfer-encoding: chunked\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), close


async def linger(sock: socket.socket) -> None:
    """Half-close, then drop what the client still sends (bounded in time and bytes), so that
    closing does not become a reset that destroys the answer before the client reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    received = 0
    with anyio.move_on_after(_LINGER_S):
        while received < _LINGER_BYTES:
            try:
                data = sock.recv(_RECV_BYTES)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            except OSError:
                return
            if not data:
                return
            received += len(data)


class _StreamState:
    """One streaming response in progress: what the driver keeps of it while it is held.

    The request's line only (what the access log needs), not the request with its headers and
    body; the rest is decided when the stream starts (keep-alive, the bytes the client sent
    after the request, the writer).
    """

    __slots__ = (
        "eof",
        "head_only",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "request_id",
        "response",
        "started",
        "target",
        "trailing",
        "writer",
    )

    def __init__(
        self, request: Request, response: StreamingResponse, started: float, with_id: bool
    ) -> None:
        self.method = request.method
        self.target = request.target
        self.path = request.path
        self.http_version = request.http_version
        self.request_id = request.request_id if with_id else ""
        self.response = response
        self.started = started
        self.keep_alive = False
        self.head_only = False
        self.trailing: bytes | bytearray = b""
        self.eof = False
        self.writer: BodyWriter | None = None


class _CloseConnection(Exception):
    """Internal: stop serving this connection (the reason was already handled)."""


class Connection:
    """One client connection, driven from accept to close by ``run()``."""

    __slots__ = (
        "_body_writer",
        "_ctx",
        "_h11",
        "_handler_scope",
        "_idle_wait",
        "_input_ready",
        "_next_stream",
        "_plain_scope",
        "_read_deadline",
        "_response",
        "_timer_at",
        "_wakeup",
        "client",
        "peer_gone",
        "sock",
    )

    def __init__(self, sock: socket.socket, client: tuple[str, int] | None, ctx: ConnectionContext):
        self.sock = sock
        self.client = client
        self._ctx = ctx
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=ctx.limits.max_header_bytes
        )
        # What a hang-up cancels: the scope around a running handler or stream, else None.
        self._handler_scope: CancelScopeLike | None = None
        # One scope for a run of plain requests (not one per request: a scope costs as much
        # as a tenth of a short request); a streaming response leaves it and has its own.
        self._plain_scope: CancelScopeLike | None = None
        self._body_writer: BodyWriter | None = None
        self._response: StreamingResponse | None = None
        self._next_stream: tuple[Request, StreamingResponse, float] | None = None
        self.peer_gone = False
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
        """The peer closed or reset while its handler ran: cancel the handler."""
        self.peer_gone = True
        self._wake_reader()  # a parked read sees the EOF or the error
        if self._body_writer is not None:
            self._body_writer.on_peer_gone()
        if self._handler_scope is not None:
            self._handler_scope.cancel()

    def on_writable(self) -> None:
        """The socket can take more bytes of a streaming body."""
        if self._body_writer is not None:
            self._body_writer.on_writable()

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

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests on this connection until either side closes it."""
        ctx = self._ctx
        ctx.connections.add(self)
        ctx.stats.connections_active += 1
        ctx.stats.connections_total += 1
        # Watched from accept to close (no syscall per request): a hang-up cancels whatever
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
                                    "streaming body failed for %s %s", stream.method, stream.path
                                )
                                # The body cannot be completed honestly: close without a
                                # terminator, so the client sees a truncated body, not an end.
                                writer.close()
                        self._handler_scope = None
                        if writer.closed or self.peer_gone:
                            break
                        await writer.finish(b"0\r\n\r\n" if writer.chunked else b"")
                finally:
                    self._end_stream(stream)
                if not stream.keep_alive or self.peer_gone:
                    break
                self._restart_h11(stream.trailing, stream.eof)
                first = False
        except (_CloseConnection, ClientDisconnected):
            pass
        except OSError:
            pass
        except Exception:  # pragma: no cover - a bug in rawsse itself; keep serving others
            error_logger.exception("unexpected error on connection from %s", self.client)
        finally:
            ctx.connections.discard(self)
            ctx.stats.connections_active -= 1
            if not ctx.connections and ctx.all_closed is not None:
                ctx.all_closed.set()
            ctx.reactor.unwatch(self)
            self.sock.close()
            # A pending read-deadline entry may keep this object until it fires: keep it small.
            self._h11 = None  # type: ignore[assignment]

    async def _serve_plain(self, first: bool) -> None:
        """Serve requests with plain responses until one streams (then ``_next_stream`` holds
        request, response and start time, to be served outside this run's cancel scope) or
        the connection is to close (``_next_stream`` left None)."""
        while True:
            request = await self._read_request(first)
            if request is None:
                return
            started = time.monotonic()
            response = await self._run_handler(request)
            if self.peer_gone:
                if isinstance(response, StreamingResponse):
                    # Never started: let it release what it holds (an upstream, a generator).
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        await response.skip_body()
                return
            if not isinstance(response, Response):
                self._next_stream = (request, response, started)
                return
            if not await self._send_response(request, response, started):
                return
            first = False

    # -- reading ---------------------------------------------------------------------------

    async def _recv(self, deadline: float, *, idle: bool = False) -> bytes | None:
        """The next bytes from the client (b"" at EOF), or None when ``deadline`` (monotonic)
        passes first, or, for an ``idle`` wait between requests, when the server stops."""
        sock = self.sock
        edge_reads = self._ctx.reactor.edge_reads
        while True:
            if self._input_ready or self.peer_gone or not edge_reads:
                try:
                    data = sock.recv(_RECV_BYTES)
                except BlockingIOError:
                    # Nothing there: input arriving from now on is reported (on_readable).
                    self._input_ready = False
                except OSError as exc:
                    raise ClientDisconnected(str(exc)) from exc
                else:
                    # A short read took all the socket held (so the next wait parks without
                    # a read that would fail); a full one may have left more behind.
                    self._input_ready = len(data) == _RECV_BYTES
                    return data
            if idle and self._ctx.shutting_down:
                return None
            if not edge_reads:
                with anyio.move_on_after(deadline - time.monotonic()):
                    await anyio.wait_readable(sock)
                    continue
                return None
            # Due within the timer's slack counts as due (the timer fires that early).
            if time.monotonic() + TIMER_SLACK_S >= deadline:
                return None
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
            # Woken by input, a hang-up, the timer or a shutdown: the checks above tell which.

    async def _read_request(self, first: bool) -> Request | None:
        """Read one request with its body, or answer an error and return None to close."""
        conn = self._h11
        limits = self._ctx.limits
        try:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if self._ctx.shutting_down and not first:
                    return None
                started = time.monotonic()
                if not conn.trailing_data[0]:
                    # Wait for the first byte: idle keep-alive, or a fresh connection.
                    idle_s = limits.header_timeout_s if first else limits.keepalive_timeout_s
                    data = await self._recv(started + idle_s, idle=not first)
                    if data is None:
                        return None  # idle: close quietly, as nginx and uvicorn do
                    conn.receive_data(data)
                    event = conn.next_event()
                # else: part of a request came with the previous one; the rest is due in time.
                if event is h11.NEED_DATA:
                    # Slowloris: the header section is due within the limit of the connection
                    # opening (first request) or of its first byte (later ones).
                    deadline = (started if first else time.monotonic()) + limits.header_timeout_s
                    while event is h11.NEED_DATA:
                        data = await self._recv(deadline)
                        if data is None:
                            await self._send_error(
                                408, "request header section not received in time"
                            )
                            return None
                        conn.receive_data(data)
                        event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            detail = (
                # h11's message quotes the offending bytes: never reflect them to the client.
                "request header section too large" if status == 431 else "malformed request"
            )
            await self._send_error(status, detail)
            return None
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 guarantees a Request
            raise _CloseConnection
        return await self._read_body(event)

    def _check_framing(
        self, headers: list[tuple[bytes, bytes]]
    ) -> tuple[tuple[int, str] | None, bool]:
        """A refusal (status, detail) or None; and whether the request has a body."""
        limits = self._ctx.limits
        if len(headers) > limits.max_headers:
            return (431, f"too many header fields (limit {limits.max_headers})"), False
        # h11 only bounds a header section that arrives in pieces; one that arrives whole in a
        # single read is measured here, so the limit does not depend on packet boundaries.
        section_bytes = 0
        content_length: bytes | None = None
        has_transfer_encoding = False
        for name, value in headers:
            section_bytes += len(name) + len(value) + 4
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                has_transfer_encoding = True
        if section_bytes > limits.max_header_bytes:
            return (431, "request header section too large"), False
        if has_transfer_encoding and content_length is not None:
            refusal = 400, "both Content-Length and Transfer-Encoding: ambiguous framing refused"
            return refusal, False
        length = int(content_length) if content_length is not None else 0
        if length > limits.max_body_bytes:
            return (413, f"request body too large (limit {limits.max_body_bytes} bytes)"), False
        return None, has_transfer_encoding or length > 0

    async def _read_body(self, event: h11.Request) -> Request | None:
        conn = self._h11
        limits = self._ctx.limits
        headers = list(event.headers)
        refusal, has_body = self._check_framing(headers)
        if refusal is not None:
            await self._send_error(*refusal, target=event.target, method=event.method)
            return None
        if not has_body:
            # No body to read (most requests): h11's EndOfMessage would tell nothing new, and
            # the h11 connection is replaced before the next request anyway (its trailing
            # data, the bytes after this header section, carries over).
            return self._new_request(event, headers, b"")
        chunks: list[bytes] = []
        size = 0
        # Armed at the first wait only: most bodies arrive with their headers.
        deadline: float | None = None
        try:
            while True:
                body_event = conn.next_event()
                if body_event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        await self._send_all(
                            conn.send(
                                h11.InformationalResponse(
                                    status_code=100, headers=[], reason=b"Continue"
                                )
                            )
                        )
                    if deadline is None:
                        deadline = time.monotonic() + limits.body_timeout_s
                    data = await self._recv(deadline)
                    if data is None:
                        await self._send_error(
                            408, "request body not received in time", method=event.method
                        )
                        return None
                    conn.receive_data(data)
                    continue
                if isinstance(body_event, h11.Data):
                    size += len(body_event.data)
                    if size > limits.max_body_bytes:
                        await self._send_error(
                            413,
                            f"request body too large (limit {limits.max_body_bytes} bytes)",
                            target=event.target,
                            method=event.method,
                        )
                        return None
                    chunks.append(bytes(body_event.data))
                    continue
                if isinstance(body_event, h11.EndOfMessage):
                    break
                # ConnectionClosed before the body ended: nobody to answer.
                return None
        except h11.RemoteProtocolError as exc:
            await self._send_error(
                exc.error_status_hint, "malformed request body", head=event.method == b"HEAD"
            )
            return None
        body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        return self._new_request(event, headers, body)

    def _new_request(
        self, event: h11.Request, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Request:
        return Request(
            event.method.decode("ascii"),
            bytes(event.target),
            headers,
            body,
            client=self.client,
            http_version=event.http_version.decode("ascii"),
        )

    # -- writing ---------------------------------------------------------------------------

    async def _send_all(self, data: bytes) -> None:
        sock = self.sock
        # Most responses fit the socket buffer: one send, no timeout armed.
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        self._ctx.stats.bytes_sent += sent
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        with anyio.fail_after(self._ctx.limits.send_timeout_s):
            while view:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise ClientDisconnected(str(exc)) from exc
                self._ctx.stats.bytes_sent += sent
                view = view[sent:]
                if view:
                    await anyio.wait_writable(sock)

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
            path = target.partition(b"?")[0].decode("latin-1")
            verb = method.decode("ascii", "replace") if method is not None else None
            rendered: Response | None = render(path, status, detail, verb)
            if rendered is not None:
                content_type = b"text/plain; charset=utf-8"
                extra = list(headers or [])
                for name, value in rendered.headers:
                    if name.lower() == b"content-type":
                        content_type = value
                    else:
                        extra.append((name, value))
                data = error_response_bytes(
                    status,
                    detail,
                    extra,
                    body=rendered.body,
                    content_type=content_type,
                    include_body=not head,
                )
        if data is None:
            data = error_response_bytes(status, detail, headers, include_body=not head)
        try:
            await self._send_all(data)
        except (ClientDisconnected, TimeoutError):
            return
        await self._linger()

    async def _linger(self) -> None:
        await linger(self.sock)

    async def _run_handler(self, request: Request) -> Response | StreamingResponse:
        """The handler's response; a hang-up meanwhile cancels the run's scope."""
        self._handler_scope = self._plain_scope
        try:
            return await self._ctx.handler(request)
        except HTTPError as exc:
            return Response(
                exc.detail or _status_phrase(exc.status).decode(),
                exc.status,
                exc.headers,
            )
        except Exception:
            error_logger.exception(
                "handler failed for %s %s (rid=%s)",
                request.method,
                _loggable_target(request.target),
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
            access_logger.info(
                '%s - "%s %s HTTP/%s" %d %d %.1fms rid=%s',
                self.client[0] if self.client else "-",
                request.method,
                _loggable_target(request.target),
                request.http_version,
                status,
                sent_bytes,
                (time.monotonic() - started) * 1000,
                request.request_id,
            )

    async def _send_response(self, request: Request, response: Response, started: float) -> bool:
        """Write a response with a known body; False when the connection must close.

        Formatted here like a streaming head (h11's send path is most of a small response's
        cost); h11 then starts afresh for the next request, as after a stream.
        """
        status = response.status
        body = response.body
        sent_bytes = 0
        http11 = request.http_version == "1.1"
        close = not http11 or self._ctx.shutting_down or _asks_to_close(request.headers.raw)
        try:
            try:
                head, close = _format_head(
                    status, response.headers, http11, close, content_length=len(body)
                )
            except ValueError as exc:
                error_logger.error(
                    "cannot send response to %s %s: %s", request.method, request.path, exc
                )
                await self._send_error(500, "internal server error", head=request.method == "HEAD")
                return False
            if body and request.method != "HEAD" and status not in _NO_BODY_STATUSES:
                await self._send_all(head + body)
                sent_bytes = len(body)
            else:
                await self._send_all(head)
        except (ClientDisconnected, TimeoutError):
            return False
        finally:
            self._log(request, status, sent_bytes, started)
        if close or self.peer_gone:
            return False
        self._restart_h11(*self._h11.trailing_data)
        return True

    def _restart_h11(self, trailing: bytes | bytearray, eof: bool) -> None:
        """A fresh h11 connection for the next request, fed what the client already sent."""
        fresh = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._ctx.limits.max_header_bytes
        )
        if trailing:  # (receive_data(b"") would mean end of input)
            fresh.receive_data(bytes(trailing))
        if eof:
            fresh.receive_data(b"")
        self._h11 = fresh

    def _take_stream(self) -> _StreamState:
        """The streaming response ``_serve_plain`` left, with what it needs of its request.

        What a held stream does not need is let go of: the request (its headers and body),
        the h11 connection once the head is formatted (the body is framed here; a fresh one
        takes over the bytes the client sent meanwhile, for the next request), the head once
        sent.
        """
        assert self._next_stream is not None
        request, response, started = self._next_stream
        self._next_stream = None
        ctx = self._ctx
        stream = _StreamState(request, response, started, ctx.access_log)
        # Keep-alive as h11 decides it: HTTP/1.1 without "Connection: close" on either side.
        stream.keep_alive = not (
            request.http_version != "1.1"
            or ctx.shutting_down
            or _asks_to_close(request.headers.raw)
        )
        stream.head_only = request.method == "HEAD"
        return stream

    async def _start_stream(self, stream: _StreamState) -> BodyWriter | None:
        """Send the stream's head and make its writer (None for HEAD, or when the head cannot
        be sent: then the answer is complete here)."""
        ctx = self._ctx
        response = stream.response
        http11 = stream.http_version == "1.1"
        head_only = stream.head_only
        try:
            head, close = _format_head(
                response.status, response.headers, http11, not stream.keep_alive
            )
        except ValueError as exc:
            stream.keep_alive = False
            error_logger.error("cannot send response to %s %s: %s", stream.method, stream.path, exc)
            await self._send_error(500, "internal server error", head=head_only)
            return None
        stream.keep_alive = not close
        stream.trailing, stream.eof = self._h11.trailing_data
        self._h11 = None  # type: ignore[assignment]
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
        sent = writer.bytes_sent if writer else 0
        self._log(stream, stream.response.status, sent, stream.started)
