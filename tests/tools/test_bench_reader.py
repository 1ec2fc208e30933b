"""bench's response path without a server: ``ResponseReader``, ``HeadCache`` and ``Readiness``.

Whole responses (head and body) are fed as reads cut at every byte and at random points, with a
cold head cache (h11 parses the head) and a warm one (a lookup), and must count the same as the
parser; hostile framing, wrong heads and cut streams must fail as the kind they are.
"""

from __future__ import annotations

import random
import socket
from itertools import pairwise

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.bench._chunks import frame_chunks
from rawsse.bench._head import HeadCache
from rawsse.bench._io import Readiness
from rawsse.bench._response import Checker, Failed, ResponseReader
from rawsse.bench._run import BenchState
from rawsse.client._body import ChunkedBody
from rawsse.client._errors import SSEConnectionError, SSEProtocolError
from rawsse.client._exchange import PreparedRequest, Target
from rawsse.parser import EventParser
from tests.tools_support import DONE_FRAME, ERROR_FRAME, LAST_CHUNK, chat_chunk, chunk

TARGET = Target.from_url("http://127.0.0.1:1/v1/chat/completions")
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
FRAMES = [
    chat_chunk(""),
    *(chat_chunk(f"tok{i} ") for i in range(20)),
    b": keep-alive\n\n",  # a heartbeat: a comment, not an event
    b"id: 7\nevent: tick\ndata: {}\n\n",  # two lines: the general path takes it
    *(chat_chunk(f"more{i} ") for i in range(5)),
    DONE_FRAME,
]
BODY = b"".join(chunk(frame) for frame in FRAMES) + LAST_CHUNK
EVENTS = len(EventParser().feed(b"".join(FRAMES)))


def _cache() -> HeadCache:
    return HeadCache(PreparedRequest.build(TARGET, "POST", [], b"{}"))


def _read(
    reads: list[bytes],
    cache: HeadCache | None = None,
    *,
    state: BenchState | None = None,
    terminal: str | None = "[DONE]",
    checker: Checker | None = None,
    reused: bool = False,
    eof: bool = False,
) -> tuple[BenchState, bool]:
    """Feed ``reads`` as bench does; return the state and whether the connection is reusable.
    Raises what the reader raises; ``eof``: the peer closes after the reads."""
    state = state or BenchState()
    reader = ResponseReader(state, cache or _cache(), 0.0, reused, terminal, checker)
    try:
        complete = False
        for i, data in enumerate(reads):
            assert not complete, "bytes after the response was complete"
            complete = reader.take(data, float(i + 1))
        if eof and not complete:
            reader.eof()
        elif not complete:
            raise AssertionError("the response never completed")
        return state, reader.finish(held=False)
    finally:
        reader.close()


def _cuts(wire: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *points, len(wire)]
    return [wire[a:b] for a, b in pairwise(edges) if b > a]


def _assert_counted(state: BenchState, reads: int = 1) -> None:
    assert state.events == EVENTS * reads
    assert state.comments == reads
    assert state.payload_bytes == len(b"".join(FRAMES)) * reads
    assert state.first_event_us.count == state.headers_us.count == state.ttfb_us.count == reads
    assert state.gap_us.count == (EVENTS - 1) * reads
    assert state.statuses == {200: reads}


@pytest.mark.parametrize("warm", [False, True])
def test_every_split_point_of_a_whole_response(warm: bool) -> None:
    wire = HEAD + BODY
    cache = _cache()
    if warm:
        _read([wire], cache)
    for cut in range(1, len(wire)):
        state, reusable = _read(_cuts(wire, [cut]), cache)
        assert reusable, cut
        _assert_counted(state)
    rng = random.Random(24)
    for _ in range(200):
        state, reusable = _read(_cuts(wire, sorted(rng.sample(range(1, len(wire)), 9))), cache)
        assert reusable
        _assert_counted(state)


def test_the_head_is_parsed_once_and_its_verdict_reused() -> None:
    cache = _cache()
    assert cache.lookup(HEAD + BODY) is None
    state, _ = _read([HEAD[:10], HEAD[10:] + BODY], cache)  # a miss, parsed by h11
    found = cache.lookup(HEAD + BODY)
    assert found is not None and found[1] == len(HEAD)
    assert found[0].chunked and found[0].keep_alive and found[0].failure is None
    state, _ = _read([HEAD + BODY], cache, state=state)  # a hit
    _assert_counted(state, reads=2)
    # A head that ends at a bare LF blank line earlier is its own head: never served from the
    # entry of a longer one, and the longer one is not cached under a shorter key.
    lf_head = b"HTTP/1.1 200 OK\ncontent-type: text/event-stream\ntransfer-encoding: chunked\n\n"
    state, _ = _read([lf_head + BODY], cache)
    _assert_counted(state)
    # An interim response before the head: parsed, counted, not cached.
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    state, _ = _read([interim + HEAD + BODY], _cache())
    _assert_counted(state)
    fresh = _cache()
    _read([interim + HEAD + BODY], fresh)
    assert fresh.lookup(HEAD + BODY) is None


