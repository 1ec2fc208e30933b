"""How ``rawsse trace`` shows what it sees: for people, or one JSON record per line.

Contract: a ``TraceSink`` gets each observation as it happens, with ``t_ms`` the milliseconds
since the request was written: ``request``, ``read`` (one socket read), ``head``, ``framing``
(chunk-size line, chunk data, body data, body end), ``event`` (a parsed SSE event), ``note``
(validation findings, errors, the text of a body that is not an event stream) and finally
``summary``. ``TextSink`` writes indented lines (with ``raw``: every read's bytes, escaped,
split after each LF); ``JsonSink`` writes one JSON object per line with a ``type`` key. Both
flush after every record, so a pipe sees each one as it arrives.
"""

from __future__ import annotations

from typing import Any, Protocol, TextIO

from rawsse.client._exchange import ResponseHead
from rawsse.client._wire import BodyData, BodyEnd, ChunkData, ChunkHeader, WireRecord
from rawsse.jsonio import dumps
from rawsse.sse import Event

__all__ = ["JsonSink", "TextSink", "TraceSink", "escape_bytes"]

_ESCAPES = {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x5C: "\\\\"}


def escape_bytes(data: bytes) -> str:
    """``data`` as printable ASCII: CR, LF, TAB and backslash as ``\\r \\n \\t \\\\``, other
    bytes outside 0x20-0x7E as ``\\xNN``. Lossless: the original bytes can be recovered."""
    out = []
    for byte in data:
        if byte in _ESCAPES:
            out.append(_ESCAPES[byte])
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


class TraceSink(Protocol):
    """Where trace observations go (see the module contract)."""

    def request(self, t_ms: float, data: bytes) -> None:
        """The request bytes, as written."""

    def read(self, t_ms: float, index: int, data: bytes) -> None:
        """Socket read number ``index`` (from 1); ``b""`` is EOF."""

    def head(self, t_ms: float, head: ResponseHead) -> None:
        """The response head, once complete."""

    def framing(self, t_ms: float, record: WireRecord) -> None:
        """A chunk-size line, a piece of chunk data, or the end of the body."""

    def event(self, t_ms: float, index: int, event: Event) -> None:
        """Parsed event number ``index`` (from 1)."""

    def note(self, t_ms: float, kind: str, message: str) -> None:
        """Something to report: ``kind`` is ``error``, ``invalid`` or ``body`` (the text of
        a body that is not an event stream)."""

    def summary(self, summary: dict[str, Any]) -> None:
        """The closing summary."""


class TextSink:
    """Human-readable lines; ``raw`` adds every read's bytes, escaped."""

    def __init__(self, out: TextIO, *, raw: bool = False) -> None:
        self._out = out
        self._raw = raw

    def _write(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _escaped_lines(self, data: bytes, prefix: str) -> str:
        lines = data.split(b"\n")
        shown = [escape_bytes(line + b"\n") for line in lines[:-1]]
        if lines[-1]:
            shown.append(escape_bytes(lines[-1]))
        return "\n".join(prefix + line for line in shown)

    def request(self, t_ms: float, data: bytes) -> None:
        """Show the request: head lines, then the body."""
        head, _, body = data.partition(b"\r\n\r\n")
        lines = [f"> {line}" for line in head.decode("latin-1").split("\r\n")]
        self._write(f"request  +{t_ms:.3f} ms  {len(data)} B\n" + "\n".join(lines))
        if body:
            self._write("> \n> " + body.decode("utf-8", "replace"))

    def read(self, t_ms: float, index: int, data: bytes) -> None:
        """One read: offset and size (and bytes, with ``raw``)."""
        what = f"{len(data)} B" if data else "EOF"
        self._write(f"read #{index}  +{t_ms:.3f} ms  {what}")
        if self._raw and data:
            self._write(self._escaped_lines(data, "  | "))

    def head(self, t_ms: float, head: ResponseHead) -> None:
        """The status line and headers."""
        lines = [f"< HTTP/{head.http_version} {head.status} {head.reason}"]
        lines += [f"< {name}: {value}" for name, value in head.headers]
        self._write(f"response head  +{t_ms:.3f} ms\n" + "\n".join(lines))

    def framing(self, t_ms: float, record: WireRecord) -> None:
        """Chunked framing, one line per step."""
        if isinstance(record, ChunkHeader):
            kind = "last chunk" if record.size == 0 else "chunk"
            self._write(f"  {kind}: size line {escape_bytes(record.line)} = {record.size} B")
        elif isinstance(record, ChunkData):
            marks = [
                m for m, on in (("start", record.chunk_start), ("end", record.chunk_end)) if on
            ]
            self._write(f"    data {record.size} B" + (f" [{' '.join(marks)}]" if marks else ""))
        elif isinstance(record, BodyData):
            self._write(f"  body data {len(record.data)} B")
        elif isinstance(record, BodyEnd):
            # the trailer section always ends with its own CRLF: show only real trailers
            real = record.trailers[:-2]
            trailers = escape_bytes(real) if real else "none"
            self._write(f"  body end (trailers: {trailers})")

    def event(self, t_ms: float, index: int, event: Event) -> None:
        """An event with its fields."""
        fields = [f"event={event.event}"]
        if event.id is not None:
            fields.append(f"id={event.id}")
        if event.retry is not None:
            fields.append(f"retry={event.retry}")
        data = event.data.replace("\n", "\\n")
        self._write(f"  event #{index}  +{t_ms:.3f} ms  {' '.join(fields)}  data={data}")

    def note(self, t_ms: float, kind: str, message: str) -> None:
        """A finding, an error, or body text."""
        self._write(f"{kind}  +{t_ms:.3f} ms  {message.rstrip()}")

    def summary(self, summary: dict[str, Any]) -> None:
        """The summary as aligned lines."""

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f} ms"

        gaps = summary["gaps_ms"]
        lines = [
            "summary",
            f"  status               {summary['status'] or '-'}",
            f"  time to headers      {ms(summary['headers_ms'])}",
            f"  time to first event  {ms(summary['first_event_ms'])}",
            f"  total time           {ms(summary['total_ms'])}",
            f"  events               {summary['events']}",
            f"  gaps between events  min {ms(gaps['min'])}, p50 {ms(gaps['p50'])}, "
            f"max {ms(gaps['max'])}",
            f"  reads                {summary['reads']}  chunks {summary['chunks']}",
            f"  bytes on the wire    {summary['wire_bytes']:,} (head {summary['head_bytes']:,}, "
            f"chunk framing {summary['framing_bytes']:,}, payload {summary['payload_bytes']:,})",
            f"  event data bytes     {summary['data_bytes']:,} "
            f"({summary['data_ratio']:.1%} of the wire)",
            f"  ended                {summary['end']}",
        ]
        self._write("\n".join(lines))


