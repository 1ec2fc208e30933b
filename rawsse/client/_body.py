"""Response body framing for the client, sans-io: chunked, Content-Length, or until close.

Contract: a body decoder turns raw bytes after the response head into payload bytes.
``feed(data)`` returns the payload in ``data`` (possibly ``b""``); ``done`` turns true once the
body is complete, and ``unused`` then holds any bytes that followed it. ``feed_eof()`` says the
peer closed: fine for a close-delimited body, ``SSEConnectionError`` for one cut short.
Malformed framing raises ``SSEProtocolError``. With ``framing`` set to a list (for trace), the
chunked decoder also appends a ``ChunkHeader``/``ChunkData``/``BodyEnd`` record per step, and
the other decoders a ``BodyData`` record per piece and a ``BodyEnd``.

The chunked framing kept (RFC 9112 section 7.1), as strict as h11's:
1. ``chunk-size [ chunk-ext ] CRLF``: the size line, read by ``chunk_size`` (the one grammar of
   it, in ``rawsse.client._chunk_size``); a line longer than 4 KiB is an error (no unbounded
   buffering on a hostile server).
2. After ``chunk-size`` bytes of data comes exactly ``CRLF``.
3. A zero size ends the data; trailer lines follow up to an empty line.

The decoder is a fast path in front of general steps. The general steps (``_STEPS``, one
method per state) take any bytes, keep partial lines and chunks across calls, record the
framing for trace and raise every error. The fast path (``_whole_chunks``) only ever takes
*whole* chunks (size line, data, CRLF, all in this read) with the same ``chunk_size`` and the
same CRLF check, and stops at the first thing that is not one, leaving it to the steps: it
never raises and never decides anything the steps would decide otherwise. It is the hot path
of ``rawsse bench`` and of a client reading a fast stream: a read of 1 KiB or more is first cut
by one regex split verified by lengths (no Python code runs per chunk), the few chunks left
take a few C-level calls each, and the payload pieces are joined once.
"""

from __future__ import annotations

from collections.abc import Callable

from rawsse.client._chunk_size import boundary_split, chunk_size
from rawsse.client._errors import SSEConnectionError, SSEProtocolError
from rawsse.client._wire import BodyData, BodyEnd, ChunkData, ChunkHeader, WireRecord

__all__ = ["BodyDecoder", "ChunkedBody", "CloseBody", "LengthBody"]

# Size lines and trailer lines carry no payload; 4 KiB is far beyond any honest one.
_MAX_LINE_BYTES = 4096
# Trailer sections are rare and small; h11 caps a whole header section at 16 KiB.
_MAX_TRAILER_BYTES = 16 * 1024

# Below this, a read holds a few chunks at most: the per-chunk steps are as quick as a split.
_BULK_MIN_BYTES = 1024

_SIZE, _DATA, _CRLF, _TRAILERS, _DONE = range(5)

# A chunk boundary as it looks after a chunk's data: CRLF, a size line without extension, CRLF.
_SPLIT_CHUNKS = boundary_split()


