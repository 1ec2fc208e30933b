"""Parsing a Server-Sent Events byte stream into events, incrementally (sans-io).

Contract: ``EventParser.feed(data)`` takes the stream's bytes in pieces of any size and
returns the events completed by them, exactly as the WHATWG HTML standard's "interpreting an
event stream" (section 9.2.6) defines them, however the stream is split. It is total: on any
bytes it returns events, or raises ``EventTooLarge`` when one event would buffer more than
``max_event_bytes``. Cost is linear in the input, whatever the sizes of the pieces.

The rules, quoted from the standard (each is quoted again at the line that implements it):

1. "Streams must be decoded using the UTF-8 decode algorithm." That algorithm strips one
   leading BOM and turns each invalid byte sequence into U+FFFD.
2. "a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A LINE FEED
   (LF) character not preceded by a U+000D CARRIAGE RETURN (CR) character, and a single U+000D
   CARRIAGE RETURN (CR) character not followed by a U+000A LINE FEED (LF) character being the
   ways in which a line can end." Nothing else ends a line (not U+2028, U+0085, VT or FF).
3. "If the line is empty (a blank line)": "Dispatch the event".
4. "If the line starts with a U+003A COLON character (:)": "Ignore the line."
5. "If the line contains a U+003A COLON character (:)": the field is the text before the first
   colon, the value the text after it, and "If value starts with a U+0020 SPACE character,
   remove it from value."
6. "Otherwise, the string is not empty but does not contain a U+003A COLON character (:)":
   "using the whole line as the field name, and the empty string as the field value."
7. "Field names must be compared literally, with no case folding performed."
8. "event": "Set the event type buffer to the field value."
9. "data": "Append the field value to the data buffer, then append a single U+000A LINE FEED
   (LF) character to the data buffer."
10. "id": "If the field value does not contain U+0000 NULL, then set the last event ID buffer
    to the field value. Otherwise, ignore the field."
11. "retry": "If the field value consists of only ASCII digits, then interpret the field value
    as an integer in base ten, and set the event stream's reconnection time to that integer.
    Otherwise, ignore the field."
12. Any other field: "The field is ignored."
13. To dispatch: "Set the last event ID string of the event source to the value of the last
    event ID buffer." "If the data buffer is an empty string, set the data buffer and the event
    type buffer to the empty string and return." "If the data buffer's last character is a
    U+000A LINE FEED (LF) character, then remove the last character from the data buffer." The
    type is "message" unless "the event type buffer has a value other than the empty string".
    Then "Set the data buffer and the event type buffer to the empty string."
14. "Once the end of the file is reached, any pending data must be discarded." (``close``)

How, and where rawsse chooses:
- The parser works on bytes and decodes only what it keeps (data per event, event type and
  id per field). That is the same as decoding first: CR, LF, ``:`` and space are ASCII, never
  part of a multi-byte sequence, and a UTF-8 decoder ends any broken sequence at an ASCII byte,
  so splitting at them and decoding the pieces gives the same text as decoding the whole.
- ``Event.id`` and ``Event.retry`` are the ``id`` and ``retry`` fields the event's own lines
  carried (``None`` if none); the stream-wide values (rule 13's last event ID string, rule 11's
  reconnection time) are the parser's ``last_event_id`` and ``retry``.
- An empty ``retry`` value is ignored (there is no integer to interpret, as browsers do), and
  so is one of more than 4300 significant digits (Python's default int-conversion limit: such a
  value is no delay, and converting it would cost quadratic time).
- Each new stream (after ``close``) starts its last event ID buffer from the last event ID
  string rather than empty, as browsers do when they reconnect; so does setting
  ``last_event_id`` (a client resuming from a ``Last-Event-ID``).
- ``max_event_bytes`` bounds what one event may buffer; the standard sets no limit. Past it,
  the parser raises ``EventTooLarge`` and stays failed, or, with ``skip_oversized``, discards
  that event and goes on: its data is dropped as it comes (never buffered past the limit), its
  other fields count as for any dispatch (its ``id`` becomes the last event ID, so a client
  that reconnects does not ask for it again), and ``feed_all`` reports it as ``EventSkipped``.
  A data line still being read makes the event skipped only once it is sure to pass the limit,
  so whether an event is skipped does not depend on how the stream is split; a line of another
  field longer than the limit, arriving in pieces, also skips its event.
- ``feed_all`` also returns rule 4's ignored lines as ``Comment`` values (heartbeats), and the
  skipped events, in stream order; ``feed`` returns events only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from rawsse.sse import Event

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "Comment",
    "EventParser",
    "EventSkipped",
    "EventTooLarge",
    "StreamItem",
]

# 1 MiB: thousands of times an LLM stream's chunk event (a few hundred bytes), yet small
# enough that a hostile or broken server cannot make a client buffer without bound.
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024

_BOM = b"\xef\xbb\xbf"
# Python's default int-conversion limit (sys.int_info.default_max_str_digits).
_MAX_RETRY_DIGITS = 4300
# A data line being read adds at least its length less this to the data buffer ("data:", and
# a space, less the line feed the buffer counts): see _check_size.
_DATA_PREFIX = b"data:"


class EventTooLarge(ValueError):
    """One event buffered more than the parser's ``max_event_bytes`` without ending.

    ``events`` holds the complete events the same ``feed`` parsed before the limit was
    reached. The parser is unusable afterwards: every later ``feed`` raises again.
    """

    def __init__(self, max_event_bytes: int, buffered_bytes: int, events: list[Event]) -> None:
        super().__init__(
            f"server-sent event too large: {buffered_bytes} bytes buffered without a blank "
            f"line, more than max_event_bytes={max_event_bytes}"
        )
        self.max_event_bytes = max_event_bytes
        self.buffered_bytes = buffered_bytes
        self.events = events


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line (rule 4), as ``feed_all`` returns it: ``text`` is all that follows the
    colon, as sent (``": ping"`` gives ``" ping"``), decoded like any value."""

    text: str


