"""Helpers for the chat tests: run a dialect stream over deltas, read its frames back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from rawsse.chat import ChatRequest, Delta, Dialect, DialectStream
from rawsse.parser import EventParser
from rawsse.sse import Event

STREAM_ID = "s1"
CREATED = 1700000000


def run(
    dialect: Dialect, request: ChatRequest, deltas: Iterable[str | Delta]
) -> tuple[list[bytes], DialectStream]:
    """Start a stream, feed every delta, finish it; return every frame and the stream."""
    stream = dialect.new_stream(request, STREAM_ID, CREATED)
    frames = stream.start()
    for delta in deltas:
        frames += stream.feed(delta)
    frames += stream.finish()
    return frames, stream


def answer(dialect: Dialect, request: ChatRequest, deltas: Iterable[str | Delta]) -> Any:
    """The non-streaming body for the same request (with ``stream`` false) and deltas."""
    _, stream = run(dialect, replace(request, stream=False), deltas)
    return stream.response_body()


def parse_frames(frames: list[bytes]) -> list[Event]:
    """Parse frames back into events, checking each is whole and holds exactly one event.

    The concatenation, parsed in one piece and byte by byte, must give the same events.
    """
    events: list[Event] = []
    for frame in frames:
        assert frame.endswith(b"\n\n"), frame
        parser = EventParser()
        got = parser.feed(frame)
        assert len(got) == 1, frame
        assert not parser.close(), frame  # nothing left pending
        events += got
    whole = b"".join(frames)
    assert EventParser().feed(whole) == events
    bytewise = EventParser()
    assert [event for i in range(len(whole)) for event in bytewise.feed(whole[i : i + 1])] == events
    return events


def payloads(events: list[Event]) -> list[Any]:
    """Each event's data, as JSON when it is JSON, else the text (``[DONE]``)."""
    out = []
    for event in events:
        try:
            out.append(json.loads(event.data))
        except ValueError:
            out.append(event.data)
    return out


def ids(events: list[Event]) -> list[str | None]:
    """Each event's id field."""
    return [event.id for event in events]
