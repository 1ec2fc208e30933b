"""Hypothesis properties of the wire core.

- The parser agrees with a naive model of the WHATWG algorithm (below: decode everything, split
  lines with a regex, one plain loop) on arbitrary bytes, however they are split into feeds.
- The parser is total: on any bytes it returns events or raises EventTooLarge, nothing else.
- Any sequence of events, comments and retry frames, encoded and fed in random pieces, parses
  back to the same events (data with CR or CRLF compares with those normalised to LF).
- The encoder rejects every invalid field with a ValueError naming it.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.parser import EventParser, EventTooLarge
from rawsse.sse import Event, encode_comment, encode_event, encode_json_data, encode_retry

# --- a reference model of the standard, written for clarity, not speed -----------------------

_LINE_END = re.compile(r"\r\n|\r|\n")


def reference_parse(stream: bytes) -> tuple[list[Event], str, int | None]:
    """Events, last event ID string and reconnection time for a whole stream, naively."""
    text = stream.decode("utf-8", "replace")  # the UTF-8 decode ...
    if text.startswith("\ufeff"):  # ... strips one leading BOM
        text = text[1:]
    *lines, _unfinished = _LINE_END.split(text)  # a line not ended at EOF is discarded
    events: list[Event] = []
    data = event_type = id_buffer = last_event_id = ""
    event_id: str | None = None
    event_retry: int | None = None
    retry: int | None = None
    for line in lines:
        if line == "":
            last_event_id = id_buffer
            if data:
                events.append(Event(data[:-1], event_type or "message", event_id, event_retry))
            data = event_type = ""
            event_id = event_retry = None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            value = value.removeprefix(" ")
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                id_buffer = event_id = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            retry = event_retry = int(value)
    return events, last_event_id, retry


# --- strategies -------------------------------------------------------------------------------

# Pieces of streams that exercise the algorithm: field names, separators, every line end,
# NUL, BOM and its halves, multi-byte and broken UTF-8, Unicode breaks that are not line ends.
_TOKENS = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b":",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"x",
    b"7",
    b"0",
    b"+",
    b"\x00",
    b"\t",
    b"\xef\xbb\xbf",
    b"\xef",
    b"\xbb\xbf",
    b"\xe2\x82\xac",
    b"\xe2\x82",
    b"\xff",
    b"\xe2\x80\xa8",
    b"\xc2\x85",
    b"\x0b",
]
sse_like_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_TOKENS), max_size=80).map(b"".join),
)


def pieces_of(data: bytes, draw: st.DrawFn) -> list[bytes]:
    """Cut ``data`` at random positions (possibly none, possibly empty pieces)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# Lone surrogates have no UTF-8 form: the encoder rightly refuses them, so valid fields exclude them.
_no_line_end = st.characters(exclude_characters="\r\n", exclude_categories=("Cs",))
_no_line_end_or_nul = st.characters(exclude_characters="\r\n\0", exclude_categories=("Cs",))
_valid_text = st.text(st.characters(exclude_categories=("Cs",)))
events = st.builds(
    Event,
    data=_valid_text,  # any text: the encoder splits it on CR, LF and CRLF
    event=st.text(_no_line_end, min_size=1),  # an empty type would come back as "message"
    id=st.none() | st.text(_no_line_end_or_nul),
    retry=st.none() | st.integers(0, 10**15),
)
# Frames that dispatch no event but may change the stream's state.
comments = _valid_text.map(lambda text: ("comment", text))
retries = st.integers(0, 10**6).map(lambda ms: ("retry", ms))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _valid_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_valid_text, children),
    max_leaves=12,
)


