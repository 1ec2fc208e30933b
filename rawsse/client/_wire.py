"""What the client shows of the wire: one record per observable step, for trace and bench.

Contract: a ``WireHook`` is called as ``hook(t, record)`` with ``t`` a ``time.perf_counter()``
timestamp (monotonic, sub-microsecond) and ``record`` one of:

- ``Sent``: bytes written to the socket (the request);
- ``Received``: one raw socket read, exactly as received (``b""`` is end of file);
- ``ChunkHeader``: a chunk-size line of a chunked body, raw, with its parsed size;
- ``ChunkData``: a piece of one chunk's payload, with whether it starts and ends the chunk (the
  same markers as h11's ``Data(chunk_start, chunk_end)``);
- ``BodyData``: a piece of a body that is not chunked (``Content-Length`` or until close);
- ``BodyEnd``: the body is complete (for chunked bodies: the last chunk and trailer section).

Records from one read come right after that read's ``Received``, with the same ``t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BodyData",
    "BodyEnd",
    "ChunkData",
    "ChunkHeader",
    "Received",
    "Sent",
    "WireHook",
    "WireRecord",
]


@dataclass(frozen=True, slots=True)
class Sent:
    """Bytes written to the socket."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Received:
    """One read from the socket, exactly as the kernel returned it; ``b""`` means EOF."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """A chunk-size line: ``line`` is raw (``b"1a;ext\\r\\n"``), ``size`` its value."""

    size: int
    line: bytes


@dataclass(frozen=True, slots=True)
class ChunkData:
    """A piece of the current chunk's payload; whether it starts and ends the chunk."""

    data: bytes
    chunk_start: bool
    chunk_end: bool

    @property
    def size(self) -> int:
        """The piece's length in bytes."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class BodyData:
    """A piece of a body that is not chunked."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The body ended cleanly; ``trailers`` is the raw trailer section of a chunked body."""

    trailers: bytes = b""


WireRecord = Sent | Received | ChunkHeader | ChunkData | BodyData | BodyEnd
WireHook = Callable[[float, WireRecord], None]
