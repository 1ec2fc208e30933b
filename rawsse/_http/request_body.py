"""A request's body, from the bytes after its header section: ``Content-Length`` or chunked.

Contract: a reader is fed the bytes that follow the head, in any pieces (``feed(data)``). Once
``done``, ``body()`` is the body's data and ``rest`` the bytes after it (a pipelined request).
Every byte of the body *on the wire* counts against ``limit_bytes``: for a chunked body that is
its data and its framing (size lines, extensions, CRLFs, trailer fields), so padding cannot
push more through than the limit. What breaks the grammar raises ``Refused(400)``; what goes
over the limit raises ``Refused(413)`` as soon as it is announced or seen. Pure: no I/O.

The chunked grammar (RFC 9112 7.1), each rule quoted where it is implemented:
1. chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF; chunk-size = 1*HEXDIG. More than 16
   hex digits cannot be the size of anything (2^64 bytes): refused at once (400), not waited
   for; a size larger than what is left of the limit is refused at once too (413).
2. chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), a name a token and
   a value a token or quoted-string. Extensions are checked and dropped (none has a meaning).
3. last-chunk = 1*("0") [ chunk-ext ] CRLF, then trailer-section = *( field-line CRLF ) CRLF;
   trailer fields are checked and dropped ("A recipient ... MAY discard", RFC 9112 7.1.2).
4. Lines end in CRLF. A size or trailer line may be at most 4 KiB long (400 beyond, decided
   before its end arrives, so no line buffers without bound).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rawsse._http.request_head import Refused

__all__ = ["ChunkedBody", "SizedBody"]

_MAX_SIZE_DIGITS = 16
_MAX_LINE_BYTES = 4096

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_SIZE = re.compile(rb"[0-9A-Fa-f]+")
_EXTENSIONS = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
    rb"[ \t]*\Z"
)
_FIELD_LINE = re.compile(
    _TOKEN + rb":[ \t]*(?:[!-~\x80-\xff](?:[ \t!-~\x80-\xff]*[!-~\x80-\xff])?)?[ \t]*\Z"
)


class SizedBody:
    """A body of exactly ``length`` bytes (``Content-Length``; the limit was checked on it)."""

    __slots__ = ("_left", "_pieces", "done", "rest")

    def __init__(self, length: int) -> None:
        self._left = length
        self._pieces: list[bytes] = []
        self.done = length == 0
        self.rest = b""

    def feed(self, data: bytes) -> None:
        """Take what belongs to the body from ``data``; the remainder goes to ``rest``."""
        if self.done:
            self.rest += data
            return
        left = self._left
        if len(data) < left:
            self._pieces.append(data)
            self._left = left - len(data)
            return
        self._pieces.append(data[:left] if len(data) > left else data)
        self.rest = data[left:]
        self._left = 0
        self.done = True

    def body(self) -> bytes:
        """The body's bytes (once ``done``)."""
        pieces = self._pieces
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


_Step = Callable[["ChunkedBody", bytearray, int], "int | None"]


class ChunkedBody:
    """A ``Transfer-Encoding: chunked`` body, decoded as it arrives (see the module's rules)."""

    __slots__ = (
        "_buffer",
        "_chunk_left",
        "_pieces",
        "_step",
        "done",
        "limit_bytes",
        "rest",
        "wire_bytes",
    )

    def __init__(self, limit_bytes: int) -> None:
        self._buffer = bytearray()
        self._step: _Step = ChunkedBody._size_line
        self._chunk_left = 0
        self._pieces: list[bytes] = []
        self.limit_bytes = limit_bytes
        self.wire_bytes = 0
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> None:
        """Decode what ``data`` completes; keep a partial line for the next call."""
        if self.done:
            self.rest += data
            return
        buffer = self._buffer
        buffer += data
        pos = 0
        try:
            while not self.done:
                following = self._step(self, buffer, pos)
                if following is None:
                    break
                pos = following
        finally:
            del buffer[:pos]
        if self.done:
            self.rest = bytes(buffer)
            buffer.clear()

    def body(self) -> bytes:
        """The body's data (once ``done``)."""
        return b"".join(self._pieces)

    # -- the grammar's states: each consumes from ``pos`` and returns where it stopped, or
    # None when the buffer holds too little to go on --

    def _count(self, wire: int) -> None:
        self.wire_bytes += wire
        if self.wire_bytes > self.limit_bytes:
            raise Refused(413, f"request body too large (limit {self.limit_bytes} bytes)")

    @staticmethod
    def _line_end(buffer: bytearray, pos: int) -> int | None:
        # Rule 4: CRLF-terminated, at most _MAX_LINE_BYTES.
        end = buffer.find(b"\r\n", pos, pos + _MAX_LINE_BYTES + 2)
        if end >= 0:
            return end
        if len(buffer) - pos > _MAX_LINE_BYTES + 1:
            raise Refused(400, "chunk-size or trailer line too long")
        return None

    def _size_line(self, buffer: bytearray, pos: int) -> int | None:
        end = self._line_end(buffer, pos)
        if end is None:
            return None
        digits = _SIZE.match(buffer, pos, end)
        if digits is None:
            raise Refused(400, "malformed chunk size")
        if digits.end() - pos > _MAX_SIZE_DIGITS:  # rule 1
            raise Refused(400, "impossible chunk size")
        if _EXTENSIONS.match(buffer, digits.end(), end) is None:  # rule 2
            raise Refused(400, "malformed chunk extension")
        size = int(buffer[pos : digits.end()], 16)
        self._count(end + 2 - pos)
        if size == 0:  # rule 3: the last chunk; the trailer section follows
            self._step = ChunkedBody._trailer_line
        elif size + 2 > self.limit_bytes - self.wire_bytes:  # rule 1: announced over the limit
            raise Refused(413, f"request body too large (limit {self.limit_bytes} bytes)")
        else:
            self._chunk_left = size
            self._step = ChunkedBody._chunk_data
        return end + 2

    def _chunk_data(self, buffer: bytearray, pos: int) -> int | None:
        take = min(len(buffer) - pos, self._chunk_left)
        if take <= 0:
            return None
        self._pieces.append(bytes(buffer[pos : pos + take]))
        self._count(take)
        self._chunk_left -= take
        if not self._chunk_left:
            self._step = ChunkedBody._chunk_end
        return pos + take

    def _chunk_end(self, buffer: bytearray, pos: int) -> int | None:
        if not buffer.startswith(b"\r\n", pos):
            if len(buffer) - pos < 2 and b"\r\n".startswith(buffer[pos:]):
                return None  # (the CRLF has not all arrived)
            raise Refused(400, "chunk data not followed by CRLF")
        self._count(2)
        self._step = ChunkedBody._size_line
        return pos + 2

    def _trailer_line(self, buffer: bytearray, pos: int) -> int | None:
        end = self._line_end(buffer, pos)
        if end is None:
            return None
        self._count(end + 2 - pos)
        if end == pos:
            self.done = True  # the empty line that ends the trailer section
        elif _FIELD_LINE.match(buffer, pos, end) is None:  # rule 3
            raise Refused(400, "malformed trailer field")
        return end + 2