def _normalised(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


def _feed_all(parser: EventParser, pieces: list[bytes]) -> list[Event]:
    return [event for piece in pieces for event in parser.feed(piece)]


# --- properties -------------------------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(st.data(), sse_like_bytes)
def test_parser_agrees_with_reference_model(data: st.DataObject, stream: bytes) -> None:
    parser = EventParser()
    got = _feed_all(parser, pieces_of(stream, data.draw))
    assert (got, parser.last_event_id, parser.retry) == reference_parse(stream)


@settings(deadline=None, max_examples=300)
@given(st.data(), sse_like_bytes, st.integers(1, 64))
def test_parser_is_total(data: st.DataObject, stream: bytes, max_event_bytes: int) -> None:
    parser = EventParser(max_event_bytes)
    try:
        got = _feed_all(parser, pieces_of(stream, data.draw))
    except EventTooLarge:
        return
    # Any other exception fails the test; without one, the limit changed nothing.
    assert got == reference_parse(stream)[0]


@settings(deadline=None)
@given(st.data(), st.lists(events | comments | retries, max_size=8), st.booleans())
def test_encoded_events_parse_back(
    data: st.DataObject, items: list[Event | tuple[str, Any]], bom: bool
) -> None:
    frames = [b"\xef\xbb\xbf"] if bom else []  # a server may send one; the encoder never does
    expected: list[Event] = []
    last_event_id, retry = "", None
    for item in items:
        if isinstance(item, Event):
            frames.append(item.encode())
            expected.append(Event(_normalised(item.data), item.event, item.id, item.retry))
            last_event_id = item.id if item.id is not None else last_event_id
            retry = item.retry if item.retry is not None else retry
        elif item[0] == "comment":
            frames.append(encode_comment(item[1]))
        else:
            frames.append(encode_retry(item[1]))
            retry = item[1]
    parser = EventParser()
    assert _feed_all(parser, pieces_of(b"".join(frames), data.draw)) == expected
    assert (parser.last_event_id, parser.retry) == (last_event_id, retry)


@settings(deadline=None)
@given(st.data(), st.lists(json_values, min_size=1, max_size=5))
def test_json_frames_parse_back(data: st.DataObject, values: list[Any]) -> None:
    # encode_event takes a str as text, not JSON: only other values go through it.
    stream = b"".join(
        encode_event(v) if i % 2 and not isinstance(v, str) else encode_json_data(v)
        for i, v in enumerate(values)
    )
    got = _feed_all(EventParser(), pieces_of(stream, data.draw))
    assert [orjson.loads(event.data) for event in got] == [
        orjson.loads(orjson.dumps(v)) for v in values
    ]


# --- the encoder rejects every invalid field --------------------------------------------------

_with_line_end = st.tuples(st.text(), st.sampled_from(["\r", "\n", "\r\n"]), st.text()).map("".join)


@given(_with_line_end)
def test_encoder_rejects_event_with_line_end(event: str) -> None:
    with pytest.raises(ValueError, match="event"):
        encode_event("x", event=event)
    with pytest.raises(ValueError, match="event"):
        encode_json_data(1, event=event)


@given(_with_line_end | st.tuples(st.text(), st.text()).map("\0".join))
def test_encoder_rejects_id_with_line_end_or_nul(id: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_event("x", id=id)
    with pytest.raises(ValueError, match="id"):
        encode_json_data(1, id=id)


@given(
    st.integers(max_value=-1)
    | st.floats()
    | st.booleans()
    | st.text()
    | st.decimals(allow_nan=False)
    | st.lists(st.integers())
)
def test_encoder_rejects_retry_not_a_non_negative_int(retry: Any) -> None:
    with pytest.raises(ValueError, match="retry"):
        encode_event("x", retry=retry)
    with pytest.raises(ValueError, match="retry"):
        encode_retry(retry)


@given(_valid_text, st.text(_no_line_end, min_size=1), st.text(_no_line_end_or_nul))
def test_encoder_accepts_every_valid_field(data: str, event: str, id: str) -> None:
    frame = encode_event(data, event=event, id=id, retry=0)
    assert frame.endswith(b"\n\n")
    assert EventParser().feed(frame) == [Event(_normalised(data), event, id, 0)]
