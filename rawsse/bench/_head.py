"""Response heads for the load generator: each distinct head parsed and judged once.

Contract: ``HeadCache(prepared)`` serves the exchanges of one ``PreparedRequest``.
``cache.lookup(data)`` returns ``(verdict, end)`` when ``data`` starts with a complete head seen
before (``end`` is where its body starts), else ``None``; then ``cache.parser()`` gives a
``HeadParser`` whose ``feed(data)`` returns ``(verdict, end)`` once the head is complete
(``end`` indexes the bytes of that call), or ``None`` while more is needed, and raises
``SSEProtocolError`` for a malformed head. A ``HeadVerdict`` holds the ``ResponseHead``, the
failure it means for a stream (``("status", "503 ...")``, ``("content_type", ...)``) or
``None``, the body decoder to make, and whether the connection may be reused after the body.

Why: a load generator gets the same head over and over, and the same bytes after the same
request parse to the same head. h11 takes about 25 us a head, and the header lookups that judge
it (status, media type, framing, keep-alive) a few more; here they cost one ``find`` and one
dict lookup. A key is cached only when it is exactly one head as ``head_end`` delimits it
(h11 also ends a head at a bare ``\\n\\n``), so a lookup that finds it has found that head: a
hit is always the parse h11 would make. Heads that differ (a ``Date`` each second) just miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from rawsse.client._body import BodyDecoder, ChunkedBody, CloseBody, LengthBody
from rawsse.client._exchange import Exchange, PreparedRequest, ResponseHead, head_end

__all__ = ["HeadCache", "HeadParser", "HeadVerdict"]

# Distinct heads kept before the cache starts over (a server that varies its heads each time
# gains nothing from it, and must not grow it without bound).
_MAX_HEADS = 64


@dataclass(frozen=True, slots=True)
class HeadVerdict:
    """What a response head means for the stream that receives it."""

    head: ResponseHead
    failure: tuple[str, str] | None  # (error kind, detail), or None for a 200 event stream
    decoder: Callable[[], BodyDecoder]  # a fresh decoder for the body's framing
    chunked: bool
    keep_alive: bool  # the head allows another request on the connection

    @classmethod
    def judge(cls, head: ResponseHead, exchange: Exchange) -> HeadVerdict:
        """Judge ``head``, the response to ``exchange``'s request."""
        failure = None
        if head.status != 200:
            failure = ("status", f"{head.status} {head.reason}")
        elif head.media_type != "text/event-stream":
            failure = ("content_type", f"Content-Type {head.media_type!r}")
        decoder = exchange.body_decoder(head)
        make: Callable[[], BodyDecoder]
        if isinstance(decoder, ChunkedBody):
            make = ChunkedBody
        elif isinstance(decoder, LengthBody):
            make = partial(LengthBody, decoder.remaining)
        else:
            make = CloseBody
        keep_alive = head.keep_alive and not isinstance(decoder, CloseBody)
        return cls(head, failure, make, isinstance(decoder, ChunkedBody), keep_alive)


class HeadParser:
    """The head of one response that was not in the cache, parsed by h11 (``Exchange``)."""

    __slots__ = ("_cache", "_exchange", "_fed")

    def __init__(self, cache: HeadCache, exchange: Exchange) -> None:
        self._cache = cache
        self._exchange = exchange
        self._fed = b""

    def feed(self, data: bytes) -> tuple[HeadVerdict, int] | None:
        """Feed the next bytes; once the head is complete, its verdict and where in ``data``
        the body starts."""
        exchange = self._exchange
        head = exchange.feed_head(data)
        if head is None:
            self._fed += data
            return None
        end = len(data) - len(exchange.unused)
        verdict = HeadVerdict.judge(head, exchange)
        self._cache.remember(self._fed + data[:end], verdict)
        return verdict, end


class HeadCache:
    """Verdicts by the exact bytes of their head, for one prepared request."""

    __slots__ = ("_prepared", "_verdicts")

    def __init__(self, prepared: PreparedRequest) -> None:
        self._prepared = prepared
        self._verdicts: dict[bytes, HeadVerdict] = {}

    def lookup(self, data: bytes) -> tuple[HeadVerdict, int] | None:
        """The verdict of the head ``data`` starts with, if it is a head seen before."""
        end = data.find(b"\r\n\r\n") + 4
        if end < 4:
            return None
        verdict = self._verdicts.get(data[:end])
        return None if verdict is None else (verdict, end)

    def parser(self) -> HeadParser:
        """A parser for a head that ``lookup`` did not find."""
        return HeadParser(self, Exchange(self._prepared))

    def remember(self, block: bytes, verdict: HeadVerdict) -> None:
        """Cache ``verdict`` for ``block`` if ``block`` is exactly one head (no 1xx before)."""
        if head_end(block) != len(block):
            return
        if len(self._verdicts) >= _MAX_HEADS:
            self._verdicts.clear()
        self._verdicts[block] = verdict