class JsonSink:
    """One JSON object per line, ``type`` first; ``raw`` adds each read's bytes, escaped."""

    def __init__(self, out: TextIO, *, raw: bool = False) -> None:
        self._out = out
        self._raw = raw

    def _emit(self, record: dict[str, Any]) -> None:
        self._out.write(dumps(record).decode() + "\n")
        self._out.flush()

    def request(self, t_ms: float, data: bytes) -> None:
        """The request, with its bytes escaped."""
        self._emit(
            {
                "type": "request",
                "t_ms": round(t_ms, 3),
                "bytes": len(data),
                "data": escape_bytes(data),
            }
        )

    def read(self, t_ms: float, index: int, data: bytes) -> None:
        """One read."""
        record: dict[str, Any] = {
            "type": "read",
            "t_ms": round(t_ms, 3),
            "index": index,
            "bytes": len(data),
        }
        if self._raw:
            record["data"] = escape_bytes(data)
        self._emit(record)

    def head(self, t_ms: float, head: ResponseHead) -> None:
        """The response head."""
        self._emit(
            {
                "type": "head",
                "t_ms": round(t_ms, 3),
                "http_version": head.http_version,
                "status": head.status,
                "reason": head.reason,
                "headers": [list(pair) for pair in head.headers],
            }
        )

    def framing(self, t_ms: float, record: WireRecord) -> None:
        """A framing step."""
        t = round(t_ms, 3)
        if isinstance(record, ChunkHeader):
            self._emit(
                {
                    "type": "chunk_header",
                    "t_ms": t,
                    "size": record.size,
                    "line": escape_bytes(record.line),
                }
            )
        elif isinstance(record, ChunkData):
            self._emit(
                {
                    "type": "chunk_data",
                    "t_ms": t,
                    "size": record.size,
                    "chunk_start": record.chunk_start,
                    "chunk_end": record.chunk_end,
                }
            )
        elif isinstance(record, BodyData):
            self._emit({"type": "body_data", "t_ms": t, "size": len(record.data)})
        elif isinstance(record, BodyEnd):
            self._emit({"type": "body_end", "t_ms": t, "trailers": escape_bytes(record.trailers)})

    def event(self, t_ms: float, index: int, event: Event) -> None:
        """A parsed event."""
        self._emit(
            {
                "type": "event",
                "t_ms": round(t_ms, 3),
                "index": index,
                "event": event.event,
                "id": event.id,
                "retry": event.retry,
                "data": event.data,
            }
        )

    def note(self, t_ms: float, kind: str, message: str) -> None:
        """A finding or the end reason."""
        self._emit({"type": kind, "t_ms": round(t_ms, 3), "message": message})

    def summary(self, summary: dict[str, Any]) -> None:
        """The summary record."""
        self._emit({"type": "summary", **summary})