def _split_chunks(data: bytes, i: int, out: list[memoryview | bytes]) -> int:
    """Decode the whole chunks from ``data[i]`` (the start of a size line) with one split;
    return where the first chunk not decoded here starts (``i`` itself when none was).

    One ``re.split`` cuts the bytes at every place that looks like a chunk boundary, giving
    ``[b"", size, data, size, data, ...]``; the cut is then *verified*: every data piece but
    the last is exactly as long as its size says. When it is, those pieces are, back to back,
    a valid chunk sequence from ``i``, and since chunked framing parses in one way only, they
    are the chunks (a chunk whose data contains a boundary look-alike makes a piece of the
    wrong length, and the caller then decodes chunk by chunk). The last piece is left to the
    caller: it may be partial, or hold the last chunk and what follows the body.
    Cost per chunk: a regex step, two slices, a cached ``chunk_size`` and one ``len``, in C.
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
    # A zero length is the last chunk (size 0): the steps read its trailers.
    if lengths != list(map(chunk_size, sizes)) or 0 in lengths:
        return i
    out.extend(pieces)
    # Per chunk: size line, CRLF, data, CRLF (the regex matched every CRLF it cut at).
    return i + 4 * len(sizes) + sum(map(len, sizes)) + sum(lengths)


def _whole_chunks(data: bytes, i: int, out: list[memoryview | bytes], bulk: bool) -> int:
    """The fast path: decode the whole chunks from ``data[i]`` (the start of a size line);
    return where the first thing that is not a whole chunk starts, for the general steps."""
    if bulk and len(data) - i >= _BULK_MIN_BYTES:
        i = _split_chunks(data, i, out)
    find = data.find
    n = len(data)
    while True:
        j = find(b"\r\n", i, i + _MAX_LINE_BYTES)
        if j < 0:
            return i
        start = j + 2
        end = start + chunk_size(data[i:j])
        # A malformed line (-1), the last chunk (0), a partial chunk, or data not followed
        # by CRLF: the steps take it from here, and raise if it is an error.
        if end <= start or end + 2 > n or data[end : end + 2] != b"\r\n":
            return i
        out.append(data[start:end])
        i = end + 2


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
        out: list[memoryview | bytes] = []
        fast = self.framing is None
        bulk = fast  # the split is tried once per call: a body it cannot take costs one try
        i = 0
        n = len(data)
        while i < n:
            if fast and self._state == _SIZE:
                i = _whole_chunks(data, i, out, bulk)
                bulk = False
                if i == n:
                    break
            i = _STEPS[self._state](self, data, i, out)
            if i < 0:  # the rest is buffered (or follows the body): wait for more
                break
        if not out:
            return b""
        if len(out) == 1:
            return bytes(out[0])
        return b"".join(out)

    # The general steps: each takes ``data[i:]`` in its state and returns where it stopped,
    # or -1 once the rest of ``data`` is buffered or, at the end, kept as ``unused``.

    def _size_line(self, data: bytes, i: int, out: list[memoryview | bytes]) -> int:
        j = data.find(b"\r\n", i, i + _MAX_LINE_BYTES)
        if j < 0:
            if len(data) - i >= _MAX_LINE_BYTES:
                raise SSEProtocolError("chunk-size line longer than 4 KiB")
            self._buf = data[i:]
            return -1
        size = chunk_size(data[i:j])
        if size < 0:
            raise SSEProtocolError(f"malformed chunk-size line: {data[i : j + 2]!r}")
        if self.framing is not None:
            self.framing.append(ChunkHeader(size, data[i : j + 2]))
        if size:
            self._remaining = size
            self._start = True
            self._state = _DATA
        else:
            self._state = _TRAILERS
        return j + 2

    def _chunk_data(self, data: bytes, i: int, out: list[memoryview | bytes]) -> int:
        take = min(self._remaining, len(data) - i)
        piece = data[i : i + take]
        out.append(piece)
        self._remaining -= take
        if self.framing is not None:
            self.framing.append(ChunkData(piece, self._start, self._remaining == 0))
        self._start = False
        if self._remaining:
            return -1
        self._state = _CRLF
        return i + take

    def _chunk_end(self, data: bytes, i: int, out: list[memoryview | bytes]) -> int:
        pair = data[i : i + 2]
        if pair == b"\r\n":
            self._state = _SIZE
            return i + 2
        if pair != b"\r":  # a lone CR at the end of the read may be half of the CRLF
            raise SSEProtocolError(f"chunk data not followed by CRLF: {pair!r}")
        self._buf = pair
        return -1

    def _trailer_line(self, data: bytes, i: int, out: list[memoryview | bytes]) -> int:
        j = data.find(b"\r\n", i)
        if j < 0:
            if len(self._trailers) + len(data) - i > _MAX_TRAILER_BYTES:
                raise SSEProtocolError("trailer section larger than 16 KiB")
            self._buf = data[i:]
            return -1
        self._trailers += data[i : j + 2]
        if len(self._trailers) > _MAX_TRAILER_BYTES:
            raise SSEProtocolError("trailer section larger than 16 KiB")
        if j > i:
            return j + 2
        # The empty line: the body is complete.
        self._state = _DONE
        self.done = True
        self.unused = data[j + 2 :]
        if self.framing is not None:
            self.framing.append(BodyEnd(self._trailers))
        return -1

    def feed_eof(self) -> None:
        """The peer closed: an error unless the last chunk and trailers have arrived."""
        if not self.done:
            raise SSEConnectionError("connection closed before the end of the chunked body")


_Step = Callable[[ChunkedBody, bytes, int, list[memoryview | bytes]], int]
# The general step for each state but _DONE, indexed by the state.
_STEPS: tuple[_Step, ...] = (
    ChunkedBody._size_line,
    ChunkedBody._chunk_data,
    ChunkedBody._chunk_end,
    ChunkedBody._trailer_line,
)


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
