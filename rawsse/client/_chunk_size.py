"""The chunk-size line of HTTP/1.1 chunked framing: its grammar, written once.

Contract: ``chunk_size(line)`` takes a chunk-size line without its CRLF and returns the size it
states, or -1 when the line is not one. Every decoder of chunked bodies in rawsse (the client's
``ChunkedBody``, fast path and general steps alike, and ``rawsse bench``'s one-pass reader)
reads sizes through it, so they accept the same lines and read the same sizes by construction.

The grammar kept (RFC 9112 section 7.1, as strict as h11's): ``chunk-size [ chunk-ext ]``, where
``chunk-size`` is 1 to 16 hex digits (16 digits is 2**64, more than any body; ``int`` alone
would also take ``+``, ``_``, ``0x`` and spaces, which HTTP does not), then optional spaces or
tabs, then optionally ``;`` and an extension that is not interpreted.

``boundary_split(before)`` compiles the split that the bulk decoders cut reads with: ``before``,
CRLF, a chunk-size line *without* extension, CRLF. It is a subset of the grammar above (the
size is captured by the same ``CHUNK_SIZE`` pattern, and the caller reads it through
``chunk_size``), so a cut it makes is only ever a boundary the general steps would find too; a
line with an extension is not cut at, and falls to the general steps.

Sizes are cached by their line (a stream's chunk sizes repeat): a hit is one dict lookup in C.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["CHUNK_SIZE", "boundary_split", "chunk_size"]

# RFC 9112: chunk-size = 1*HEXDIG; 16 digits at most (see the module contract).
CHUNK_SIZE = rb"[0-9A-Fa-f]{1,16}"
# chunk-size, then what h11 allows before an extension (spaces, tabs), then the extension.
_SIZE_LINE = re.compile(rb"(" + CHUNK_SIZE + rb")[ \t]*(?:;[^\r\n]*)?")
# Lines cached: as many as a hostile server could vary them to, each at most 16 bytes.
_MAX_CACHED = 4096
_MAX_CACHED_LINE_BYTES = 16


class _Sizes(dict[bytes, int]):
    """Size line -> size, or -1 for a line that is not a chunk-size line."""

    def __missing__(self, line: bytes) -> int:
        match = _SIZE_LINE.fullmatch(line)
        size = -1 if match is None else int(match.group(1), 16)
        if len(line) <= _MAX_CACHED_LINE_BYTES and len(self) < _MAX_CACHED:
            self[line] = size
        return size


chunk_size: Callable[[bytes], int] = _Sizes().__getitem__


def boundary_split(before: bytes = b"") -> Callable[[bytes], list[bytes]]:
    """``re.split`` at ``before`` + CRLF + a bare chunk-size line + CRLF, capturing the size."""
    return re.compile(re.escape(before) + rb"\r\n(" + CHUNK_SIZE + rb")\r\n").split
