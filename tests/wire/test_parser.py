"""EventParser against hand-written WHATWG vectors (tests/vectors/parse.json), fed whole, one
byte at a time, split at every byte position and with trailing data; plus its own API: the
size limit, close() at end of stream, last_event_id across streams, and linear cost."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rawsse.parser import DEFAULT_MAX_EVENT_BYTES, EventParser, EventTooLarge
from rawsse.sse import Event

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "parse.json").read_text("utf-8")
)


def stream_of(vector: dict[str, Any]) -> bytes:
    if "text" in vector:
        return str(vector["text"]).encode("utf-8")
    # One code point per byte: latin-1 maps U+0000..U+00FF to bytes 0..255 and fails on others.
    return str(vector["bytes"]).encode("latin-1")


def expected_of(vector: dict[str, Any]) -> list[Event]:
    return [
        Event(e["data"], e.get("event", "message"), e.get("id"), e.get("retry"))
        for e in vector["events"]
    ]


def parse(pieces: Iterable[bytes], parser: EventParser | None = None) -> list[Event]:
    parser = parser if parser is not None else EventParser()
    return [event for piece in pieces for event in parser.feed(piece)]


def splits(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [data]
    yield "one byte at a time", [data[i : i + 1] for i in range(len(data))]
    for i in range(len(data) + 1):
        yield f"split at {i}", [data[:i], data[i:]]
    # Trailing data that never ends a line changes nothing.
    yield "with trailing data", [data, b"data: trailing", b" more"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    data = stream_of(vector)
    expected = expected_of(vector)
    for how, pieces in splits(data):
        parser = EventParser()
        assert parse(pieces, parser) == expected, how
        assert parser.last_event_id == vector.get("last_event_id", ""), how
        assert parser.retry == vector.get("retry"), how


def test_vectors_cover_the_brief() -> None:
    names = {v["name"] for v in VECTORS}
    for needed in (
        "bom-stripped",
        "line-ends-lf",
        "line-ends-crlf",
        "line-ends-cr",
        "crlf-split-feeds-data-and-blank-line",
        "id-with-nul-ignored",
        "retry-bogus-plus",
        "retry-bogus-leading-space",
        "retry-bogus-negative",
        "retry-bogus-underscore",
        "retry-bogus-decimal-point",
        "empty-data-field-dispatches-empty-string",
        "unknown-fields-ignored",
        "data-without-colon",
        "eof-mid-event-after-line",
        "multibyte-utf8",
        "unicode-line-breaks-are-data",
    ):
        assert needed in names


# --- line ends across feeds -------------------------------------------------------------------


def test_cr_at_end_of_feed_and_lf_at_start_of_next_is_one_line_end() -> None:
    # Were the LF a second line end, it would be a blank line dispatching "a" on its own.
    assert parse([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [Event("a\nb")]


def test_cr_then_empty_feeds_then_lf() -> None:
    assert parse([b"data: a\r", b"", b"", b"\n", b"data: b\n\n"]) == [Event("a\nb")]


def test_cr_at_end_of_feed_then_other_byte() -> None:
    assert parse([b"data: a\r", b"\r"]) == [Event("a")]
    assert parse([b"data: a\r", b"data: b\r\r"]) == [Event("a\nb")]


def test_lf_after_cr_only_skipped_once() -> None:
    # CR LF LF: one line end, then a blank line.
    assert parse([b"data: a\r", b"\n", b"\n"]) == [Event("a")]


# --- BOM --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces",
    [
        [b"\xef", b"\xbb", b"\xbf", b"data: a\n\n"],
        [b"\xef\xbb", b"\xbfdata: a\n\n"],
        [b"", b"\xef", b"", b"\xbb\xbfdata: a\n", b"\n"],
    ],
)
def test_bom_split_across_feeds_is_stripped(pieces: list[bytes]) -> None:
    assert parse(pieces) == [Event("a")]


def test_partial_bom_then_other_bytes_is_data() -> None:
    # EF BB then "d": one U+FFFD, so the field is "\ufffddata", an unknown field.
    assert parse([b"\xef", b"\xbb", b"data: a\n\ndata: b\n\n"]) == [Event("b")]
    assert parse([b"\xef", b"\n", b"data: a\n\n"]) == [Event("a")]


def test_bom_only_at_stream_start() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n\n") == [Event("a")]
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\ndata: c\n\n") == [Event("c")]


# --- UTF-8 ------------------------------------------------------------------------------------


def test_multibyte_characters_split_byte_by_byte_in_every_field() -> None:
    text = "event: 事件\nid: ïd-€\ndata: 😀 € ü 中\n\n".encode()
    parser = EventParser()
    assert parse([text[i : i + 1] for i in range(len(text))], parser) == [
        Event("😀 € ü 中", "事件", "ïd-€")
    ]
    assert parser.last_event_id == "ïd-€"


def test_invalid_utf8_split_across_feeds_matches_whole_stream_decode() -> None:
    raw = b"data: \xf0\x9f\x98 \xe2\x82\xac\xff\xc3\n\n"
    assert parse([raw[:8], raw[8:9], raw[9:]]) == [Event("\ufffd €\ufffd\ufffd")]


# --- ids, retry, dispatch ---------------------------------------------------------------------


def test_last_event_id_persists_across_feeds_and_events() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 1\ndata: a\n\n") == [Event("a", id="1")]
    assert parser.last_event_id == "1"
    assert parser.feed(b"data: b\n\n") == [Event("b")]
    assert parser.last_event_id == "1"
    assert parser.feed(b"id: 2\n") == []
    assert parser.last_event_id == "1"  # committed only by the blank line
    assert parser.feed(b"\n") == []
    assert parser.last_event_id == "2"


def test_setting_last_event_id_resumes_from_it() -> None:
    parser = EventParser()
    parser.last_event_id = "41"
    assert parser.feed(b"data: a\n\n") == [Event("a")]
    assert parser.last_event_id == "41"
    assert parser.feed(b"id: 42\ndata: b\n\n") == [Event("b", id="42")]
    assert parser.last_event_id == "42"


def test_retry_attribute_is_the_latest_valid_value() -> None:
    parser = EventParser()
    assert parser.retry is None
    parser.feed(b"retry: 10\n")
    assert parser.retry == 10
    parser.feed(b"retry: x\nretry: 20")
    assert parser.retry == 10  # "retry: 20" has no line end yet
    parser.feed(b"\n")
    assert parser.retry == 20


def test_retry_with_thousands_of_digits() -> None:
    parser = EventParser()
    assert parser.feed(b"retry: " + b"0" * 10_000 + b"7\ndata: a\n\n") == [Event("a", retry=7)]
    assert parser.feed(b"retry: " + b"9" * 10_000 + b"\ndata: b\n\n") == [Event("b")]
    assert parser.retry == 7
    assert parser.feed(b"retry: " + b"9" * 4300 + b"\n") == []
    assert parser.retry == int("9" * 4300)


def test_event_type_only_frames_dispatch_nothing() -> None:
    assert parse([b"event: a\n\n", b"event: b\nid: 3\nretry: 1\n\n"]) == []


def test_parsed_events_equal_constructed_events() -> None:
    [event] = parse([b"event: e\nid: i\nretry: 5\ndata: d\n\n"])
    assert event == Event("d", "e", "i", 5)
    assert hash(event) == hash(Event("d", "e", "i", 5))
    assert repr(event) == "Event(data='d', event='e', id='i', retry=5)"


# --- close() ----------------------------------------------------------------------------------


def test_close_discards_unfinished_event_and_reports_it() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n\nid: 9\ndata: b\n") == [Event("a")]
    assert parser.close() is True
    assert parser.last_event_id == ""  # the id of the discarded event never counted
    assert parser.feed(b"\n") == []  # a new stream: the old data is gone
    assert parser.feed(b"data: c\n\n") == [Event("c")]


def test_close_reports_part_of_a_line() -> None:
    parser = EventParser()
    parser.feed(b"data: a\n\ndat")
    assert parser.close() is True
    assert parser.feed(b"a: b\n\n") == []  # "a: b" is an unknown field, not the rest of "dat"


def test_close_after_complete_events_discards_nothing() -> None:
    parser = EventParser()
    parser.feed(b"data: a\n\n: comment\n")
    assert parser.close() is False


def test_close_keeps_stream_wide_values_and_new_stream_may_start_with_bom() -> None:
    parser = EventParser()
    parser.feed(b"retry: 500\nid: 7\ndata: a\n\n")
    parser.close()
    assert (parser.last_event_id, parser.retry) == ("7", 500)
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == [Event("b")]
    assert parser.last_event_id == "7"


def test_close_forgets_a_trailing_cr() -> None:
    parser = EventParser()
    parser.feed(b"data: a\r")
    parser.close()
    # The LF starts the new stream: a blank line, which has nothing to dispatch.
    assert parser.feed(b"\ndata: b\n\n") == [Event("b")]


# --- size limit -------------------------------------------------------------------------------


def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 1024 * 1024
    assert EventParser().max_event_bytes == DEFAULT_MAX_EVENT_BYTES


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        EventParser(0)


def test_event_exactly_at_limit_passes_one_byte_more_raises() -> None:
    # The limit counts each data value plus its line feed: "x" * 99 + LF is 100 bytes.
    assert EventParser(100).feed(b"data: " + b"x" * 99 + b"\n\n") == [Event("x" * 99)]
    with pytest.raises(EventTooLarge):
        EventParser(100).feed(b"data: " + b"x" * 100 + b"\n\n")


def test_too_large_is_a_value_error_with_a_clear_message() -> None:
    parser = EventParser(1000)
    with pytest.raises(ValueError, match=r"max_event_bytes=1000") as info:
        parser.feed(b"data: " + b"x" * 2000 + b"\n\n")
    assert isinstance(info.value, EventTooLarge)
    assert info.value.max_event_bytes == 1000
    assert info.value.buffered_bytes > 1000
    assert "too large" in str(info.value)


def test_too_large_across_many_data_lines() -> None:
    parser = EventParser(1000)
    for _ in range(90):  # 90 lines of 11 bytes (value and LF): 990 bytes buffered
        assert parser.feed(b"data: 0123456789\n") == []
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: 0123456789\n")


def test_too_large_unterminated_line_fed_byte_by_byte() -> None:
    parser = EventParser(1000)
    for _ in range(1000):
        assert parser.feed(b"x") == []
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"x")
    assert info.value.buffered_bytes == 1001


def test_too_large_keeps_the_events_before_it_and_stays_failed() -> None:
    parser = EventParser(100)
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"data: a\n\ndata: b\n\ndata: " + b"x" * 200)
    assert info.value.events == [Event("a"), Event("b")]
    with pytest.raises(EventTooLarge):
        parser.feed(b"\n\ndata: c\n\n")


def test_ignored_lines_do_not_count_towards_the_limit() -> None:
    parser = EventParser(100)
    noise = b": comment comment comment\nfoo: bar bar bar\nevent: type\nid: 1234567890\n" * 50
    assert parser.feed(noise + b"data: a\n\n") == [Event("a", "type", "1234567890")]


def test_limit_resets_after_each_event() -> None:
    parser = EventParser(100)
    frame = b"data: " + b"x" * 90 + b"\n\n"
    assert parse([frame] * 50, parser) == [Event("x" * 90)] * 50


# --- cost -------------------------------------------------------------------------------------


def test_one_byte_feeds_stay_linear() -> None:
    # 256 KiB in one line plus 16k short lines, fed one byte at a time: linear work is well
    # under a second here; re-copying the buffered line on every feed (quadratic) would move
    # about 34 GB and take minutes. The bound sits far between the two.
    stream = b"data: " + b"x" * (256 * 1024) + b"\n" + b"data: y\n" * 16_384 + b"\n"
    parser = EventParser()
    start = time.perf_counter()
    events = [event for i in range(len(stream)) for event in parser.feed(stream[i : i + 1])]
    elapsed = time.perf_counter() - start
    assert events == [Event("x" * (256 * 1024) + "\ny" * 16_384)]
    assert elapsed < 20.0


def test_splitlines_line_breaks_inside_a_large_feed() -> None:
    breaks = "\u2028\u2029\u0085\u000b\u000c\u001c\u001d\u001e"
    data = "data: " + breaks * 1000 + "\n\n"
    assert parse([data.encode()]) == [Event(breaks * 1000)]