@dataclass(frozen=True, slots=True)
class EventSkipped:
    """An event a ``skip_oversized`` parser discarded because it passed ``max_event_bytes``.

    ``event`` and ``id`` are the type and id its lines carried (``None``: no ``id`` line), and
    its id counted as the last event ID, as a dispatch's would. ``discarded_bytes`` is about
    how much of it was dropped (data values and line feeds, and lines cut while being read).
    """

    event: str
    id: str | None
    discarded_bytes: int


StreamItem = Event | Comment | EventSkipped
"""What ``EventParser.feed_all`` returns: events, comments and skipped events."""


# Event is a frozen dataclass: its __init__ pays an object.__setattr__ call per field. The
# parser fills the slots directly, which halves the cost of each event it returns.
_new_event: Callable[[type[Event]], Event] = object.__new__
_set_data = Event.__dict__["data"].__set__
_set_type = Event.__dict__["event"].__set__
_set_id = Event.__dict__["id"].__set__
_set_retry = Event.__dict__["retry"].__set__


def _parse_retry(value: bytes) -> int | None:
    # Rule 11: "If the field value consists of only ASCII digits, then interpret the field value
    # as an integer in base ten ... Otherwise, ignore the field." (bytes.isdigit is ASCII-only
    # and false on an empty value.)
    if not value.isdigit():
        return None
    if len(value) > _MAX_RETRY_DIGITS:
        value = value.lstrip(b"0")
        if len(value) > _MAX_RETRY_DIGITS:
            return None
    return int(value or b"0")


