"""Response heads and whole error responses, formatted as bytes.

Contract: ``format_head(status, headers, http11, close, content_length=...)`` renders a
response head with the framing headers the driver decides (a handler's own ``Content-Length``,
``Transfer-Encoding`` and ``Connection`` are dropped; its ``Connection: close`` is honoured);
``error_response_bytes(status, detail, ...)`` a complete ``Connection: close`` answer. Both check
what h11 would (names are tokens, values hold no CR, LF or NUL) without h11's per-header cost,
which was a fifth of a short response's.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus

__all__ = [
    "NO_BODY_STATUSES",
    "asks_to_close",
    "error_response_bytes",
    "format_head",
    "status_phrase",
]


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

# Statuses whose responses have no body (RFC 9110 6.4.1): no Content-Length either.
NO_BODY_STATUSES = frozenset((204, 304))


def status_phrase(status: int) -> bytes:
    """The reason phrase of ``status`` (empty for an unregistered one)."""
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
    """A complete ``Connection: close`` error response.

    Used when the driver answers on its own: after a protocol error, or to refuse a connection
    over the limit before reading its request. ``body`` replaces the plain-text ``detail`` (an
    application's own error shape).
    """
    if body is None:
        body = (detail or status_phrase(status).decode()).encode() + b"\n"
    lines = [
        b"HTTP/1.1 %d %b\r\n" % (status, status_phrase(status)),
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


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
# Framing is the driver's to decide; an application's own framing headers are dropped.
_FRAMING_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def asks_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a ``Connection`` header among ``headers`` says ``close``."""
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)


# Validated and formatted header lines, by (name, value): most responses repeat the same few
# (content types, cache control), and checking them is a fifth of a short response's cost.
# Per-response values (stream ids, resume tokens) fill it too: when full it starts over, so
# the common lines come back at once instead of never being cached again.
_HEADER_LINES: dict[tuple[bytes, bytes], bytes] = {}
_HEADER_LINES_MAX = 1024


def format_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    http11: bool,
    close: bool,
    *,
    content_length: int | None = None,
) -> tuple[bytes, bool]:
    """A response head, and whether the connection closes after it.

    With ``content_length`` the body has that length; without, it is chunked on HTTP/1.1 and
    close-delimited on HTTP/1.0. Raises ``ValueError`` for a header h11 would refuse.
    """
    parts = [
        b"HTTP/1.1 %d %b\r\ndate: %b\r\nserver: rawsse\r\n"
        % (status, status_phrase(status), _DateHeader.get())
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
            if len(lines) >= _HEADER_LINES_MAX:
                lines.clear()
            lines[header] = line
        parts.append(line)
    if content_length is not None:
        if status not in NO_BODY_STATUSES:
            parts.append(b"content-length: %d\r\n" % content_length)
    elif http11:
        parts.append(b"transfer-encoding: chunked\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), close
