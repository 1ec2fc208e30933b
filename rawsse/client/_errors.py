"""The exceptions rawsse's SSE client raises, named for what went wrong on the server's side.

Contract: every failure of a client request surfaces as one ``SSEError`` subclass, raised
``from`` the underlying exception where there is one:

- ``SSEConnectionError``: the connection could not be opened, was reset, or ended early;
  ``SSETimeoutError`` (connect or read timeout) and ``SSEProtocolError`` (malformed HTTP or
  chunked framing) are its subclasses. A reconnecting client retries these.
- ``SSEStatusError``: a status other than 200 (and other than 204, which means "stop"), or a
  redirect the client will not follow (``SSERedirectError``: too many, or to a URL that is not
  http or https); ``SSEContentTypeError``: 200 but not ``text/event-stream``. Per WHATWG these
  *fail* the connection: a reconnecting client gives up at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rawsse._errors import RawsseError

if TYPE_CHECKING:
    from rawsse.client._exchange import ResponseHead

__all__ = [
    "SSEConnectionError",
    "SSEContentTypeError",
    "SSEError",
    "SSEProtocolError",
    "SSERedirectError",
    "SSEStatusError",
    "SSETimeoutError",
]


class SSEError(RawsseError):
    """Base class of every error the SSE client raises."""


class SSEConnectionError(SSEError):
    """The connection failed: refused, reset, closed early, or given up after reconnects."""


class SSETimeoutError(SSEConnectionError):
    """Connecting, or waiting for the next bytes, took longer than its timeout."""


class SSEProtocolError(SSEConnectionError):
    """The server broke HTTP/1.1: a malformed response head or chunked framing."""


def _excerpt_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= 200 else text[:200] + "..."


class SSEStatusError(SSEError):
    """The server answered with a status other than 200 (or 204).

    ``status`` and ``reason`` are the status line's, ``body_excerpt`` the start of the body
    (at most 1 KiB was read), useful because error bodies say why.
    """

    def __init__(
        self, status: int, reason: str, body_excerpt: bytes = b"", *, message: str = ""
    ) -> None:
        self.status = status
        self.reason = reason
        self.body_excerpt = body_excerpt
        detail = _excerpt_text(body_excerpt)
        message = message or f"server answered {status} {reason}".rstrip() + ", expected 200"
        super().__init__(message + (f": {detail}" if detail else ""))


class SSERedirectError(SSEStatusError):
    """The server redirected where the client will not follow: past ``max_redirects``, or to a
    URL that is not http or https. ``location`` is the ``Location`` header as sent."""

    def __init__(self, head: ResponseHead, location: str, why: str) -> None:
        self.location = location
        said = f"server answered {head.status} {head.reason}".rstrip()
        message = f"{said} to {location!r}, not followed: {why}"
        super().__init__(head.status, head.reason, message=message)


class SSEContentTypeError(SSEError):
    """The server answered 200 with a ``Content-Type`` other than ``text/event-stream``."""

    def __init__(self, content_type: str | None, body_excerpt: bytes = b"") -> None:
        self.content_type = content_type
        self.body_excerpt = body_excerpt
        got = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
        detail = _excerpt_text(body_excerpt)
        message = f"expected Content-Type text/event-stream, got {got}"
        super().__init__(message + (f": {detail}" if detail else ""))
