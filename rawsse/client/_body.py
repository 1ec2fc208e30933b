"""Response body framing for the client, sans-io: chunked, Content-Length, or until close.

Contract: a body decoder turns raw bytes after the response head into payload bytes.
``feed(data)`` returns the payload in ``data`` (possibly ``b""``); ``done`` turns true once the
body is complete, and ``unused`` then holds any bytes that followed it. ``feed_eof()`` says the
peer closed: fine for a close-delimited body, ``SSEConnectionError`` for one cut short.
Malformed framing raises ``SSEProtocolError``. With ``framing`` set to a list (for trace), the
chunked decoder also appends a ``ChunkHeader``/``ChunkData``/``BodyEnd`` record per step, and
the other decoders a ``BodyData`` record per piece and a ``BodyEnd``.

The chunked grammar kept (RFC 9112 section 7.1), as strict as h11's:
1. ``chunk-size [ chunk-ext ] CRLF``: 1 to 16 hex digits, optional whitespace and ``;ext``; a line
   longer than 4 KiB is an error (no unbounded buffering on a hostile server).
2. After ``chunk-size`` bytes of data comes exactly ``CRLF``.
3. A zero size ends the data; trailer lines follow up to an empty line.

This is the hot path of ``rawsse bench``: a whole read is handled in one call, its whole chunks
are cut out by one regex split and verified by their lengths (``_whole_chunks``; no Python code
runs per chunk), the few chunks left take a per-chunk fast path of a few C-level calls each, and
the payload pieces are joined once.
"""

from __future__ import annotations

import re
from itertools import repeat

from rawsse.client._errors import SSEConnectionError, SSEProtocolError
from rawsse.client._wire import BodyData, BodyEnd, ChunkData, ChunkHeader, WireRecord

__all__ = ["BodyDecoder", "ChunkedBody", "CloseBody", "LengthBody"]

# RFC 9112: chunk-size = 1*HEXDIG; 16 digits is 2**64, more than any body.
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
_HEX_DIGITS = b"0123456789abcdefABCDEF"
# Size lines and trailer lines carry no payload; 4 KiB is far beyond any honest one.
_MAX_LINE_BYTES = 4096
# Trailer sections are rare and small; h11 caps a whole header section at 16 KiB.
_MAX_TRAILER_BYTES = 16 * 1024

# Below this, a read holds a few chunks at most: the per-chunk steps are as quick as a split.
_BULK_MIN_BYTES = 1024

_SIZE, _DATA, _CRLF, _TRAILERS, _DONE = range(5)


# A chunk boundary as it looks after a chunk's data: CRLF, a size line without extension, CRLF.
_SPLIT_CHUNKS = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n").split


def _whole_chunks(data: bytes, i: int, out: list[memoryview | bytes]) -> int:
    """Decode the whole chunks from ``data[i]`` (the start of a size line); return where the
    first chunk not decoded here starts (``i`` itself when none was).

    One ``re.split`` cuts the bytes at every place that looks like a chunk boundary, giving
    ``[b"", size, data, size, data, ...]``; the cut is then *verified*: every size is hex, and
    every data piece but the last is exactly as long as its size says. When it is, those pieces
    are, back to back, a valid chunk sequence from ``i``, and since chunked framing parses in
    one way only, they are the chunks (a chunk whose data contains a boundary look-alike makes
    a piece of the wrong length, and the caller then decodes chunk by chunk). The last piece is
    left to the caller: it may be partial, or hold the last chunk and what follows the body.
    Cost per chunk: a regex step, two slices, one ``int`` and one ``len``, all in C.
    """
    if i >= 2 and data.startswith(b"\r\n", i - 2):
        region = data[i - 2 :] if i > 2 else data
    else:
        region = b"\r\n" + data[i:]
    parts = _SPLIT_CHUNKS(region)
    if len(parts) < 5 or parts[0]:
        return i
    sizes = parts[1:-2:2]
    pieces = parts[2:-2:2]
    lengths = list(map(len, pieces))
    # A zero length is the last chunk (size 0): the caller reads its trailers.
    if lengths != list(map(int, sizes, repeat(16))) or 0 in lengths:
        return i
    out.extend(pieces)
    # Per chunk: size line, CRLF, data, CRLF (the regex matched every CRLF it cut at).
    return i + 4 * len(sizes) + sum(map(len, sizes)) + sum(lengths)


