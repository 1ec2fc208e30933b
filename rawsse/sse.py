"""Encoding Server-Sent Events to bytes (sans-io).

Contract: every function here returns complete frames, conformant to the WHATWG
"event stream" grammar by construction, or raises ``ValueError`` naming the offending field.

Rules the encoder keeps:
1. Fields go out in a fixed order: ``event``, ``id``, ``retry``, then ``data`` lines.
2. Lines end with LF only; a frame ends with an empty line.
3. ``str`` data is split on CRLF, CR and LF (the only line ends the parser knows) into one
   ``data:`` line each. Other Unicode breaks (U+2028, U+0085, ...) are plain data.
4. ``bytes`` data is UTF-8 text and gets the same treatment; anything else is JSON (orjson:
   compact, UTF-8, never a raw newline, so it needs no splitting).
5. ``event`` and ``id`` may not contain CR or LF (they would end the field early); ``id`` may
   not contain NUL (the parser ignores such ids); ``retry`` is a non-negative integer.
6. No BOM is ever emitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rawsse.jsonio import dumps

__all__ = ["Event", "encode_comment", "encode_event", "encode_json_data", "encode_retry"]

_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched server-sent event, as a client sees it.

    ``event`` is the type (``"message"`` when the stream named none), ``id`` the event's id
    field if it carried one, and ``retry`` the reconnection time in milliseconds if the frame
    set one.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    def encode(self) -> bytes:
        """Encode this event as one frame (``event: message`` is left implicit)."""
        return encode_event(
            self.data,
            event=None if self.event == "message" else self.event,
            id=self.id,
            retry=self.retry,
        )


def _utf8(field: str, text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
        raise ValueError(f"{field} is not valid Unicode text: {text!r}") from exc


def _check_event(event: object) -> bytes:
    if not isinstance(event, str):
        raise ValueError(f"event must be a str: {event!r}")
    if "\r" in event or "\n" in event:
        raise ValueError(f"event must not contain CR or LF: {event!r}")
    return _utf8("event", event)


def _check_id(id: object) -> bytes:
    if not isinstance(id, str):
        raise ValueError(f"id must be a str: {id!r}")
    if "\r" in id or "\n" in id:
        raise ValueError(f"id must not contain CR or LF: {id!r}")
    if "\0" in id:
        raise ValueError(f"id must not contain NUL: {id!r}")
    return _utf8("id", id)


def _check_retry(retry: object) -> int:
    # bool is an int subclass, but `retry: True` is a bug, not a delay.
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise ValueError(f"retry must be a non-negative integer (milliseconds): {retry!r}")
    return retry


def _header_lines(event: str | None, id: str | None, retry: int | None) -> bytes:
    # Rule 1: event, id, retry, in that order (data lines follow).
    head = b""
    if event is not None:
        head += b"event: " + _check_event(event) + b"\n"
    if id is not None:
        head += b"id: " + _check_id(id) + b"\n"
    if retry is not None:
        head += b"retry: %d\n" % _check_retry(retry)
    return head


def _data_lines(data: Any) -> bytes:
    # The data: lines and the blank line that ends the frame.
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
            raise ValueError(f"data is not valid Unicode text: {data!r}") from exc
    elif isinstance(data, (bytes, bytearray, memoryview)):  # a tuple: faster than a union
        raw = bytes(data)
        try:
            raw.decode("utf-8")  # rule 4: bytes data must be text
        except UnicodeDecodeError as exc:
            raise ValueError(f"data bytes are not UTF-8 text: {exc}") from exc
    else:
        try:
            # Rule 4: orjson's compact JSON never holds a raw CR or LF: one line, no scan.
            return b"data: " + dumps(data) + b"\n\n"
        except TypeError as exc:  # orjson's JSONEncodeError: not serialisable, or out of range
            raise ValueError(f"data is not JSON-serialisable: {exc}") from exc
    # Rule 3: one data: line per CRLF-, CR- or LF-separated line. CR and LF never occur inside
    # a UTF-8 multi-byte sequence, so splitting the bytes splits the text.
    if b"\n" not in raw and b"\r" not in raw:
        return b"data: " + raw + b"\n\n"
    return b"".join([b"data: " + line + b"\n" for line in _LINE_BREAK_BYTES.split(raw)]) + b"\n"


def encode_event(
    data: Any,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event frame.

    ``data`` is a ``str`` (split into one ``data:`` line per line), UTF-8 ``bytes`` (the same),
    or any JSON-serialisable value (dict, list, number, bool, None, dataclass), encoded with
    orjson. Raises ``ValueError`` naming the field when ``data``, ``event``, ``id`` or
    ``retry`` cannot be represented on the wire.
    """
    if event is None and id is None and retry is None:
        return _data_lines(data)
    return _header_lines(event, id, retry) + _data_lines(data)


def encode_json_data(value: Any, *, id: str | None = None, event: str | None = None) -> bytes:
    """Encode one JSON value as a single-``data:``-line frame: the chat hot path.

    No scanning of the payload: orjson never emits a raw CR or LF, so the JSON is one line.
    Raises ``ValueError`` naming the field for a value orjson cannot encode, or an invalid
    ``event`` or ``id``.
    """
    try:
        if id is None and event is None:
            return b"data: " + dumps(value) + b"\n\n"
        return _header_lines(event, id, None) + b"data: " + dumps(value) + b"\n\n"
    except TypeError as exc:  # orjson's JSONEncodeError; the try costs nothing until it raises
        raise ValueError(f"data is not JSON-serialisable: {exc}") from exc


def encode_comment(text: str = "") -> bytes:
    """Encode a comment frame (``:`` lines, ignored by clients; used as a heartbeat).

    Multi-line text becomes one comment line per line. An empty text gives ``b":\\n\\n"``.
    """
    if not text:
        return b":\n\n"
    raw = _utf8("comment", text)
    return b"".join(b": " + line + b"\n" for line in _LINE_BREAK_BYTES.split(raw)) + b"\n"


def encode_retry(retry_ms: int) -> bytes:
    """Encode a frame that only sets the client's reconnection time, in milliseconds."""
    return b"retry: %d\n\n" % _check_retry(retry_ms)
