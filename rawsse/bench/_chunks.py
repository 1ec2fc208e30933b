"""De-chunking and frame counting in one pass, for bodies whose chunks each hold one frame.

Contract: ``frame_chunks(data, start)`` takes bytes whose ``data[start:]`` starts at a
chunk-size line of a chunked body and returns ``(frames, end, size, last)``: the whole chunks
from ``start`` that each hold exactly one single-line SSE frame (``data: ...\n\n``), as that
line without its ``\n\n``; the index in ``data`` of the first byte it did not take (left to
``ChunkedBody``); the payload bytes the frames were (lines and separators); and whether the
taken bytes end with the body's last chunk (``0`` CRLF, no trailers, CRLF: then ``end`` is
``len(data)``). It returns ``None`` when the body does not start with such a chunk.

Most SSE servers write one event per chunk, and an OpenAI-style event is one ``data:`` line, so
this is the common shape of an LLM stream on the wire. ``ChunkedBody`` de-chunks with one regex
split and ``FrameCounter`` then counts frames with a second scan of every payload byte; here a
single split on ``\\n\\n`` + CRLF + size + CRLF does both: verified as ``ChunkedBody`` verifies
its split (every piece 2 bytes shorter than its chunk size says, see ``_split_chunks`` there),
each piece is one chunk whose data ends with ``\\n\\n``, and a C-speed ``find`` shows that no
piece holds another line end. So each piece is one frame, counted by ``len`` of the list.

Chunk sizes are read through the client's ``chunk_size`` and the split is the client's
``boundary_split``: the one chunk-size grammar (``rawsse.client._chunk_size``), so this pass
and ``ChunkedBody`` accept the same size lines and read the same sizes by construction; the
per-line frame lengths derived from it are cached here, so a hit costs one dict lookup.

The split runs on the read as it is (a body after its head is not copied out of the read): the
first chunk, which no boundary precedes, is the end of the split's first piece, cut at its
size line's CRLF; its size line is read by the same ``chunk_size`` as the others.
"""

from __future__ import annotations

from rawsse.client._chunk_size import boundary_split, chunk_size

__all__ = ["frame_chunks"]

# The end of a frame, the CRLF after its chunk's data, and the next chunk's size line.
_SPLIT = boundary_split(b"\n\n")
# Frame lengths by size line, cached: a stream's sizes repeat. Bounded against hostile variety.
_MAX_SIZES = 4096
_MAX_SIZE_LINE_BYTES = 16


class _FrameLengths(dict[bytes, int]):
    """Size line -> the length of the frame line it frames (the chunk size minus 2), or -1
    for a chunk too small to hold a line and its ``\\n\\n`` (no piece is that long), and for a
    line that is not a chunk-size line (``chunk_size`` says -1)."""

    def __missing__(self, line: bytes) -> int:
        length = chunk_size(line) - 2
        if length < 1:
            length = -1
        if len(line) <= _MAX_SIZE_LINE_BYTES and len(self) < _MAX_SIZES:
            self[line] = length
        return length


_LENGTHS = _FrameLengths()


def frame_chunks(data: bytes, start: int = 0) -> tuple[list[bytes], int, int, bool] | None:
    """The one-frame chunks at ``data[start:]`` (see the module contract)."""
    parts = _SPLIT(data)
    head = parts[0]
    if len(head) < start:
        return None  # a boundary look-alike before ``start``
    # The first chunk: what the first piece holds after ``start``, cut at its size line.
    size, _, line = (head[start:] if start else head).partition(b"\r\n")
    if len(parts) == 1:
        # No boundary: the read holds one chunk at most, taken if whole (a server that writes
        # an event at a time, read as it comes).
        if line.endswith(b"\n\n\r\n") and len(line) - 4 == _LENGTHS[size] > 0:
            return _taken([line[:-4]], len(data), False)
        return None
    frames = parts[2:-2:2]
    # Every piece as long as its size says (the first one too): then the split is the parse.
    if len(line) != _LENGTHS[size] or list(map(len, frames)) != list(
        map(_LENGTHS.__getitem__, parts[1:-2:2])
    ):
        return None
    frames.insert(0, line)
    last = parts[-1]
    size = parts[-2]
    ended = False
    # Taken so far: up to the last size line matched; its chunk and what follows are left.
    end = len(data) - len(last) - 2 - len(size)
    if size == b"0" and last == b"\r\n":
        # The body's last chunk, with no trailers, ends the read: the whole body is taken.
        ended = True
        end = len(data)
    # A read that ends with a whole one-frame chunk (the usual end of a read of a server that
    # writes an event at a time) takes that chunk too: its data, "\n\n", CRLF, and nothing more.
    elif last.endswith(b"\n\n\r\n") and len(last) - 4 == _LENGTHS[size] > 0:
        frames.append(last[:-4])
        end = len(data)
    return _taken(frames, end, ended)


def _taken(frames: list[bytes], end: int, ended: bool) -> tuple[list[bytes], int, int, bool] | None:
    lines = b"".join(frames)
    if lines.find(b"\n") >= 0 or lines.find(b"\r") >= 0:
        return None  # a frame of several lines (or CR line ends): the general path counts it
    return frames, end, len(lines) + 2 * len(frames), ended
