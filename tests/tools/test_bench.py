"""``rawsse bench``: its histograms and frame counter, and the command run as a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import pty
import random
import select
import signal
from typing import Any

import anyio
import anyio.abc
import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawsse.bench._chunks import frame_chunks
from rawsse.bench._frames import FrameCounter
from rawsse.bench._run import BenchConfig, BenchState, run_bench
from rawsse.bench._stats import Histogram
from rawsse.client._body import ChunkedBody
from rawsse.client._connection import connect_ip
from rawsse.client._exchange import Target
from rawsse.parser import EventParser
from tests.support import wait_for
from tests.tools_support import (
    DONE_FRAME,
    ERROR_FRAME,
    LAST_CHUNK,
    MISBEHAVIOURS,
    REPO_ROOT,
    RawRequest,
    chat_chunk,
    chunk,
    closed_port,
    idle_server,
    misbehaving_chat,
    plain_response,
    raw_server,
    rawsse_command,
    rawsse_server,
    run_rawsse,
    sse_head,
)

# ---------------------------------------------------------------- histogram


def test_histogram_percentiles_within_bucket_precision() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_000)]
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    values.sort()
    for p in (50, 90, 99, 99.9):
        exact = values[max(0, -(-len(values) * p // 100) - 1).__int__()]
        assert abs(histogram.percentile(p) - exact) <= exact / 64 + 1, p
    assert histogram.max == values[-1]
    assert histogram.min == values[0]
    assert histogram.count == len(values)
    assert histogram.mean == pytest.approx(sum(values) / len(values))


def test_histogram_memory_is_bounded_by_range_not_count() -> None:
    histogram = Histogram()
    for value in range(0, 3_600_000_000, 997_001):  # up to an hour in microseconds
        histogram.record(value)
    assert len(histogram._counts) < 2200


def test_histogram_small_values_exact_counts_and_merge() -> None:
    a = Histogram()
    a.record(5, count=99)
    a.record(100)
    b = Histogram()
    b.record(1_000_000)
    a.merge(b)
    assert a.percentile(50) == 5
    assert a.percentile(98) == 5
    assert a.percentile(99) == 100  # rank ceil(101 * 0.99) = 100: the 100th value
    assert a.max == 1_000_000
    assert a.count == 101
    assert a.summary_ms()["max"] == 1000.0
    assert Histogram().percentile(50) == 0.0
    negative = Histogram()
    negative.record(-3)
    assert negative.min == 0


# ---------------------------------------------------------------- frame counter

FRAMES = st.sampled_from(
    [
        b"data: x\n\n",
        b": heartbeat\n\n",
        b":\n\n",
        b'data: {"error":{"message":"m"}}\n\n',
        b"event: error\ndata: {}\n\n",
        b"id: 3\nevent: tick\ndata: a\ndata: b\n\n",
        b"data: [DONE]\n\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(FRAMES, min_size=1, max_size=12),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=9), max_size=40),
)
def test_frame_counter_agrees_with_the_parser(
    frames: list[bytes], crlf: bool, cuts: list[int]
) -> None:
    stream = b"".join(frames)
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    counter = FrameCounter()
    returned_events = returned_comments = 0
    i = 0
    for cut in [*cuts, len(stream)]:
        events, comments = counter.feed(stream[i : i + cut])
        returned_events += events
        returned_comments += comments
        i += cut
        if i >= len(stream):
            break
    parsed = EventParser().feed(stream)
    comment_frames = sum(frame.startswith(b":") for frame in frames)
    assert counter.events == len(parsed) == returned_events
    assert counter.comments == comment_frames == returned_comments
    assert counter.error_frames == sum(b"error" in frame for frame in frames)
    assert counter.ends_with(b"[DONE]") == (frames[-1] == b"data: [DONE]\n\n")


# ---------------------------------------------------------------- de-chunking and counting


def _realistic_frames() -> list[bytes]:
    """A chat stream with what a counter must tell apart: a role frame, tokens, a heartbeat,
    an in-band error, a multi-line frame, the finish and ``[DONE]``."""
    return [
        chat_chunk(""),
        *(chat_chunk(f"tok{i} ") for i in range(12)),
        b": keep-alive\n\n",
        ERROR_FRAME,
        b"id: 7\nevent: error\ndata: {}\n\n",
        chat_chunk("last"),
        DONE_FRAME,
    ]


def _chunked(payload: bytes, sizes: list[int]) -> bytes:
    """``payload`` cut into chunks of ``sizes`` (cycled), framed, with the last chunk."""
    wire = b""
    i = k = 0
    while i < len(payload):
        size = sizes[k % len(sizes)]
        wire += chunk(payload[i : i + size])
        i += size
        k += 1
    return wire + LAST_CHUNK


# One frame per chunk (as most servers write), and chunk sizes that cut frames and separators.
CHUNKINGS = {
    "frame per chunk": None,
    "odd sizes": [1, 7, 230, 3, 500, 2, 64],
    "one chunk": [1 << 20],
}


def _decode_and_count(wire: bytes, cuts: list[int]) -> tuple[bytes, FrameCounter, ChunkedBody]:
    decoder = ChunkedBody()
    counter = FrameCounter()
    payload = b""
    start = 0
    for end in [*cuts, len(wire)]:
        piece = decoder.feed(wire[start:end])
        if piece:
            counter.feed(piece)
        payload += piece
        start = end
    return payload, counter, decoder


def _realistic_wire(chunking: str) -> tuple[bytes, bytes]:
    """The realistic frames' payload and that payload chunk-framed as ``chunking`` says
    (one chunk per frame when its sizes are None)."""
    frames = _realistic_frames()
    payload = b"".join(frames)
    sizes = CHUNKINGS[chunking]
    if sizes is None:
        return payload, b"".join(chunk(frame) for frame in frames) + LAST_CHUNK
    return payload, _chunked(payload, sizes)


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_every_split_point_of_a_realistic_body_counts_the_same(chunking: str) -> None:
    payload, wire = _realistic_wire(chunking)
    events = len(EventParser().feed(payload))
    for cut in range(len(wire) + 1):  # two reads, cut at every byte
        decoded, counter, decoder = _decode_and_count(wire, [cut])
        assert decoded == payload, cut
        assert decoder.done and decoder.unused == b"", cut
        assert (counter.events, counter.comments, counter.error_frames) == (events, 1, 2), cut
        assert counter.ends_with(b"[DONE]"), cut
    rng = random.Random(6)
    for _ in range(300):  # many reads, cut anywhere
        cuts = sorted(rng.sample(range(1, len(wire)), 12))
        decoded, counter, _ = _decode_and_count(wire, cuts)
        assert decoded == payload, cuts
        assert (counter.events, counter.comments, counter.error_frames) == (events, 1, 2), cuts


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(
        st.binary(min_size=1, max_size=300)
        | st.sampled_from([b"\r\n", b"\r\n1a\r\n", b"\n\n\r\n5\r\n", b"data: x\n\n"]),
        max_size=40,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=6),
)
def test_bulk_dechunking_matches_h11(pieces: list[bytes], cuts: list[int]) -> None:
    # Reads large enough for the bulk split (and the one-pass frame split), chunk data that
    # holds boundary look-alikes; h11 frames the body, as a server would.
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    server.next_event()
    server.send(h11.Response(status_code=200, headers=[]))
    wire = b"".join(server.send(h11.Data(data=piece)) or b"" for piece in pieces)
    wire += server.send(h11.EndOfMessage()) or b""
    points = sorted({min(cut, len(wire)) for cut in cuts})
    decoded, _, decoder = _decode_and_count(wire, points)
    assert decoded == b"".join(pieces)
    assert decoder.done and decoder.unused == b""
    if all(piece.endswith(b"\n\n") and b"\n" not in piece[:-2] for piece in pieces):
        decoded, _, _ = _fused_then_general(wire, points)
        assert decoded == b"".join(pieces)


def test_chunk_boundary_look_alikes_in_the_data_are_data() -> None:
    # Data holding what looks like a chunk boundary ("\r\n1a\r\n") makes the bulk cut's
    # lengths disagree: the decoder then goes chunk by chunk and still gets it right.
    frames = [b"data: a\r\n1a\r\nb\r\n\r\n", b"data: c\r\n\r\n"] * 20
    payload = b"".join(frames)
    wire = b"".join(chunk(frame) for frame in frames) + LAST_CHUNK
    for cut in range(len(wire) + 1):
        decoded, counter, decoder = _decode_and_count(wire, [cut])
        assert decoded == payload and decoder.done, cut
        assert counter.events == 40, cut
    # Upper-case hex, leading zeros and extensions: valid, taken by the general steps.
    odd = b"0A\r\ndata: xx\n\n\r\n00a;x=1\r\ndata: yy\n\n\r\nA\r\ndata: zz\n\n\r\n0\r\n\r\n"
    decoded, counter, decoder = _decode_and_count(odd, [])
    assert decoded == b"data: xx\n\ndata: yy\n\ndata: zz\n\n" and decoder.done
    assert counter.events == 3


def _fused_then_general(wire: bytes, cuts: list[int]) -> tuple[bytes, FrameCounter, int]:
    """Decode and count as bench does: ``frame_chunks`` first when it can, then the rest."""
    decoder = ChunkedBody()
    counter = FrameCounter()
    payload = b""
    fused = 0
    start = 0
    ended = False
    for end in [*cuts, len(wire)]:
        data = wire[start:end]
        start = end
        assert not (ended and data)  # the last chunk ends the wire
        if decoder.at_chunk_start and counter.at_frame_start:
            taken = frame_chunks(data)
            if taken is not None:
                lines, used, size, ended = taken
                assert used == len(data) or not ended
                counter.add_frames(lines)
                joined = b"\n\n".join(lines) + b"\n\n"
                assert len(joined) == size
                payload += joined
                fused += len(lines)
                data = data[used:]
        piece = decoder.feed(data) if data else b""
        if piece:
            counter.feed(piece)
        payload += piece
    assert ended or (decoder.done and decoder.unused == b"")
    return payload, counter, fused


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_one_pass_frame_chunks_count_as_the_two_passes(chunking: str) -> None:
    payload, wire = _realistic_wire(chunking)
    expected = (len(EventParser().feed(payload)), 1, 2)
    taken = 0
    for cut in range(len(wire) + 1):
        decoded, counter, fused = _fused_then_general(wire, [cut])
        assert decoded == payload, cut
        assert (counter.events, counter.comments, counter.error_frames) == expected, cut
        assert counter.ends_with(b"[DONE]"), cut
        taken += fused
    # Frame per chunk: the one-line frames are taken in one pass (the multi-line one is not).
    assert (taken > 0) == (CHUNKINGS[chunking] is None)


ONE_LINE_FRAMES = st.sampled_from(
    [
        chat_chunk("a")[:-2],
        chat_chunk("bb")[:-2],
        b'data: {"choices":[]}',
        b'data: {"error":{"message":"m"}}',
        b'data:{"error":1}',
        b"event: error",
        b": keep-alive",
        b":",
        b"data: [DONE]",
    ]
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(ONE_LINE_FRAMES, min_size=1, max_size=12), before=st.booleans())
def test_add_frames_counts_as_feed(lines: list[bytes], before: bool) -> None:
    fast = FrameCounter()
    slow = FrameCounter()
    if before:  # a frame already counted the usual way
        fast.feed(b"data: x\n\n")
        slow.feed(b"data: x\n\n")
    assert fast.at_frame_start
    returned = fast.add_frames(lines)
    assert returned == slow.feed(b"".join(line + b"\n\n" for line in lines))
    assert (fast.events, fast.comments, fast.error_frames) == (
        slow.events,
        slow.comments,
        slow.error_frames,
    )
    assert fast.ends_with(b"[DONE]") == slow.ends_with(b"[DONE]")
    assert fast.at_frame_start


def test_frame_chunks_refuses_what_is_not_one_line_per_chunk() -> None:
    lines = [b"data: %d" % i for i in range(5)]
    wire = b"".join(chunk(line + b"\n\n") for line in lines) + LAST_CHUNK
    taken = frame_chunks(wire)
    assert taken is not None
    assert taken[0] == lines and taken[1:] == (len(wire), len(b"".join(lines)) + 10, True)
    # the last chunk with a trailer, or bytes after it: left to the decoder
    for end in (b"0\r\nx: 1\r\n\r\n", LAST_CHUNK + b"HTTP/1.1"):
        body = wire[: -len(LAST_CHUNK)] + end
        taken = frame_chunks(body)
        assert taken is not None
        assert taken[0] == lines and body[taken[1] :] == end and not taken[3]
    # an offset: the body after its head, in the same read
    taken = frame_chunks(b"HEAD\r\n\r\n" + wire, 8)
    assert taken is not None and taken[0] == lines and taken[1] == len(wire) + 8
    two_lines = chunk(b"event: x\ndata: 1\n\n") * 3 + LAST_CHUNK
    cr_lines = chunk(b"data: 1\r\n\r\n") * 3 + LAST_CHUNK
    blank = chunk(b"\n\n") * 3 + LAST_CHUNK
    wrong_size = b"8\r\ndata: 1\n\n\r\n" * 3 + LAST_CHUNK  # one byte short each
    extension = b"9;x\r\ndata: 1\n\n\r\n" * 3 + LAST_CHUNK
    for body in (two_lines, cr_lines, blank, wrong_size, extension):
        assert frame_chunks(body) is None, body


@pytest.mark.anyio
async def test_a_stalled_stream_times_out_and_the_rest_go_on(anyio_backend: str) -> None:
    served = 0

    async def stalls_once(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        # the first stream sends its head and one event, then nothing; the others finish
        nonlocal served
        served += 1
        first = served == 1  # read before any await: the other handlers run meanwhile
        await s.send(sse_head() + chunk(chat_chunk("a")))
        if first:
            await anyio.sleep(5)
            return
        await s.send(chunk(DONE_FRAME) + LAST_CHUNK)

    async with raw_server(stalls_once) as server:
        config = BenchConfig(
            Target.from_url(server.url("/events")),
            method="GET",
            streams=2,
            requests=6,
            read_timeout_s=0.4,
            terminal="[DONE]",
        )
        state = BenchState()
        with anyio.fail_after(4):
            await run_bench(config, state)
    assert state.errors["timeout"] == 1, state.error_samples
    assert state.error_samples["timeout"] == "no data for 0.4 s"
    assert state.completed == 5
    assert state.error_count == 1
    timed_out_ms = state.stream_us.max / 1000
    assert 400 <= timed_out_ms < 1500  # checked every quarter of the timeout


@pytest.mark.anyio
async def test_bench_counts_the_same_whatever_the_reads(anyio_backend: str) -> None:
    # The server writes each response in pieces cut at varying points (a size line, a CRLF,
    # a separator split across writes), pausing between them so that bench reads them apart.
    frames = [*_realistic_frames()[:-4], chat_chunk("last"), DONE_FRAME]  # no error frames
    wire = b"".join(chunk(frame) for frame in frames) + LAST_CHUNK
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    cuts = iter(range(1, 400, 7))

    async def pieces(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        buf = b""
        while True:
            cut = next(cuts)
            await s.send(head + wire[:cut])
            await anyio.sleep(0.005)
            await s.send(wire[cut : cut + 5])  # a few bytes alone: a size line, a seam
            await anyio.sleep(0.005)
            await s.send(wire[cut + 5 :])
            try:
                while b"\r\n\r\n" not in buf:
                    buf += await s.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            buf = buf.partition(b"\r\n\r\n")[2]

    async with raw_server(pieces) as server:
        config = BenchConfig(
            Target.from_url(server.url("/events")),
            method="GET",
            streams=2,
            requests=20,
            terminal="[DONE]",
        )
        state = BenchState()
        await run_bench(config, state)
    assert state.errors == dict.fromkeys(state.errors, 0), state.error_samples
    assert state.completed == 20
    assert state.events == 20 * (len(frames) - 1)  # the heartbeat is a comment
    assert state.comments == 20
    assert state.gap_us.count == 20 * (len(frames) - 2)
    assert state.first_event_us.count == 20


# ---------------------------------------------------------------- the command


def _result(stdout: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout)
    return result


async def _bench(
    *args: str, backend: str, timeout_s: float = 30.0
) -> tuple[int, dict[str, Any], bytes]:
    done = await run_rawsse("bench", *args, "--json", "--backend", backend, timeout_s=timeout_s)
    return done.returncode, _result(done.stdout) if done.stdout else {}, done.stderr


@pytest.mark.anyio
async def test_counts_every_kind_of_failure_exactly(anyio_backend: str) -> None:
    async with raw_server(misbehaving_chat) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, result, stderr = await _bench(
            base, "--requests", "20", "--streams", "4", backend=anyio_backend
        )
    assert status == 0, stderr
    per_kind = 20 // len(MISBEHAVIOURS)
    assert result["requests"] == 20
    assert result["completed"] == per_kind
    assert result["errors"] == 20 - per_kind
    kinds = result["error_kinds"]
    for kind in ("status", "in_band", "truncated", "disconnect"):
        assert kinds[kind] == per_kind, (kind, result["error_samples"])
    assert kinds["connect"] == kinds["protocol"] == kinds["timeout"] == 0
    assert result["statuses"] == {"200": 16, "503": 4}
    assert "503" in result["error_samples"]["status"]
    # events: ok 3 + [DONE], in_band 3 (chunk, error, [DONE]), truncated 2, disconnect 1
    assert result["events"] == per_kind * (4 + 3 + 2 + 1)
    assert all(request.path == "/v1/chat/completions" for request in server.requests)
    body = server.requests[0].json()
    assert body["model"] == "lorem"
    assert body["max_tokens"] == 16
    assert body["stream"] is True
    for key in ("ttfb_ms", "headers_ms", "first_event_ms", "gap_ms"):
        assert set(result[key]) >= {"p50", "p90", "p99", "max"}
    assert result["ttfb_ms"]["count"] == 20
    assert result["first_event_ms"]["count"] == 16


@pytest.mark.anyio
async def test_connection_failures_are_counted_not_fatal(anyio_backend: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    status, result, _ = await _bench(
        url, "--requests", "6", "--streams", "2", backend=anyio_backend
    )
    assert status == 1  # nothing completed
    assert result["completed"] == 0
    assert result["errors"] == result["error_kinds"]["connect"] == 6
    assert "connect" in result["error_samples"]["connect"]


async def _slow_ok(request: RawRequest, s: anyio.abc.SocketStream) -> None:
    await anyio.sleep(0.1)
    await s.send(sse_head() + chunk(chat_chunk("a")) + chunk(DONE_FRAME) + LAST_CHUNK)


@pytest.mark.anyio
async def test_open_loop_measures_from_the_schedule(anyio_backend: str) -> None:
    # 10 arrivals 20 ms apart, 2 in flight, 100 ms each: the server is too slow, so later
    # requests start late, and their latency must include the wait (no coordinated omission).
    async with raw_server(_slow_ok) as server:
        base = f"http://127.0.0.1:{server.port}"
        common = ("--requests", "10", "--streams", "2")
        _, open_loop, _ = await _bench(base, *common, "--rate", "50", backend=anyio_backend)
        _, closed, _ = await _bench(base, *common, backend=anyio_backend)
    assert open_loop["mode"] == "open-loop"
    assert open_loop["completed"] == closed["completed"] == 10
    # the last arrival was due at 180 ms and could start only at ~500 ms
    assert open_loop["ttfb_ms"]["max"] > closed["ttfb_ms"]["max"] + 150
    assert open_loop["ttfb_ms"]["p50"] > closed["ttfb_ms"]["p50"] + 50


@pytest.mark.anyio
async def test_hold_counts_heartbeats_and_their_jitter(anyio_backend: str) -> None:
    async def heartbeats(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + chunk(b"data: hello\n\n"))
        for _ in range(200):
            await anyio.sleep(0.05)
            await s.send(chunk(b": ping\n\n"))

    async with raw_server(heartbeats) as server:
        status, result, stderr = await _bench(
            server.url("/idle"), "--hold", "0.6", "--streams", "5", backend=anyio_backend
        )
    assert status == 0, stderr
    assert result["mode"] == "hold"
    assert result["completed"] == 5
    assert result["errors"] == 0
    assert result["peak_streams"] == 5
    assert result["events"] == 5
    assert 5 * 5 <= result["heartbeats"] <= 5 * 13
    assert 40 <= result["heartbeat_gap_ms"]["p50"] <= 150
    assert result["heartbeat_jitter_ms"] >= 0
    assert all(request.method == "GET" for request in server.requests)


@pytest.mark.anyio
async def test_check_mode_and_duration(anyio_backend: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        bad = request.index % 2 == 1
        first = b"data: not json\n\n" if bad else chat_chunk("a")
        await s.send(sse_head() + chunk(first) + chunk(DONE_FRAME) + LAST_CHUNK)

    async with raw_server(handler) as server:
        url = server.url("/stream")  # not a chat path: GET, data checked as JSON only
        chat = server.url("/v1/chat/completions")
        common = ("--requests", "10", "--streams", "2")
        _, checked, _ = await _bench(url, *common, "--check", backend=anyio_backend)
        _, unchecked, _ = await _bench(url, *common, backend=anyio_backend)
        _, grammar, _ = await _bench(chat, *common, "--check", backend=anyio_backend)
        _, timed, _ = await _bench(
            url, "--duration", "0.5", "--streams", "2", backend=anyio_backend
        )
    assert checked["errors"] == checked["error_kinds"]["check"] == 5
    assert "not JSON" in checked["error_samples"]["check"]
    assert checked["events"] == 20
    assert unchecked["errors"] == 0  # the fast path does not look inside the data
    # on a chat path --check also applies the OpenAI grammar: these chunks lack "created"
    assert grammar["error_kinds"]["check"] == 10
    assert "created" in grammar["error_samples"]["check"]
    assert 0.45 <= timed["duration_s"] < 2.0
    assert timed["completed"] >= 10
    assert timed["errors"] == 0


@pytest.mark.anyio
async def test_keepalive_reuses_connections(anyio_backend: str) -> None:
    async def keepalive(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        # answers every request on this connection, in turn, with keep-alive framing
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        body = chunk(b"data: x\n\n") + LAST_CHUNK
        await s.send(head + body)
        served = 1
        buf = b""
        while served < 50:
            try:
                buf += await s.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            while b"\r\n\r\n" in buf:
                _, _, buf = buf.partition(b"\r\n\r\n")
                await s.send(head + body)
                served += 1

    async def closes_anyway(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        # keep-alive framing, then the connection closes (an idle timeout, say)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        await s.send(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: x\n\n"))
        await s.send(LAST_CHUNK)

    async with raw_server(keepalive) as server:
        status, result, stderr = await _bench(
            server.url("/events"), "--requests", "30", "--streams", "3", backend=anyio_backend
        )
    assert status == 0, stderr
    assert result["completed"] == 30
    assert result["connect_ms"]["count"] == 3  # one connection per stream, reused
    assert result["retries"] == 0
    assert len(server.requests) == 3
    async with raw_server(closes_anyway) as server:
        status, result, stderr = await _bench(
            server.url("/events"), "--requests", "10", "--streams", "1", backend=anyio_backend
        )
    assert status == 0, stderr
    assert result["completed"] == 10
    assert result["errors"] == 0
    # each reuse found the connection dead before any answer: sent again, counted apart
    assert result["retries"] == 9
    assert result["connect_ms"]["count"] == 10


@pytest.mark.anyio
async def test_table_output_and_bad_options(anyio_backend: str) -> None:
    async def handler(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(plain_response("200 OK", "text/plain", b"not a stream"))

    async with raw_server(handler) as server:
        done = await run_rawsse(
            "bench", server.url("/x"), "--requests", "3", "--streams", "1",
            "--backend", anyio_backend,
        )  # fmt: skip
    assert done.returncode == 1
    text = done.stdout.decode()
    assert "completed 0" in text
    assert "content_type 3" in text
    assert "first byte" in text
    bad = await run_rawsse("bench", "http://127.0.0.1:1/", "--requests", "1", "--duration", "1")
    assert bad.returncode == 2
    assert b"at most one" in bad.stderr


# ---------------------------------------------------------------- against `rawsse serve`


@pytest.mark.anyio
async def test_embedded_default_server_checked(anyio_backend: str) -> None:
    # no URL: bench starts `rawsse serve` itself, benchmarks it, and stops it
    status, result, stderr = await _bench(
        "--requests", "40", "--streams", "4", "--max-tokens", "5", "--check",
        backend=anyio_backend,
    )  # fmt: skip
    assert status == 0, stderr
    assert result["url"].startswith("http://127.0.0.1:")
    assert result["url"].endswith("/v1/chat/completions")
    assert result["completed"] == 40
    assert result["errors"] == 0
    # role chunk, 5 tokens, finish chunk, [DONE]
    assert result["events"] == 40 * 8
    assert result["first_event_ms"]["count"] == 40
    assert result["events_per_s"] > 0


@pytest.mark.anyio
async def test_rawsse_url_pace_and_anthropic(anyio_backend: str) -> None:
    with rawsse_server("--token-delay", "0.01") as url:
        _, openai, _ = await _bench(
            url, "--requests", "8", "--streams", "4", "--max-tokens", "6",
            backend=anyio_backend,
        )  # fmt: skip
        _, anthropic, _ = await _bench(
            url, "--path", "/v1/messages", "--requests", "8", "--streams", "4",
            "--max-tokens", "3", "--check", backend=anyio_backend,
        )  # fmt: skip
    assert openai["completed"] == 8, openai["error_samples"]
    # tokens come one per 10 ms after the first: the gaps between events show it
    assert 7 <= openai["gap_ms"]["p90"] <= 150
    assert openai["first_event_ms"]["p50"] < openai["stream_ms"]["p50"]
    assert anthropic["completed"] == 8, anthropic["error_samples"]
    assert anthropic["errors"] == 0


@pytest.mark.anyio
async def test_every_chat_route_of_the_demo_app_gets_a_request_in_its_format(
    anyio_backend: str,
) -> None:
    """Gemini's, ChatGPT-web's and the envelope's routes are benchmarked with a request body
    they take (not a bodiless GET, which every route refuses with 405)."""
    paths = {
        "/v1beta/models/lorem:streamGenerateContent?alt=sse": 3 + 1,  # a chunk a token, the end
        "/v1/envelope/completions": 1 + 3 + 1,  # meta, a frame a token, done
        "/backend-api/conversation": 2 + 3 + 3,  # encoding, add, tokens, patch, complete, DONE
    }
    options = ("--requests", "2", "--streams", "2", "--max-tokens", "3")
    results = {}
    with rawsse_server("--token-delay", "0") as url:
        for path in paths:
            _, results[path], _ = await _bench(url + path, *options, backend=anyio_backend)
    for path, events in paths.items():
        assert results[path]["completed"] == 2, (path, results[path]["error_samples"])
        assert results[path]["events"] == 2 * events, path


@pytest.mark.anyio
async def test_default_backend_is_uvloop_when_installed() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    done = await run_rawsse("bench", url, "--requests", "1", "--json")
    expected = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    assert _result(done.stdout)["backend"] == expected


@pytest.mark.anyio
async def test_progress_line_on_a_terminal_and_many_streams(anyio_backend: str) -> None:
    # stderr is a pseudo-terminal, as when a person runs bench: the progress line is redrawn
    # there (carriage return, clear line), the table goes to stdout. 1,000 streams held open
    # at once from one process, ramped up over 0.5 s.
    async def idle(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await s.send(sse_head() + chunk(b"data: hi\n\n"))
        await anyio.sleep(10)

    controller, terminal = pty.openpty()
    try:
        async with raw_server(idle) as server:
            command = rawsse_command(
                "bench", server.url("/idle"), "--streams", "1000", "--hold", "3",
                "--ramp-s", "0.5", "--backend", anyio_backend,
            )  # fmt: skip
            with anyio.fail_after(30):
                done = await anyio.run_process(command, stderr=terminal, check=False, cwd=REPO_ROOT)
        shown = b""
        while select.select([controller], [], [], 0)[0]:
            shown += os.read(controller, 65536)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 0, done.stdout
    assert b"\r\x1b[K[" in shown
    assert b"active" in shown
    text = done.stdout.decode()
    assert "completed 1,000" in text
    assert "errors 0" in text
    assert "peak streams 1,000" in text


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.anyio
async def test_ten_thousand_streams_from_one_process(
    anyio_backend: str, request: pytest.FixtureRequest
) -> None:
    # The scale the load generator promises: 10,000 concurrent streams from one process
    # (RLIMIT_NOFILE raised, connections ramped up), all held open. The server is a bare
    # asyncio one in its own process, so what is measured is the load generator.
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a scale test (about 20 s, both cores): run it with -m slow")
    if anyio_backend != "asyncio":
        pytest.skip("one backend is enough for the scale test; both run the same code")
    with idle_server() as url:
        status, result, stderr = await _bench(
            url + "/idle", "--streams", "10000", "--hold", "8", "--ramp-s", "5",
            backend="auto", timeout_s=120,
        )  # fmt: skip
    assert status == 0, stderr
    assert result["peak_streams"] == 10_000
    assert result["errors"] == 0, result["error_samples"]
    assert result["completed"] == 10_000
    assert result["events"] == 10_000
    assert result["heartbeats"] >= 10_000  # at least one each, a second apart


def _streams_total(url: str) -> int:
    """``rawsse_streams_total`` from a rawsse server's /metrics (0 while it cannot answer)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as page:
            text = page.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("rawsse_streams_total "):
            return int(float(line.split()[1]))
    return 0