class ChunkedBody:
    """Decoder for ``Transfer-Encoding: chunked``."""

    __slots__ = ("_buf", "_remaining", "_start", "_state", "_trailers", "done", "framing", "unused")

    def __init__(self, framing: list[WireRecord] | None = None) -> None:
        self.framing = framing
        self.done = False
        self.unused = b""
        self._buf = b""
        self._state = _SIZE
        self._remaining = 0
        self._start = False
        self._trailers = b""

    @property
    def at_chunk_start(self) -> bool:
        """Whether the next byte fed starts a chunk-size line (nothing partial is buffered)."""
        return self._state == _SIZE and not self._buf

    def feed(self, data: bytes) -> bytes:
        """Decode ``data``; return the chunk payload bytes it completes or continues."""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._state == _DONE:
            self.unused += data
            return b""
        view = memoryview(data)
        out: list[memoryview | bytes] = []
        framing = self.framing
        i = 0
        n = len(data)
        state = self._state
        find = data.find
        bulk = True
        while i < n:
            if state == _SIZE and framing is None:
                if bulk and n - i >= _BULK_MIN_BYTES:
                    # Many whole chunks at once, at C speed (see ``_whole_chunks``); once per
                    # call, so a body it cannot take costs one failed try per read, no more.
                    bulk = False
                    i = _whole_chunks(data, i, out)
                # Then per whole chunk: a bounded find, a C-speed all-hex check, int().
                # Anything else (an extension, a partial chunk, the last chunk, garbage) is
                # left to the general steps below, which also raise the errors.
                while True:
                    j = find(b"\r\n", i, i + 18)  # 16 hex digits at most, then CRLF
                    if j <= i:
                        break
                    line = data[i:j]
                    if line.translate(None, _HEX_DIGITS):
                        break
                    start = j + 2
                    end = start + int(line, 16)
                    if end + 2 > n or end == start:
                        break
                    if data[end : end + 2] != b"\r\n":
                        raise SSEProtocolError(
                            f"chunk data not followed by CRLF: {data[end : end + 2]!r}"
                        )
                    out.append(view[start:end])
                    i = end + 2
                if i >= n:
                    break
            if state == _DATA:
                take = min(self._remaining, n - i)
                out.append(view[i : i + take])
                i += take
                self._remaining -= take
                if framing is not None:
                    piece = data[i - take : i]
                    framing.append(ChunkData(piece, self._start, self._remaining == 0))
                self._start = False
                if self._remaining:
                    break
                state = _CRLF
            elif state == _CRLF:
                if n - i < 2:
                    if data[i:] != b"\r":
                        raise SSEProtocolError(f"chunk data not followed by CRLF: {data[i:]!r}")
                    self._buf = data[i:]
                    break
                if data[i : i + 2] != b"\r\n":
                    raise SSEProtocolError(f"chunk data not followed by CRLF: {data[i : i + 2]!r}")
                i += 2
                state = _SIZE
            elif state == _SIZE:
                j = data.find(b"\r\n", i, i + _MAX_LINE_BYTES)
                if j < 0:
                    if n - i >= _MAX_LINE_BYTES:
                        raise SSEProtocolError("chunk-size line longer than 4 KiB")
                    self._buf = data[i:]
                    break
                match = _SIZE_LINE.fullmatch(data, i, j)
                if match is None:
                    raise SSEProtocolError(f"malformed chunk-size line: {data[i : j + 2]!r}")
                size = int(match.group(1), 16)
                if framing is not None:
                    framing.append(ChunkHeader(size, data[i : j + 2]))
                i = j + 2
                if size:
                    self._remaining = size
                    self._start = True
                    state = _DATA
                else:
                    state = _TRAILERS
            else:  # _TRAILERS: lines up to an empty one
                j = data.find(b"\r\n", i)
                if j < 0:
                    if len(self._trailers) + n - i > _MAX_TRAILER_BYTES:
                        raise SSEProtocolError("trailer section larger than 16 KiB")
                    self._buf = data[i:]
                    break
                empty = j == i
                self._trailers += data[i : j + 2]
                if len(self._trailers) > _MAX_TRAILER_BYTES:
                    raise SSEProtocolError("trailer section larger than 16 KiB")
                i = j + 2
                if empty:
                    state = _DONE
                    self.done = True
                    self.unused = data[i:]
                    if framing is not None:
                        framing.append(BodyEnd(self._trailers))
                    break
        self._state = state
        if not out:
            return b""
        if len(out) == 1:
            return bytes(out[0])
        return b"".join(out)

    def feed_eof(self) -> None:
        """The peer closed: an error unless the last chunk and trailers have arrived."""
        if not self.done:
            raise SSEConnectionError("connection closed before the end of the chunked body")


class LengthBody:
    """Decoder for a body of ``Content-Length`` bytes."""

    __slots__ = ("_remaining", "done", "framing", "unused")

    def __init__(self, length: int, framing: list[WireRecord] | None = None) -> None:
        self._remaining = length
        self.framing = framing
        self.done = length == 0
        self.unused = b""
        if self.done and framing is not None:
            framing.append(BodyEnd())

    @property
    def remaining(self) -> int:
        """Bytes of the body still to come."""
        return self._remaining

    def feed(self, data: bytes) -> bytes:
        """Return the part of ``data`` that belongs to the body."""
        if self.done:
            self.unused += data
            return b""
        if len(data) < self._remaining:
            self._remaining -= len(data)
            if self.framing is not None:
                self.framing.append(BodyData(data))
            return data
        payload = data[: self._remaining]
        if self.framing is not None and payload:
            self.framing.append(BodyData(payload))
        self.unused = data[self._remaining :]
        self._remaining = 0
        self.done = True
        if self.framing is not None:
            self.framing.append(BodyEnd())
        return payload

    def feed_eof(self) -> None:
        """The peer closed: an error unless all ``Content-Length`` bytes arrived."""
        if not self.done:
            raise SSEConnectionError(
                f"connection closed with {self._remaining} bytes of the body missing"
            )


class CloseBody:
    """Decoder for a body delimited by the end of the connection (no length, not chunked)."""

    __slots__ = ("done", "framing", "unused")

    def __init__(self, framing: list[WireRecord] | None = None) -> None:
        self.framing = framing
        self.done = False
        self.unused = b""

    def feed(self, data: bytes) -> bytes:
        """Everything until EOF is body."""
        if self.framing is not None:
            self.framing.append(BodyData(data))
        return data

    def feed_eof(self) -> None:
        """EOF is this body's end."""
        self.done = True
        if self.framing is not None:
            self.framing.append(BodyEnd())


BodyDecoder = ChunkedBody | LengthBody | CloseBody
