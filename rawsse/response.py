"""What a handler returns: a whole body, JSON, or a body streamed as it is produced.

Contract: ``Response`` (and ``JSONResponse``) carry their body; the driver sends them with a
``Content-Length``. A ``StreamingResponse`` has no length: the driver sends its head, then calls
``write_body(body)`` with a ``BodyWriter`` (chunked on HTTP/1.1, close-delimited on HTTP/1.0),
then ends the body. Header values are ``str``; names are matched case-insensitively.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any

from rawsse._http.body import BodyWriter
from rawsse.jsonio import dumps

__all__ = ["JSONResponse", "Response", "StreamingResponse"]

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


def _header_list(
    headers: HeadersLike | None, content_type: str | None
) -> list[tuple[bytes, bytes]]:
    if headers is None:  # the common case: a content type only
        return [] if content_type is None else [(b"content-type", content_type.encode("latin-1"))]
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in items]
    if content_type is not None and not any(name.lower() == b"content-type" for name, _ in out):
        out.append((b"content-type", content_type.encode("latin-1")))
    return out


class Response:
    """A response whose whole body is known up front."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeadersLike | None = None,
        *,
        content_type: str | None = "text/plain; charset=utf-8",
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = _header_list(headers, content_type if self.body or status != 204 else None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {len(self.body)} bytes>"


class JSONResponse(Response):
    """A response whose body is ``value`` encoded as JSON (orjson)."""

    __slots__ = ()

    def __init__(self, value: Any, status: int = 200, headers: HeadersLike | None = None) -> None:
        super().__init__(dumps(value), status, headers, content_type="application/json")


class StreamingResponse:
    """A response whose body is written while it is produced, with no length known up front.

    Give it an async iterable of ``bytes`` pieces, or subclass it and override ``write_body``
    (``EventStream`` does). Each piece is queued as it comes; backpressure applies between them.
    """

    __slots__ = ("_chunks", "headers", "status")

    def __init__(
        self,
        chunks: AsyncIterable[bytes] | None = None,
        status: int = 200,
        headers: HeadersLike | None = None,
        *,
        content_type: str | None = "application/octet-stream",
    ) -> None:
        self.status = status
        self.headers = _header_list(headers, content_type)
        self._chunks = chunks

    async def write_body(self, body: BodyWriter) -> None:
        """Write the body through ``body``; called once by the connection driver."""
        if self._chunks is None:
            return
        iterator = aiter(self._chunks)
        try:
            async for piece in iterator:
                if body.write(piece):
                    await body.drain()
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def skip_body(self) -> None:
        """Called instead of ``write_body`` when no body is sent (a HEAD request)."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