@pytest.mark.anyio
async def test_ctrl_c_reports_what_completed_so_far(anyio_backend: str) -> None:
    # Interrupted once the server has seen a third stream start: with two concurrent streams,
    # at least one has completed by then, so the report must count it.
    with rawsse_server("--backend", anyio_backend, "--token-delay", "0.01") as url:
        command = rawsse_command(
            "bench", url + "/v1/chat/completions", "--duration", "30", "--streams", "2",
            "--json", "--backend", anyio_backend,
        )  # fmt: skip
        async with await anyio.open_process(command, cwd=REPO_ROOT) as process:
            await wait_for(lambda: _streams_total(url) >= 3, 20, what="bench to complete a stream")
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(15):
                await process.wait()
            assert process.stdout is not None
            stdout = b"".join([chunk async for chunk in process.stdout])
    assert process.returncode == 130
    result = _result(stdout)
    assert result["interrupted"] is True
    assert result["completed"] > 0
    assert result["duration_s"] < 25


def _child_pids(pid: int) -> list[int]:
    try:
        return [
            int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def _listening_port(pid: int) -> int | None:
    """The TCP port process ``pid`` listens on (from /proc), or None while it listens on none."""
    try:
        inodes = {
            link.readlink().name[len("socket:[") : -1]
            for link in pathlib.Path(f"/proc/{pid}/fd").iterdir()
            if link.readlink().name.startswith("socket:[")
        }
        table = pathlib.Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in table:
        fields = row.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            return int(fields[1].split(":")[1], 16)
    return None


@pytest.mark.anyio
async def test_ctrl_c_stops_the_started_server(anyio_backend: str) -> None:
    # With no URL, bench starts its own server; Ctrl-C once streams run stops bench, reports,
    # and stops that server.
    command = rawsse_command(
        "bench", "--duration", "30", "--streams", "2", "--json", "--backend", anyio_backend
    )
    async with await anyio.open_process(command, cwd=REPO_ROOT) as process:
        ports: list[int] = []

        def streams_running() -> bool:
            if not ports:
                port = next(filter(None, map(_listening_port, _child_pids(process.pid))), None)
                ports.extend([port] if port else [])
            return bool(ports) and _streams_total(f"http://127.0.0.1:{ports[0]}") >= 1

        await wait_for(streams_running, 20, what="bench to start its server and streams")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            await process.wait()
        assert process.stdout is not None
        stdout = b"".join([chunk async for chunk in process.stdout])
    assert process.returncode == 130
    result = _result(stdout)
    assert result["interrupted"] is True
    assert result["url"].startswith(f"http://127.0.0.1:{ports[0]}/")
    # the server bench started is gone: its port refuses connections
    with pytest.raises(ConnectionRefusedError):
        await connect_ip("127.0.0.1", ports[0])


@pytest.mark.anyio
async def test_ctrl_c_while_bench_starts_its_server_is_quiet(anyio_backend: str) -> None:
    command = rawsse_command("bench", "--duration", "30", "--backend", anyio_backend)
    async with await anyio.open_process(command, cwd=REPO_ROOT) as process:
        await wait_for(lambda: _child_pids(process.pid), 20, what="bench to start its server")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            await process.wait()
        assert process.stderr is not None
        stderr = b"".join([chunk async for chunk in process.stderr])
    assert process.returncode == 130
    assert b"Traceback" not in stderr


@pytest.mark.anyio
async def test_a_stream_whose_turn_comes_after_the_hold_says_so(anyio_backend: str) -> None:
    # A ramp that falls behind (an overloaded load generator) starts streams after the hold
    # has ended: they count as connect errors that say why (not "timed out after -0.02 s").
    async def idle(request: RawRequest, s: anyio.abc.SocketStream) -> None:
        await anyio.sleep(5)

    async with raw_server(idle) as server:
        config = BenchConfig(
            Target.from_url(server.url("/idle")), method="GET", streams=3, hold_s=1e-9
        )
        state = BenchState()
        with anyio.fail_after(5):
            await run_bench(config, state)
    assert state.errors["connect"] == 3
    assert state.error_samples["connect"] == "the hold ended before this stream could connect"