class EventParser:
    """An incremental parser for one ``text/event-stream``, per the WHATWG algorithm.

    Feed it the response body in pieces of any size; each ``feed`` returns the events that
    piece completed. ``last_event_id`` is the event source's last event ID string (what a
    reconnecting client sends as ``Last-Event-ID``), ``retry`` the reconnection time in
    milliseconds the server last set (``None`` until it sets one).

    ``max_event_bytes`` (default 1 MiB) is the most one event may buffer: its ``data`` values
    plus a line feed each, plus any line not yet ended. Going past it raises ``EventTooLarge``,
    or with ``skip_oversized`` discards that event and goes on (``skipped_events`` counts them).
    """

    __slots__ = (
        "_after_cr",
        "_at_start",
        "_data",
        "_data_bytes",
        "_discarding",
        "_event_id",
        "_event_retry",
        "_event_type",
        "_failed",
        "_id_buffer",
        "_last_event_id",
        "_skipped_bytes",
        "_tail",
        "max_event_bytes",
        "retry",
        "skip_oversized",
        "skipped_events",
    )

    def __init__(
        self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, *, skip_oversized: bool = False
    ) -> None:
        if max_event_bytes < 1:
            raise ValueError(f"max_event_bytes must be positive: {max_event_bytes!r}")
        self.max_event_bytes = max_event_bytes
        self.skip_oversized = skip_oversized
        self.skipped_events = 0
        self.retry: int | None = None
        self._last_event_id = ""  # rule 13's "last event ID string of the event source"
        self._id_buffer = ""  # rule 10's "last event ID buffer"
        self._failed = False
        self._start_stream()

    @property
    def last_event_id(self) -> str:
        """The last event ID string: the ``id`` of the latest dispatch, kept until replaced.

        Setting it (say, to the ``Last-Event-ID`` a client resumes from) sets the stream's
        last event ID buffer too, so later events without an ``id`` keep the value.
        """
        return self._last_event_id

    @last_event_id.setter
    def last_event_id(self, value: str) -> None:
        self._last_event_id = self._id_buffer = value

    def _start_stream(self) -> None:
        # Rule 14: a pending id that no blank line committed is discarded with its event.
        self._id_buffer = self._last_event_id
        self._at_start = True  # the BOM may still come
        self._after_cr = False  # the last byte seen was a CR, so a next LF is its CRLF
        self._tail = bytearray()  # the line not yet ended: never holds a CR or LF
        self._data: list[bytes] = []  # the data buffer, one value per data line
        self._data_bytes = 0
        self._event_type = b""
        self._event_id: str | None = None
        self._event_retry: int | None = None
        self._skipped_bytes = 0  # not 0 while an oversized event is being skipped
        self._discarding = False  # dropping the rest of a line that passed the limit

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next piece of the stream; return the events it completed, in order."""
        return cast("list[Event]", self._feed(data, False))

    def feed_all(self, data: bytes) -> list[StreamItem]:
        """Like ``feed``, but also return the comments and skipped events, in stream order."""
        return self._feed(data, True)

    def _feed(self, data: bytes, keep: bool) -> list[StreamItem]:
        if self._failed:
            raise EventTooLarge(self.max_event_bytes, len(self._tail) + self._data_bytes, [])
        if self._at_start:
            # Rule 1: the UTF-8 decode strips one leading BOM, even one split across feeds.
            head = bytes(self._tail) + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._tail[:] = head
                self._check_size([])
                return []
            self._at_start = False
            self._tail.clear()
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._discarding:
            data = self._discard_line(data)
        if self._after_cr and data:
            # Rule 2: a CR and an LF in the next piece are one CRLF line end.
            self._after_cr = False
            if data[0] == 0x0A:
                data = data[1:]

        last_lf = data.rfind(b"\n")
        last_cr = data.rfind(b"\r")
        end = last_lf if last_lf > last_cr else last_cr
        if end < 0:
            self._tail += data
            self._check_size([])
            return []
        if end == last_cr and end == len(data) - 1:
            self._after_cr = True
        if self._tail:
            block = bytes(self._tail) + data[: end + 1]
        elif end == len(data) - 1:
            block = data
        else:
            block = data[: end + 1]
        self._tail[:] = data[end + 1 :]
        if last_cr >= 0:
            # Rule 2: CRLF, lone LF and lone CR all end a line. Rewrite CRLF first, so that the
            # pair becomes one LF; the block ends at a line end, so no pair is cut in two.
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = block.split(b"\n")
        lines.pop()  # the empty text after the block's final line end
        events: list[StreamItem] = []
        # Comments and skipped events go to ``extras``: the events for ``feed_all``, else nowhere.
        self._process(lines, events, events if keep else None)
        self._check_size(events)
        return events

    def _process(
        self, lines: list[bytes], events: list[StreamItem], extras: list[StreamItem] | None
    ) -> None:
        data = self._data
        data_bytes = self._data_bytes
        max_bytes = self.max_event_bytes
        id_buffer = self._id_buffer
        last_event_id = self._last_event_id
        event_type = self._event_type
        event_id = self._event_id
        event_retry = self._event_retry
        skipped_bytes = self._skipped_bytes
        try:
            for line in lines:
                if not line:
                    # Rule 3: "If the line is empty (a blank line)": "Dispatch the event".
                    if skipped_bytes:
                        # An oversized event: not dispatched (see skip_oversized).
                        discarded = skipped_bytes + data_bytes
                        self._skipped(extras, event_type, event_id, discarded)
                        skipped_bytes = data_bytes = 0
                        data.clear()
                    # Rule 13: "If the data buffer is an empty string, ... return."
                    elif data:
                        # Rule 13: drop the data buffer's final LF (the join puts none there).
                        # Rule 1: "the UTF-8 decode algorithm", where errors become U+FFFD:
                        # "replace" (every decode here is that one).
                        event = _new_event(Event)
                        _set_data(event, b"\n".join(data).decode("utf-8", "replace"))
                        # Rule 13: "message" unless the event type buffer is not empty.
                        _set_type(
                            event,
                            event_type.decode("utf-8", "replace") if event_type else "message",
                        )
                        _set_id(event, event_id)
                        _set_retry(event, event_retry)
                        events.append(event)
                        # Rule 13: "Set the data buffer and the event type buffer to the empty
                        # string."
                        data.clear()
                        data_bytes = 0
                    event_type = b""
                    event_id = event_retry = None
                    # Rule 13: "Set the last event ID string of the event source to the value
                    # of the last event ID buffer." (whether or not an event fired)
                    last_event_id = id_buffer
                    continue
                # Fast paths for the lines chat streams are made of: "data: ", "event: " and
                # "id: " are rules 5 and 8-10 below with the field known from the prefix.
                if line[:6] == b"data: ":
                    value = line[6:]
                elif line[:7] == b"event: ":
                    event_type = line[7:]
                    continue
                elif line[:4] == b"id: ":
                    value = line[4:]
                    if b"\0" not in value:
                        id_buffer = event_id = value.decode("utf-8", "replace")
                    continue
                else:
                    # Rule 5: the field is what comes before the first colon, the value what
                    # follows; rule 6: with no colon, the whole line is the field and the
                    # value is empty.
                    field, _, value = line.partition(b":")
                    if not field:
                        # Rule 4: "If the line starts with a U+003A COLON character (:)":
                        # "Ignore the line." (``feed_all`` shows it.)
                        if extras is not None:
                            extras.append(Comment(value.decode("utf-8", "replace")))
                        continue
                    if value[:1] == b" ":
                        # Rule 5: "If value starts with a U+0020 SPACE character, remove it
                        # from value."
                        value = value[1:]
                    # Rule 7: "Field names must be compared literally, with no case folding".
                    if field == b"event":
                        # Rule 8: "Set the event type buffer to the field value."
                        event_type = value
                        continue
                    if field == b"id":
                        # Rule 10: "If the field value does not contain U+0000 NULL, then set
                        # the last event ID buffer to the field value. Otherwise, ignore the
                        # field."
                        if b"\0" not in value:
                            id_buffer = event_id = value.decode("utf-8", "replace")
                        continue
                    if field == b"retry":
                        # Rule 11: only ASCII digits set "the event stream's reconnection time".
                        retry = _parse_retry(value)
                        if retry is not None:
                            self.retry = event_retry = retry
                        continue
                    if field != b"data":
                        # Rule 12: any other field: "The field is ignored."
                        continue
                # Rule 9: "Append the field value to the data buffer, then append a single
                # U+000A LINE FEED (LF) character to the data buffer" (the LF is the join at
                # dispatch; it counts towards the size limit now).
                data.append(value)
                data_bytes += len(value) + 1
                if data_bytes > max_bytes:
                    self._overflow(data_bytes, events)  # raises unless skip_oversized
                    skipped_bytes += data_bytes
                    data_bytes = 0
                    data.clear()
        finally:
            self._skipped_bytes = skipped_bytes
            self._data_bytes = data_bytes
            self._id_buffer = id_buffer
            self._last_event_id = last_event_id
            self._event_type = event_type
            self._event_id = event_id
            self._event_retry = event_retry

    def _skipped(
        self, items: list[StreamItem] | None, event_type: bytes, event_id: str | None, size: int
    ) -> None:
        self.skipped_events += 1
        if items is not None:
            kind = event_type.decode("utf-8", "replace") if event_type else "message"
            items.append(EventSkipped(kind, event_id, size))

    def _overflow(self, buffered_bytes: int, items: list[StreamItem]) -> None:
        if not self.skip_oversized:
            self._fail(buffered_bytes, items)

    def _check_size(self, events: list[StreamItem]) -> None:
        buffered = len(self._tail) + self._data_bytes
        if buffered <= self.max_event_bytes:
            return
        self._overflow(buffered, events)  # raises unless skip_oversized
        # Skipping: only a line that will pass the limit whatever follows counts, so that the
        # outcome does not depend on where the stream is split. A data line adds at least its
        # length less 5 to the event (``data:`` and a space, plus the line feed); any other line
        # adds nothing, and may buffer up to the limit.
        tail = self._tail
        if _DATA_PREFIX.startswith(tail[:5]):
            over = self._data_bytes + len(tail) - 5 > self.max_event_bytes
        else:
            over = len(tail) > self.max_event_bytes
        if over:
            # Drop the line being read and what the event buffered, and skip the event (the
            # blank line that ends it reports it).
            self._skipped_bytes += buffered
            self._tail.clear()
            self._data.clear()
            self._data_bytes = 0
            self._discarding = True
            self._at_start = False

    def _discard_line(self, data: bytes) -> bytes:
        """Drop the rest of a line that passed the limit, and its line end (rule 2)."""
        lf = data.find(b"\n")
        cr = data.find(b"\r")
        if lf < 0 and cr < 0:
            self._skipped_bytes += len(data)
            return b""
        end = cr if lf < 0 or 0 <= cr < lf else lf
        self._skipped_bytes += end
        self._discarding = False
        if end == cr:
            if end + 1 == len(data):
                self._after_cr = True  # an LF in the next piece belongs to this CR
            elif data[end + 1] == 0x0A:
                end += 1
        return data[end + 1 :]

    def _fail(self, buffered_bytes: int, items: list[StreamItem]) -> None:
        self._failed = True
        events = [item for item in items if isinstance(item, Event)]
        raise EventTooLarge(self.max_event_bytes, buffered_bytes, events)

    def close(self) -> bool:
        """End this stream: discard any unfinished event and get ready for a new stream.

        Rule 14: "Once the end of the file is reached, any pending data must be discarded."
        ``last_event_id`` and ``retry`` belong to the event source and are kept, so one parser
        can follow a client across reconnections (a new stream may again start with a BOM).
        Returns whether an unfinished event (data lines or part of a line) was discarded.
        """
        discarded = bool(self._tail or self._data or self._skipped_bytes)
        self._start_stream()
        return discarded
