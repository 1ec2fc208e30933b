"""Fuzzing the SSE parser as a client facing a hostile or broken server.

``tests/test_wire_properties.py`` checks the parser against a model of the standard. These
properties are about what a hostile stream can do to it:

- The size limit is exact, however the stream is split: a stream whose events each fit in
  ``max_event_bytes`` (all their bytes, line ends included) never raises; one with an event
  whose data (values plus a line feed each) is larger always raises ``EventTooLarge``, having
  returned a prefix of the events before it, and with ``buffered_bytes`` over the limit. After
  that the parser stays failed: every ``feed`` raises again, ``close()`` or not.
- Total on real chat streams (every dialect's frames) mutated byte by byte, fed in random pieces
  with ``close()`` and ``last_event_id`` resets in between: only ``EventTooLarge``, and every event
  returned is well formed (a non-empty type and an id with no CR, LF or NUL; retry >= 0).
- Linear time on pathological shapes fed one byte at a time (a line that never ends, CRs alone,
  CRLF pairs split across feeds, a retry of 100,000 digits, 100,000 blank lines...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawsse.chat import (
    ANTHROPIC,
    CHATGPT_WEB,
    ENVELOPE,
    GEMINI,
    OPENAI,
    ChatError,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from rawsse.parser import EventParser, EventTooLarge
from rawsse.sse import Event
from tests.hypothesis_profiles import fuzz

# --- structured streams whose sizes are known ---------------------------------------------

line_values = st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)


@dataclass
class Block:
    """One event's lines: the bytes on the wire, the event expected, and its sizes."""

    lines: list[bytes]
    expected: Event | None
    data_bytes: int  # what the parser buffers for it: each data value plus one LF


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    data = draw(st.lists(line_values, max_size=4))
    event_type = draw(st.none() | line_values)
    event_id = draw(st.none() | line_values.filter(lambda b: b"\0" not in b))
    comments = draw(st.lists(line_values, max_size=2))
    lines = [b"data: " + value for value in data]
    if event_type is not None:
        lines.append(b"event: " + event_type)
    if event_id is not None:
        lines.append(b"id: " + event_id)
    lines += [b":" + comment for comment in comments]
    lines = draw(st.permutations(lines))
    data = [line[6:] for line in lines if line.startswith(b"data: ")]
    expected = None
    if data:
        expected = Event(
            b"\n".join(data).decode("utf-8", "replace"),
            event_type.decode("utf-8", "replace") if event_type else "message",
            event_id.decode("utf-8", "replace") if event_id is not None else None,
            None,
        )
    return Block(lines, expected, sum(len(value) + 1 for value in data))


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for point in points:
        out.append(data[last:point])
        last = point
    out.append(data[last:])
    return out


@fuzz(300)
@given(
    st.lists(blocks(), max_size=6),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(0, 10_000), max_size=12),
    st.integers(1, 120),
)
def test_size_limit_is_exact_whatever_the_split(
    events: list[Block], line_end: bytes, cuts: list[int], limit: int
) -> None:
    wire = [b"".join(line + line_end for line in block.lines) + line_end for block in events]
    stream = b"".join(wire)
    expected = [block.expected for block in events if block.expected is not None]
    # Where the first event too large for the limit sits among the dispatched events.
    too_large = next(
        (i for i, b in enumerate(e for e in events if e.expected) if b.data_bytes > limit), None
    )
    all_fit = all(len(w) <= limit for w in wire)

    parser = EventParser(max_event_bytes=limit)
    got: list[Event] = []
    failure: EventTooLarge | None = None
    try:
        for piece in pieces(stream, cuts):
            got += parser.feed(piece)
    except EventTooLarge as exc:
        failure = exc
    if failure is not None:
        got += failure.events
        assert not all_fit, "raised although every event fits"
        assert failure.buffered_bytes > limit
        assert got == expected[: len(got)]  # a prefix, each event complete and right
        if too_large is not None:
            assert len(got) <= too_large
        # Failed for good: nothing more is parsed, whatever comes.
        for more in (b"", b"\n\n", b"data: x\n\n"):
            with pytest.raises(EventTooLarge):
                parser.feed(more)
        parser.close()
        with pytest.raises(EventTooLarge):
            parser.feed(b"data: after close\n\n")
        return
    assert too_large is None, "an event larger than the limit got through"
    assert got == expected


# --- real chat streams, mutated -----------------------------------------------------------


