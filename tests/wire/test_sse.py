"""The encoder, rule by rule (rules 1-6 of rawsse/sse.py), against hand-written bytes."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from rawsse.sse import Event, encode_comment, encode_event, encode_json_data, encode_retry

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1732406400,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "delta": {"content": "Hi\n"}, "finish_reason": None}],
}


# Rule 1: fields in a fixed order; rule 2: LF line ends, a blank line ends the frame.


def test_fields_in_fixed_order() -> None:
    assert (
        encode_event("x", retry=5, id="7", event="add")
        == b"event: add\nid: 7\nretry: 5\ndata: x\n\n"
    )


def test_data_only_frame() -> None:
    assert encode_event("hello") == b"data: hello\n\n"


@pytest.mark.parametrize(
    ("kwargs", "frame"),
    [
        ({"event": "e"}, b"event: e\ndata: x\n\n"),
        ({"id": "i"}, b"id: i\ndata: x\n\n"),
        ({"retry": 0}, b"retry: 0\ndata: x\n\n"),
        ({"id": ""}, b"id: \ndata: x\n\n"),
        ({"event": "e", "retry": 10}, b"event: e\nretry: 10\ndata: x\n\n"),
    ],
)
def test_optional_fields(kwargs: dict[str, Any], frame: bytes) -> None:
    assert encode_event("x", **kwargs) == frame


# Rule 3: str data split on CRLF, CR and LF, one data line each.


@pytest.mark.parametrize(
    ("data", "frame"),
    [
        ("", b"data: \n\n"),
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\r\n\r\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\n\rb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\n", b"data: a\ndata: \n\n"),
        ("\n", b"data: \ndata: \n\n"),
        (" lead", b"data:  lead\n\n"),
        ("é€😀", "data: é€😀\n\n".encode()),
    ],
)
def test_str_data_split_on_line_ends(data: str, frame: bytes) -> None:
    assert encode_event(data) == frame


@pytest.mark.parametrize("brk", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"])
def test_other_unicode_line_breaks_are_data(brk: str) -> None:
    assert encode_event(f"a{brk}b") == f"data: a{brk}b\n\n".encode()


# Rule 4: bytes are UTF-8 text, split the same way; anything else is JSON.


def test_bytes_data_split_like_str() -> None:
    assert encode_event(b"a\r\nb\rc\nd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_event(bytearray(b"x")) == b"data: x\n\n"
    assert encode_event(memoryview(b"y\nz")) == b"data: y\ndata: z\n\n"
    assert encode_event("é".encode()) == "data: é\n\n".encode()


def test_bytes_data_must_be_utf8() -> None:
    with pytest.raises(ValueError, match="data"):
        encode_event(b"\xff")


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "frame"),
    [
        ({"a": 1, "b": [True, None]}, b'data: {"a":1,"b":[true,null]}\n\n'),
        ([1, 2.5, "x"], b'data: [1,2.5,"x"]\n\n'),
        (42, b"data: 42\n\n"),
        (True, b"data: true\n\n"),
        (None, b"data: null\n\n"),
        (Point(1, 2), b'data: {"x":1,"y":2}\n\n'),
        ({"t": "line\nbreak\r"}, b'data: {"t":"line\\nbreak\\r"}\n\n'),
        ({"t": "é\u2028"}, 'data: {"t":"é\u2028"}\n\n'.encode()),
    ],
)
def test_other_data_is_compact_json_on_one_line(value: Any, frame: bytes) -> None:
    assert encode_event(value) == frame


@pytest.mark.parametrize("value", [{1, 2}, object(), 2**70, {"k": b"\xff"}])
def test_unserialisable_data_raises_naming_data(value: Any) -> None:
    with pytest.raises(ValueError, match="data"):
        encode_event(value)
    with pytest.raises(ValueError, match="data"):
        encode_json_data(value)


def test_lone_surrogate_data_raises_naming_data() -> None:
    with pytest.raises(ValueError, match="data"):
        encode_event("a\ud800")


# Rule 5: event and id without CR/LF, id without NUL, retry a non-negative int.


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "\r\n", "x\n", "\ud800", 5, b"e"])
def test_invalid_event_raises_naming_event(bad: Any) -> None:
    with pytest.raises(ValueError, match="event"):
        encode_event("x", event=bad)
    with pytest.raises(ValueError, match="event"):
        encode_json_data({}, event=bad)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "\0", "\ud800", 5, b"i"])
def test_invalid_id_raises_naming_id(bad: Any) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_event("x", id=bad)
    with pytest.raises(ValueError, match="id"):
        encode_json_data({}, id=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, 3000.0, "3000", True, False])
def test_invalid_retry_raises_naming_retry(bad: Any) -> None:
    with pytest.raises(ValueError, match="retry"):
        encode_event("x", retry=bad)
    with pytest.raises(ValueError, match="retry"):
        encode_retry(bad)


def test_unicode_event_and_id_pass_through() -> None:
    assert (
        encode_event("x", event="é\u2028", id="日本")
        == "event: é\u2028\nid: 日本\ndata: x\n\n".encode()
    )


# Rule 6: never a BOM.


@pytest.mark.parametrize(
    "frame",
    [
        encode_event("\ufeffx"),
        encode_event("x", event="\ufeff"),
        encode_json_data({"a": "\ufeff"}),
        encode_comment("\ufeff"),
        encode_retry(1),
    ],
)
def test_no_frame_starts_with_a_bom(frame: bytes) -> None:
    assert not frame.startswith(b"\xef\xbb\xbf")
    assert frame[:1] in (b"d", b"e", b"i", b"r", b":")


# The hot path.


def test_json_hot_path_is_the_plain_frame() -> None:
    assert encode_json_data(CHUNK) == b"data: " + orjson.dumps(CHUNK) + b"\n\n"
    assert encode_json_data(CHUNK) == encode_event(CHUNK)
    assert encode_json_data(CHUNK).count(b"\n") == 2


def test_json_hot_path_with_id_and_event() -> None:
    assert encode_json_data([1], id="3", event="delta") == b"event: delta\nid: 3\ndata: [1]\n\n"
    assert encode_json_data([1], id="3") == encode_event([1], id="3")


# Comments and retry frames.


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ("", b":\n\n"),
        ("ping", b": ping\n\n"),
        ("a\nb", b": a\n: b\n\n"),
        ("a\r\nb\rc", b": a\n: b\n: c\n\n"),
        ("a\n", b": a\n: \n\n"),
        ("é\u2028", ": é\u2028\n\n".encode()),
    ],
)
def test_comment(text: str, frame: bytes) -> None:
    assert encode_comment(text) == frame


def test_comment_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="comment"):
        encode_comment("\udfff")


def test_retry_frame() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_retry(0) == b"retry: 0\n\n"


# Event values.


def test_event_defaults_and_encode() -> None:
    event = Event("hi")
    assert (event.data, event.event, event.id, event.retry) == ("hi", "message", None, None)
    assert event.encode() == b"data: hi\n\n"
    assert (
        Event("a\nb", "add", "1", 10).encode()
        == b"event: add\nid: 1\nretry: 10\ndata: a\ndata: b\n\n"
    )


def test_event_message_type_left_implicit() -> None:
    assert Event("x", event="message").encode() == b"data: x\n\n"


def test_event_is_immutable() -> None:
    event = Event("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "y"  # type: ignore[misc]


def test_event_encode_validates() -> None:
    with pytest.raises(ValueError, match="id"):
        Event("x", id="a\nb").encode()
