"""One HTTP/1.1 request/response exchange for the client, sans-io, on h11.

Contract: ``Target.from_url`` parses an ``http://`` or ``https://`` URL. ``PreparedRequest``
validates and serialises a request once (with h11; ``Content-Length`` set for a body), so a load
generator can repeat it cheaply. ``Exchange`` is one sending of it: ``request_bytes``, then
``feed_head(data)`` until it returns the ``ResponseHead`` (1xx interim responses are skipped),
after which ``unused`` holds the bytes that followed the head and ``body_decoder()`` returns the
decoder for the body's framing. Only the response *head* goes through h11: h11 validates the
status line, headers and framing; the body is decoded by ``rawsse.client._body`` (a leaner path,
and one that can show the chunk-size lines). Protocol violations raise ``SSEProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from rawsse.client._body import BodyDecoder, ChunkedBody, CloseBody, LengthBody
from rawsse.client._errors import SSEProtocolError
from rawsse.client._wire import WireRecord

__all__ = ["Exchange", "PreparedRequest", "ResponseHead", "Target", "head_end"]

# h11's own default for a header section (it copied it from other servers): 16 KiB is tight
# for some proxies' responses, so the client allows 64 KiB.
_MAX_HEAD_BYTES = 64 * 1024
# Distinct heads kept by an ``Exchange`` head cache before it starts over.
_MAX_CACHED_HEADS = 64


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: scheme, host, port and the request target (path and query)."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Parse ``url``; raises ``ValueError`` for anything but an absolute http(s) URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"URL must start with http:// or https://: {url!r}")
        if not parts.hostname:
            raise ValueError(f"URL has no host: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def authority(self) -> str:
        """The ``Host`` header value: the port is left out when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url(self, path: str | None = None) -> str:
        """This target as a URL string, optionally with another path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path if path is None else path}"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A final (non-1xx) response head; header names are lower case, values decoded Latin-1."""

    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lower case), the values joined by ``, `` if repeated."""
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    @property
    def media_type(self) -> str | None:
        """The ``Content-Type`` without parameters, lower case, or ``None``."""
        content_type = self.header("content-type")
        if content_type is None:
            return None
        return content_type.split(";", 1)[0].strip().lower()

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this response's body."""
        connection = (self.header("connection") or "").lower()
        if self.http_version == "1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request validated and serialised once, to be sent any number of times.

    ``request`` is the validated ``h11.Request`` (it drives each exchange's state machine),
    ``data`` the bytes to send: head, then body.
    """

    method: str
    request: h11.Request
    data: bytes

    @classmethod
    def build(
        cls,
        target: Target,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> PreparedRequest:
        """Validate and serialise; ``Host`` and ``Content-Length`` are added when missing."""
        method = method.upper()
        names = {name.lower() for name, _ in headers or ()}
        all_headers = [] if "host" in names else [("Host", target.authority)]
        all_headers += headers or []
        if body is not None and "content-length" not in names:
            all_headers.append(("Content-Length", str(len(body))))
        conn = h11.Connection(h11.CLIENT)
        try:
            request = h11.Request(method=method, target=target.path, headers=all_headers)
            data = conn.send(request)
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot send this request: {exc}") from exc
        return cls(method, request, data)


class Exchange:
    """One request and the head of its response, driven by an ``h11.Connection``.

    ``heads``, when given, is a cache of response heads by their exact bytes, shared by the
    exchanges of one ``PreparedRequest``: a load generator gets the same head over and over,
    and the same bytes after the same request parse to the same head, so h11 (about 25 us a
    head) sees each distinct head once. Heads that differ (a ``Date`` each second) just miss.
    """

    __slots__ = ("_buf", "_conn", "_heads", "_request", "method", "request_bytes", "unused")

    def __init__(
        self, prepared: PreparedRequest, heads: dict[bytes, ResponseHead] | None = None
    ) -> None:
        self.method = prepared.method
        self._request = prepared.request
        self._conn: h11.Connection | None = None  # made when a head is not in ``heads``
        self._heads = heads
        self.request_bytes = prepared.data
        self._buf = b""
        self.unused = b""

    def feed_head(self, data: bytes) -> ResponseHead | None:
        """Feed bytes read after the request; return the final response head once complete."""
        buf = self._buf + data if self._buf else data
        while True:
            end = head_end(buf)
            if end < 0:
                if len(buf) > _MAX_HEAD_BYTES:
                    raise SSEProtocolError("response head larger than 64 KiB")
                self._buf = buf
                return None
            block = buf[:end]
            buf = buf[end:]
            heads = self._heads
            if heads is not None and self._conn is None:
                head = heads.get(block)
                if head is not None:
                    self._buf = b""
                    self.unused = buf
                    return head
            if self._conn is None:
                self._conn = h11.Connection(h11.CLIENT)
                # h11 accepts a response once it has seen our request; the bytes were made once.
                self._conn.send(self._request)
            self._conn.receive_data(block)
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise SSEProtocolError(f"malformed response head: {exc}") from exc
            if isinstance(event, h11.Response):
                self._buf = b""
                self.unused = buf
                head = ResponseHead(
                    status=event.status_code,
                    reason=event.reason.decode("latin-1"),
                    http_version=event.http_version.decode("ascii"),
                    headers=tuple(
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in event.headers
                    ),
                )
                if heads is not None:
                    if len(heads) >= _MAX_CACHED_HEADS:
                        heads.clear()
                    heads[block] = head
                return head
            if not isinstance(event, h11.InformationalResponse):  # pragma: no cover - h11 rule
                raise SSEProtocolError(f"unexpected {event!r} instead of a response head")

    def body_decoder(
        self, head: ResponseHead, framing: list[WireRecord] | None = None
    ) -> BodyDecoder:
        """The decoder for ``head``'s body framing (RFC 9112 section 6.3, in h11's order)."""
        if self.method == "HEAD" or head.status in (204, 304):
            return LengthBody(0, framing)
        transfer_encoding = head.header("transfer-encoding")
        if transfer_encoding is not None:
            # h11 has already refused any transfer-coding but a final "chunked".
            return ChunkedBody(framing)
        content_length = head.header("content-length")
        if content_length is not None:
            return LengthBody(int(content_length.split(",")[0]), framing)
        return CloseBody(framing)


def head_end(buf: bytes) -> int:
    """Index just past the blank line ending a head, or -1 (h11 also accepts bare LF lines)."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf + 2 < lf):
        return crlf + 4
    if lf >= 0:
        return lf + 2
    return -1