def _chat_stream(dialect: Any, text: str, tool: bool, fail: bool) -> bytes:
    from rawsse.chat.request import ChatRequest, Message

    request = ChatRequest(
        "echo",
        (Message("user", text),),
        dialect=dialect.name,
        stream=True,
        include_usage=True,
    )
    frames = dialect.new_stream(request, "fuzzstream", 1_700_000_000)
    out = frames.start()
    out += frames.feed(ReasoningDelta("thinking "))
    for word in text.split(" "):
        out += frames.feed(TextDelta(word + " "))
    if tool:
        out += frames.feed(ToolCallDelta(0, id="call_1", name="lookup", arguments='{"q":'))
        out += frames.feed(ToolCallDelta(0, arguments='"x"}'))
    if fail:
        out += frames.fail(ChatError.server_error())
    else:
        out += frames.feed(Usage(3, 4))
        out += frames.feed(Finish("tool_calls" if tool else "stop"))
        out += frames.finish()
    return b"".join(out)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    dialect = draw(st.sampled_from([OPENAI, ANTHROPIC, GEMINI, CHATGPT_WEB, ENVELOPE]))
    text = draw(st.text(min_size=1, max_size=40))
    tool, fail = draw(st.booleans()), draw(st.booleans())
    try:
        stream = _chat_stream(dialect, text, tool, fail)
    except ChatError:  # a dialect that cannot express it (tool calls in the web format)
        stream = _chat_stream(dialect, text, False, fail)
    if draw(st.booleans()):
        stream = b"\xef\xbb\xbf" + stream
    for _ in range(draw(st.integers(0, 6))):
        if not stream:
            break
        at = draw(st.integers(0, len(stream) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "line"]))
        if op == "flip":
            stream = stream[:at] + bytes([draw(st.integers(0, 255))]) + stream[at + 1 :]
        elif op == "insert":
            stream = stream[:at] + draw(st.binary(max_size=8)) + stream[at:]
        elif op == "delete":
            stream = stream[:at] + stream[at + draw(st.integers(1, 16)) :]
        elif op == "repeat":
            stream = stream[:at] + stream[at : at + 32] * draw(st.integers(2, 5)) + stream[at:]
        else:
            line = draw(
                st.sampled_from(
                    [b"\r", b"\n", b"\r\n", b"retry: 99999999999999999999\n", b"id: \x00\n", b":"]
                )
            )
            stream = stream[:at] + line + stream[at:]
    return stream


def _check_event(event: Event) -> None:
    assert isinstance(event.data, str)
    assert isinstance(event.event, str) and event.event
    assert not any(c in event.event for c in "\r\n")
    if event.id is not None:
        assert not any(c in event.id for c in "\r\n\0")
    if event.retry is not None:
        assert isinstance(event.retry, int) and event.retry >= 0


@fuzz(300)
@given(
    mutated_streams(),
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["cut", "close", "id"]))),
    st.integers(1, 4096),
)
def test_parser_is_total_on_mutated_chat_streams(
    stream: bytes, operations: list[tuple[int, str]], limit: int
) -> None:
    parser = EventParser(max_event_bytes=limit)
    position = 0
    failure: EventTooLarge | None = None
    try:
        for at, op in sorted(operations):
            at %= len(stream) + 1
            if at > position:
                for event in parser.feed(stream[position:at]):
                    _check_event(event)
                position = at
            if op == "close":
                assert isinstance(parser.close(), bool)
            elif op == "id":
                parser.last_event_id = "resumed-1"
        for event in parser.feed(stream[position:]):
            _check_event(event)
    except EventTooLarge as exc:
        failure = exc
    if failure is not None:
        assert failure.buffered_bytes > limit
        for event in failure.events:
            _check_event(event)
    assert "\0" not in parser.last_event_id
    assert parser.retry is None or parser.retry >= 0


# --- pathological shapes: linear time -----------------------------------------------------

_N = 100_000


@pytest.mark.parametrize(
    ("shape", "max_event_bytes"),
    [
        pytest.param(b"x" * _N, 2 * _N, id="line-never-ends"),
        pytest.param(b"data: " + b"y" * _N, 2 * _N, id="data-line-never-ends"),
        pytest.param(b"\r" * _N, 1024, id="lone-CRs"),
        pytest.param(b"\r\n" * (_N // 2), 1024, id="CRLF-pairs"),
        pytest.param(b"\n" * _N, 1024, id="blank-lines"),
        pytest.param(b"data:\n" * (_N // 6), _N, id="empty-data-lines"),
        pytest.param(b"retry: " + b"9" * _N + b"\n\n", 2 * _N, id="retry-100k-digits"),
        pytest.param(b"retry: " + b"0" * _N + b"7\n\n", 2 * _N, id="retry-100k-zeros"),
        pytest.param(b"id: " + b"i" * _N + b"\n", 2 * _N, id="long-id"),
        pytest.param(b"\xef\xbb\xbf" * (_N // 3), 2 * _N, id="BOMs"),
        pytest.param(b"\xff\xfe" * (_N // 2), 2 * _N, id="invalid-utf8"),
    ],
)
@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_pathological_streams_cost_linear_time(
    shape: bytes, max_event_bytes: int, piece: int
) -> None:
    parser = EventParser(max_event_bytes=max_event_bytes)
    started = time.process_time()
    count = 0
    for i in range(0, len(shape), piece):
        count += len(parser.feed(shape[i : i + piece]))
    count += len(parser.feed(b"\n\n"))
    elapsed = time.process_time() - started
    # About 1 us per feed call here; a quadratic parser takes minutes on these.
    assert elapsed < 5 + len(shape) / piece * 2e-5, f"{elapsed:.1f} s"
    assert count <= len(shape)


def test_event_over_the_limit_stops_buffering_at_the_limit() -> None:
    """A server that streams one endless event makes the client buffer at most about
    ``max_event_bytes``, whatever the read size, before ``EventTooLarge``."""
    limit = 64 * 1024
    for read_size in (1, 100, 16 * 1024):
        parser = EventParser(max_event_bytes=limit)
        piece = b"data: " + b"z" * (read_size - 7) + b"\n" if read_size > 7 else b"z"
        fed = 0
        failure: EventTooLarge | None = None
        for _ in range(10 * limit // read_size + 2):
            fed += len(piece)
            try:
                parser.feed(piece)
            except EventTooLarge as exc:
                failure = exc
                break
        assert failure is not None, "an endless event was buffered past the limit"
        assert limit < failure.buffered_bytes <= limit + len(piece)
        # It failed on the first feed that took it over the limit, not later.
        buffered_per_piece = len(piece) - 6 if read_size > 7 else 1
        assert fed <= (limit // buffered_per_piece + 1) * len(piece)