@pytest.mark.parametrize("warm", [False, True])
def test_wrong_heads_fail_as_their_kind(warm: bool) -> None:
    cases = {
        "status": b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/event-stream\r\n"
        b"content-length: 0\r\n\r\n",
        "content_type": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\n\r\n{}",
    }
    cache = _cache()
    for kind, wire in cases.items():
        for _ in range(2 if warm else 1):
            state = BenchState()
            with pytest.raises(Failed) as failed:
                _read([wire], cache, state=state)
            assert failed.value.kind == kind
            assert state.events == 0
    with pytest.raises(SSEProtocolError):
        _read([b"HTTP/1.1 2000 OK\r\n\r\n"])
    with pytest.raises(SSEProtocolError):
        _read([b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"])


HOSTILE = {
    "size one short": b"%x\r\n%s\r\n" % (len(FRAMES[1]) - 1, FRAMES[1]),
    "size one long": b"%x\r\n%s\r\n" % (len(FRAMES[1]) + 1, FRAMES[1]),
    "size not hex": b"zz\r\n" + FRAMES[1] + b"\r\n",
    "size line with a space": b" %x\r\n%s\r\n" % (len(FRAMES[1]), FRAMES[1]),
    "data not followed by CRLF": b"%x\r\n%sXY" % (len(FRAMES[1]), FRAMES[1]),
    "size line too long": b"1" * 5000 + b"\r\n",
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_chunk_framing_is_a_protocol_error(case: str) -> None:
    # Good chunks, then the bad one, then more good chunks: whatever the read cuts, the bad
    # chunk is refused (never counted past), on the fast path and the general one.
    good = b"".join(chunk(frame) for frame in FRAMES[:5])
    wire = HEAD + good + HOSTILE[case] + good + LAST_CHUNK
    for cut in [*range(len(HEAD) - 2, len(HEAD) + len(good) + 40), len(wire) - 3]:
        state = BenchState()
        with pytest.raises(SSEProtocolError):
            _read(_cuts(wire, [cut]), state=state, eof=True)
        assert state.events <= 5 + 1, (case, cut)


def test_truncated_and_cut_streams() -> None:
    body_no_end = b"".join(chunk(frame) for frame in FRAMES[:-1])
    # A clean end of the body without [DONE]: truncated.
    with pytest.raises(Failed) as failed:
        _read([HEAD + body_no_end + LAST_CHUNK])
    assert failed.value.kind == "truncated"
    # With no terminal expected, the same is fine.
    state, reusable = _read([HEAD + body_no_end + LAST_CHUNK], terminal=None)
    assert reusable and state.events == EVENTS - 1
    # The connection closes mid-body, mid-chunk, before the last chunk, in the head.
    wire = HEAD + BODY
    for end in (len(HEAD) + 100, len(wire) - len(LAST_CHUNK), len(wire) - 2, len(HEAD) + 3):
        with pytest.raises(SSEConnectionError):
            _read([wire[:end]], eof=True)
    for end in (0, 20):
        with pytest.raises(Failed) as failed:
            _read([wire[:end]] if end else [], eof=True)
        assert failed.value.kind == "disconnect"
    # A reused connection closed before a byte: stale (the request may go again).
    with pytest.raises(Failed) as failed:
        _read([], eof=True, reused=True)
    assert failed.value.kind == "stale"


def test_in_band_errors_and_what_follows_the_body() -> None:
    frames = [chat_chunk("a"), ERROR_FRAME, DONE_FRAME]
    wire = HEAD + b"".join(chunk(frame) for frame in frames) + LAST_CHUNK
    for cut in range(1, len(wire)):
        with pytest.raises(Failed) as failed:
            _read(_cuts(wire, [cut]))
        assert failed.value.kind == "in_band", cut
    # Bytes after the body (a server out of turn), trailers, Connection: close.
    state, reusable = _read([HEAD + BODY + b"HTTP/1.1 200 OK\r\n"])
    assert not reusable and state.events == EVENTS
    state, reusable = _read([HEAD + BODY[: -len(LAST_CHUNK)] + b"0\r\nx-t: 1\r\n\r\n"])
    assert reusable and state.events == EVENTS
    close = HEAD.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    state, reusable = _read([close + BODY])
    assert not reusable and state.events == EVENTS


def test_other_framings_and_check_mode() -> None:
    payload = b"".join(FRAMES)
    length = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
    wire = length % len(payload) + payload
    for cut in range(1, len(wire), 7):
        state, reusable = _read(_cuts(wire, [cut]))
        assert reusable and state.events == EVENTS and state.comments == 1
    close = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + payload
    state, reusable = _read([close], eof=True)
    assert not reusable and state.events == EVENTS
    # --check parses every event: the counts are the parser's, and bad data is caught.
    state, _ = _read([HEAD + BODY], checker=Checker(None))
    assert state.events == EVENTS
    bad = HEAD + chunk(b"data: not json\n\n") + chunk(DONE_FRAME) + LAST_CHUNK
    with pytest.raises(Failed) as failed:
        _read([bad], checker=Checker(None))
    assert failed.value.kind == "check"


@pytest.mark.anyio
async def test_a_parked_connection_closed_by_its_peer_is_seen_when_resumed(
    anyio_backend: str,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    readiness = Readiness.open(ours)
    try:
        theirs.send(b"x")
        with anyio.fail_after(2):
            await readiness.wait()
        assert ours.recv(10) == b"x"
        readiness.consumed()
        readiness.park()
        theirs.close()  # the server closes the idle connection
        await anyio.sleep(0.05)  # loop passes while parked: none may spin on the EOF
        if anyio_backend == "asyncio":  # the level-triggered reader was removed at once
            assert not readiness._registered  # type: ignore[attr-defined]
        readiness.resume()
        with anyio.fail_after(2):
            await readiness.wait()
        assert ours.recv(10) == b""
    finally:
        readiness.close()
        ours.close()


def _fast_then_strict(data: bytes, start: int) -> bytes:
    """The payload as bench decodes it: ``frame_chunks`` from ``start``, then ``ChunkedBody``
    for what it left (raises what the decoder raises)."""
    taken = frame_chunks(data, start)
    payload = b""
    if taken is not None:
        frames, start, size, ended = taken
        payload = b"".join(frame + b"\n\n" for frame in frames)
        assert len(payload) == size
        if ended:
            assert start == len(data)
            return payload
    decoder = ChunkedBody()
    payload += decoder.feed(data[start:])
    decoder.feed_eof()
    return payload


_SIZE_EDITS = [
    lambda size: b"%x" % (int(size, 16) + 1),
    lambda size: b"%x" % (int(size, 16) - 1),
    lambda size: b"+" + size,
    lambda size: b" " + size,
    lambda size: size[:1] + b"_" + size[1:],
    lambda size: b"0x" + size,
    lambda size: size.upper(),
    lambda size: b"0" + size,
    lambda size: size + b";x",
]


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from([b"data: a", b"data: bb", b":", chat_chunk("c")[:-2]])
        | st.binary(min_size=1, max_size=40).filter(lambda b: not b.count(b"\n") + b.count(b"\r")),
        min_size=1,
        max_size=12,
    ),
    alike=st.sampled_from([None, None, b"data: x\r\n1a\r\ny", b"data: \n\n\r\n5", b"\n"]),
    edit=st.integers(min_value=-len(_SIZE_EDITS), max_value=len(_SIZE_EDITS) - 1),
    which=st.integers(min_value=0, max_value=11),
)
def test_the_one_pass_after_a_head_agrees_with_the_strict_decoder(
    lines: list[bytes], alike: bytes | None, edit: int, which: int
) -> None:
    # Chunks after a head in the same read, as bench gets them; maybe a chunk whose data
    # holds a boundary look-alike; maybe one chunk-size line edited into something else (a
    # wrong size, or a form only ``int`` would take): the one pass must agree with the
    # strict decoder, by decoding the same payload or by failing.
    if alike is not None:
        lines.insert(which % (len(lines) + 1), alike)
    chunks = [chunk(line + b"\n\n") for line in lines]
    if edit >= 0:
        k = which % len(chunks)
        size, _, rest = chunks[k].partition(b"\r\n")
        chunks[k] = _SIZE_EDITS[edit](size) + b"\r\n" + rest
    data = HEAD + b"".join(chunks) + LAST_CHUNK
    try:
        strict = ChunkedBody().feed(data[len(HEAD) :])
        expected: bytes | None = strict
    except SSEProtocolError:
        expected = None
    try:
        fast: bytes | None = _fast_then_strict(data, len(HEAD))
    except (SSEProtocolError, SSEConnectionError):
        fast = None
    if expected is not None:
        # the strict decoder may accept an edited size line (upper case, a leading zero):
        # then so must the one pass, with the same payload
        decoder = ChunkedBody()
        decoder.feed(data[len(HEAD) :])
        if not decoder.done:
            expected = None  # a size edited longer swallowed the last chunk: cut short
    assert fast == expected
