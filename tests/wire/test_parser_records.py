"""``EventParser.feed_all`` (comments, skipped events) and ``skip_oversized``.

A model below states what a skipping parser must return for a whole stream: the events, with
each one whose data (values plus a line feed each) passes the limit replaced by an
``EventSkipped``, and the comments, in order. The parser must agree however the stream is split,
and hold no more than about the limit while it reads.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.parser import Comment, EventParser, EventSkipped, StreamItem
from rawsse.sse import Event

_LINE_END = re.compile(rb"\r\n|\r|\n")
CAP = 20


def model(stream: bytes, cap: int) -> list[object]:
    """What a skipping parser returns for the whole ``stream`` (skips without their size)."""
    stream = stream.removeprefix(b"\xef\xbb\xbf")
    *lines, _unfinished = _LINE_END.split(stream)
    out: list[object] = []
    data: list[bytes] = []
    size = 0
    event_type = b""
    event_id: str | None = None
    event_retry: int | None = None
    for line in lines:
        if not line:
            kind = event_type.decode("utf-8", "replace") or "message"
            if size > cap:
                out.append(("skipped", kind, event_id))
            elif data:
                out.append(Event(b"\n".join(data).decode("utf-8", "replace"), kind, event_id,
                                 event_retry))  # fmt: skip
            data, size, event_type, event_id, event_retry = [], 0, b"", None, None
            continue
        field, colon, value = line.partition(b":")
        if colon and not field:
            out.append(Comment(value.decode("utf-8", "replace")))
            continue
        value = value.removeprefix(b" ")
        if field == b"data":
            data.append(value)
            size += len(value) + 1
        elif field == b"event":
            event_type = value
        elif field == b"id" and b"\0" not in value:
            event_id = value.decode("utf-8", "replace")
        elif field == b"retry" and value.isdigit():
            event_retry = int(value)
    return out


def _comparable(items: list[StreamItem]) -> list[object]:
    return [("skipped", i.event, i.id) if isinstance(i, EventSkipped) else i for i in items]


# Lines around the limit; every line but a data line is shorter than the limit (a longer one,
# arriving in pieces, also skips its event: the documented exception).
_LINES = st.sampled_from(
    [b"data: " + b"x" * n for n in (0, 5, 13, 18, 19, 20, 21, 30)]
    + [b"data:" + b"y" * n for n in (1, 19, 20, 25)]
    + [b"data: \xc3\xa9", b"data", b"id: 7", b"id: 8", b"event: e", b"retry: 50", b": c",
       b":", b"foo: bar", b": " + b"c" * 17, b"id: " + b"i" * 15, b""]
)  # fmt: skip


@settings(deadline=None, max_examples=400)
@given(
    lines=st.lists(st.tuples(_LINES, st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=14),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_skipping_agrees_with_the_model_however_split(
    lines: list[tuple[bytes, bytes]], bom: bool, cuts: list[int]
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + end for line, end in lines)
    parser = EventParser(CAP, skip_oversized=True)
    got: list[StreamItem] = []
    edges = sorted({0, len(stream), *(min(cut, len(stream)) for cut in cuts)})
    for start, end in itertools.pairwise(edges):
        got += parser.feed_all(stream[start:end])
        # what one event may hold while it is read: the limit, and a line being read
        assert parser._data_bytes <= CAP
        assert len(parser._tail) <= CAP + 5
    assert _comparable(got) == model(stream, CAP)
    skipped = [item for item in got if isinstance(item, EventSkipped)]
    assert parser.skipped_events == len(skipped)
    assert all(item.discarded_bytes > CAP for item in skipped)
    # feed gives the events alone, the same ones
    plain = EventParser(CAP, skip_oversized=True)
    events = [event for start, end in itertools.pairwise(edges)
              for event in plain.feed(stream[start:end])]  # fmt: skip
    assert events == [item for item in got if isinstance(item, Event)]


def test_a_skipped_event_counts_its_id_and_keeps_the_stream_going() -> None:
    parser = EventParser(10, skip_oversized=True)
    items = parser.feed_all(b"data: a\n\nid: 5\nevent: big\ndata: " + b"z" * 50)
    assert items == [Event("a")]
    assert parser.feed_all(b"z" * 1000) == []  # dropped as it comes: nothing buffered
    assert len(parser._tail) == 0
    items = parser.feed_all(b"\r\ndata: b\r\n\r\ndata: c\n\n")
    assert items == [EventSkipped("big", "5", items[0].discarded_bytes), Event("c")]  # type: ignore[union-attr]
    assert items[0].discarded_bytes > 1000  # type: ignore[union-attr]
    assert parser.last_event_id == "5"
    assert parser.skipped_events == 1


def test_feed_all_gives_comments_in_order_and_feed_drops_them() -> None:
    stream = b":hello\n: ping\ndata: x\n\n:\n"
    assert EventParser().feed_all(stream) == [
        Comment("hello"), Comment(" ping"), Event("x"), Comment(""),
    ]  # fmt: skip
    assert EventParser().feed(stream) == [Event("x")]


def test_close_while_skipping_discards_the_event() -> None:
    parser = EventParser(10, skip_oversized=True)
    parser.feed_all(b"data: " + b"z" * 50)
    assert parser.close() is True
    assert parser.feed_all(b"data: ok\n\n") == [Event("ok")]
    assert parser.skipped_events == 0
