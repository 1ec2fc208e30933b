"""De-chunking and frame counting in one pass, for bodies whose chunks each hold one frame.

Contract: ``frame_chunks(data)`` takes bytes that start at a chunk-size line of a chunked body
and returns ``(frames, end, size)``: the whole chunks at the start of ``data`` that each hold
exactly one single-line SSE frame (``data: ...\\n\\n``), as that line without its
``\\n\\n``; the index in ``data`` of the first chunk it did not take (left to
``ChunkedBody``); and the payload bytes the frames were (lines and separators). It returns
``None`` when the body does not start with such a chunk.

Most SSE servers write one event per chunk, and an OpenAI-style event is one ``data:`` line, so
this is the common shape of an LLM stream on the wire. ``ChunkedBody`` de-chunks with one regex
split and ``FrameCounter`` then counts frames with a second scan of every payload byte; here a
single split on ``\\n\\n`` + CRLF + size + CRLF does both: verified as ``ChunkedBody`` verifies
its split (every piece 2 bytes shorter than its chunk size says, see ``_whole_chunks`` there),
each piece is one chunk whose data ends with ``\\n\\n``, and a C-speed ``find`` shows that no
piece holds another line end. So each piece is one frame, counted by ``len`` of the list.
"""

from __future__ import annotations

import re

__all__ = ["frame_chunks"]

# The end of a frame, the CRLF after its chunk's data, and the next chunk's size line.
_SPLIT = re.compile(rb"\n\n\r\n([0-9A-Fa-f]{1,16})\r\n").split
_BOUNDARY = b"\n\n\r\n"
# Chunk sizes seen, parsed once: a stream's sizes repeat. Bounded against hostile variety.
_MAX_SIZES = 4096


class _FrameLengths(dict[bytes, int]):
    """Size line -> the length of the frame line it frames (the chunk size minus 2)."""

    def __missing__(self, size: bytes) -> int:
        length = int(size, 16) - 2
        if len(self) < _MAX_SIZES:
            self[size] = length
        return length


_LENGTHS = _FrameLengths()


def frame_chunks(data: bytes) -> tuple[list[bytes], int, int] | None:
    """The one-frame chunks at the start of ``data`` (see the module contract)."""
    parts = _SPLIT(_BOUNDARY + data)
    if len(parts) < 3 or parts[0]:
        return None
    frames = parts[2:-2:2]
    lengths = list(map(len, frames))
    # Length 0 is a chunk of just "\n\n" (or a size below 2): not a one-line frame.
    if lengths != list(map(_LENGTHS.__getitem__, parts[1:-2:2])) or 0 in lengths:
        return None
    # Taken so far: up to the last size line matched; its chunk and what follows are left.
    end = len(data) - len(parts[-1]) - 2 - len(parts[-2])
    # A read that ends with a whole one-frame chunk (the usual end of a read of a server that
    # writes an event at a time) takes that chunk too: its data, "\n\n", CRLF, and nothing more.
    last = parts[-1]
    if last.endswith(b"\n\n\r\n") and len(last) - 4 == _LENGTHS[parts[-2]] > 0:
        frames.append(last[:-4])
        end = len(data)
    elif not frames:
        return None
    lines = b"".join(frames)
    if lines.find(b"\n") >= 0 or lines.find(b"\r") >= 0:
        return None  # a frame of several lines (or CR line ends): the general path counts it
    return frames, end, len(lines) + 2 * len(frames)
