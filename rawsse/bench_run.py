"""The load generator's engine: many concurrent SSE streams on anyio, measured at the wire.

Contract: ``run_bench(config, state)`` drives the workload ``config`` describes and fills
``state`` (a ``BenchState``) as it goes, so a progress display can read it live. It returns when
the workload is done; it never raises for a failed stream, it counts it by kind:

- ``connect``: the TCP connection failed or took over ``connect_timeout_s``;
- ``status`` / ``content_type``: not 200, or not ``text/event-stream``;
- ``protocol``: a malformed response head or chunked framing;
- ``timeout``: no bytes for ``read_timeout_s`` (noticed within a quarter of it more);
- ``disconnect``: the connection closed or reset before the body ended;
- ``in_band``: the stream carried an error frame (``data: {"error"...``, ``event: error``);
- ``truncated``: the body ended without the terminal frame (``[DONE]``, ``message_stop``);
- ``check``: with ``check`` on, an event whose data is not JSON, or a grammar violation.

Workloads: a fixed number of ``streams`` (workers), each running requests back to back until
``requests`` have started or ``duration_s`` has passed; or, with ``rate``, an open loop: request
``k`` is *scheduled* at ``t0 + k / rate`` and every latency is measured from that scheduled time,
so a slow server cannot hide its latency by slowing the load (no coordinated omission; at most
``streams`` are in flight). ``hold_s`` instead opens ``streams`` streams once and holds them all
open until ``hold_s`` after the last one's start, counting heartbeats (comment frames).
Connections ramp up over ``ramp_s``; idle keep-alive connections are reused, and a request whose
reused connection dies before answering a byte goes again on a fresh one (as connection pools
do), counted in ``retries`` rather than as an error.

Per stream, latencies are measured from its reference time: time to the first response byte
(``ttfb``), to the complete head (``headers``), to the first event (``first_event``), and the gaps
between events as the client sees them (events that arrive in one read have a gap of 0).
The per-read work is ``frame_chunks``, which de-chunks and counts in one pass the chunks of one
single-line frame each (most servers' events), then the lean chunked decoder and
``FrameCounter`` for what is left: no per-event parsing unless ``check`` is on.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from rawsse.bench_chunks import frame_chunks
from rawsse.bench_frames import FrameCounter
from rawsse.bench_io import Readiness, send_all
from rawsse.bench_stats import Histogram
from rawsse.client_body import ChunkedBody, CloseBody
from rawsse.client_conn import open_socket
from rawsse.client_errors import SSEConnectionError, SSEProtocolError
from rawsse.client_http import Exchange, PreparedRequest, ResponseHead, Target
from rawsse.jsonio import JSONDecodeError, loads
from rawsse.parser import EventParser, EventTooLarge
from rawsse.sse import Event

if TYPE_CHECKING:
    from rawsse.chat.grammar import AnthropicGrammar, OpenAIGrammar

__all__ = ["ERROR_KINDS", "BenchConfig", "BenchState", "run_bench"]

ERROR_KINDS = (
    "connect",
    "status",
    "content_type",
    "protocol",
    "timeout",
    "disconnect",
    "in_band",
    "truncated",
    "check",
)
# One read takes what the kernel holds, up to this (256 KiB measured no better: its buffer
# comes from mmap each time).
_RECV_BYTES = 64 * 1024
# Reads in a row made without waiting (the last one filled the buffer, so more was likely
# queued) before the stream waits anyway, which lets the other streams run.
_EAGER_READS = 4


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run: the request, the concurrency and the stopping rule."""

    target: Target
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    streams: int = 64
    requests: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    hold_s: float | None = None
    ramp_s: float = 0.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    # After ``duration_s``, streams in flight get this long to finish before being cancelled.
    grace_s: float = 10.0
    # The terminal frame's data (``[DONE]``) or event type (``message_stop``); None: any end.
    terminal: str | None = None
    check: bool = False
    # With ``check``: the chat grammar to validate against ("openai", "anthropic") or None.
    dialect: str | None = None
    keepalive: bool = True

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ValueError("streams must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.hold_s is None and self.requests is None and self.duration_s is None:
            raise ValueError("give requests, duration_s or hold_s")


@dataclass
class BenchState:
    """Live and final results; every latency histogram is in microseconds."""

    started: int = 0
    completed: int = 0
    cancelled: int = 0
    retries: int = 0  # requests sent again after a keep-alive connection died unanswered
    active: int = 0
    peak_active: int = 0
    events: int = 0
    comments: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    error_samples: dict[str, str] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    connect_us: Histogram = field(default_factory=Histogram)
    ttfb_us: Histogram = field(default_factory=Histogram)
    headers_us: Histogram = field(default_factory=Histogram)
    first_event_us: Histogram = field(default_factory=Histogram)
    gap_us: Histogram = field(default_factory=Histogram)
    heartbeat_gap_us: Histogram = field(default_factory=Histogram)
    stream_us: Histogram = field(default_factory=Histogram)
    t_start: float = 0.0
    t_end: float = 0.0
    # The load generator's own CPU time during the run (``time.process_time``): events per CPU
    # second is its cost, whatever else the machine was doing.
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    @property
    def error_count(self) -> int:
        """All failed streams, whatever the kind."""
        return sum(self.errors.values())

    @property
    def cpu_s(self) -> float:
        """CPU seconds the load generator used from the start of the run to its end (or now)."""
        end = self.cpu_end or time.process_time()
        return max(end - self.cpu_start, 0.0) if self.t_start else 0.0

    @property
    def elapsed_s(self) -> float:
        """Seconds from the start of the run to its end (or to now while it runs)."""
        end = self.t_end or time.perf_counter()
        return max(end - self.t_start, 1e-9) if self.t_start else 0.0

    def fail(self, kind: str, detail: str) -> None:
        """Count a failed stream of ``kind``; keep the first detail of each kind."""
        self.errors[kind] += 1
        self.error_samples.setdefault(kind, detail)


class _Failed(Exception):
    """One stream failed; ``kind`` is one of ``ERROR_KINDS``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class _Checker:
    """``check`` mode: parse every event, verify its data is JSON and, for a chat dialect,
    that the stream follows its grammar (``rawsse.chat.grammar``)."""

    __slots__ = ("events", "failure", "grammar", "in_band", "last", "parser")

    def __init__(self, dialect: str | None) -> None:
        self.parser = EventParser()
        self.events = 0
        self.in_band = 0
        self.last: tuple[str, str] | None = None  # (event type, data) of the last event
        self.failure = ""
        self.grammar: OpenAIGrammar | AnthropicGrammar | None = None
        if dialect is not None:
            from rawsse.chat.grammar import AnthropicGrammar, OpenAIGrammar

            self.grammar = OpenAIGrammar() if dialect == "openai" else AnthropicGrammar()

    def feed(self, payload: bytes) -> None:
        try:
            events = self.parser.feed(payload)
        except EventTooLarge as exc:
            self.failure = self.failure or str(exc)
            return
        for event in events:
            self.events += 1
            self.last = (event.event, event.data)
            self._check_grammar(event)
            if event.event == "error":
                self.in_band += 1
                continue
            if event.data == "[DONE]":
                continue
            try:
                value = loads(event.data)
            except JSONDecodeError:
                self.failure = self.failure or f"event data is not JSON: {event.data[:80]!r}"
                continue
            if isinstance(value, dict) and "error" in value:
                self.in_band += 1

    def _check_grammar(self, event: Event) -> None:
        if self.grammar is None or self.failure:
            return
        from rawsse.chat.grammar import GrammarError

        try:
            self.grammar.feed(event)
        except GrammarError as exc:
            self.failure = str(exc)

    def finish(self) -> None:
        """The stream ended: the grammar's end-of-stream rules."""
        if self.grammar is None or self.failure:
            return
        from rawsse.chat.grammar import GrammarError

        try:
            self.grammar.end()
        except GrammarError as exc:
            self.failure = str(exc)

    def ends_with(self, marker: str) -> bool:
        """Whether the last event is the terminal one: its data or its type is ``marker``."""
        return self.last is not None and marker in self.last


class _Watch:
    """An exchange reading its response, as the watchdog sees it: when it last got bytes, and
    why the watchdog ended it (``"timeout"``, ``"hold"``; ``""`` while it runs)."""

    __slots__ = ("ended", "last", "sock")

    def __init__(self, sock: socket.socket, last: float) -> None:
        self.sock = sock
        self.last = last
        self.ended = ""

    def end(self, why: str) -> None:
        """Mark the exchange ended and wake its read: a shut-down socket reads as EOF."""
        self.ended = why
        with contextlib.suppress(OSError):  # closed by the peer already: the read wakes anyway
            self.sock.shutdown(socket.SHUT_RDWR)


class _Runner:
    def __init__(self, config: BenchConfig, state: BenchState, address: str) -> None:
        self.config = config
        self.state = state
        self.address = address
        # Connections are plain non-blocking sockets that bench reads itself: a read is one
        # ``recv`` and, when nothing is queued, one readiness wait (no stream objects, buffers
        # or protocol callbacks in between).
        self.idle: list[socket.socket] = []
        self.heads: dict[bytes, ResponseHead] = {}  # see ``Exchange``: h11 once per head
        # Read timeouts and the end of a hold are the watchdog's: a cancel scope per request
        # cost about 8 % of bench's time, a timestamp per read costs nothing measurable.
        self.watches: set[_Watch] = set()
        self.tickets = 0
        self.hold_deadline = math.inf
        # Every request is the same: validated and serialised once.
        self.prepared = PreparedRequest.build(
            config.target, config.method, list(config.headers), config.body
        )

    async def _open(self) -> socket.socket:
        config = self.config
        t0 = time.perf_counter()
        # In hold mode a connection not made by the end of the hold never will be useful.
        timeout_s = min(config.connect_timeout_s, self.hold_deadline - anyio.current_time())
        try:
            with anyio.fail_after(max(timeout_s, 0.0)):
                sock = await open_socket(self.address, config.target.port)
        except TimeoutError as exc:
            raise _Failed("connect", f"connect timed out after {timeout_s:.3g} s") from exc
        except OSError as exc:
            raise _Failed("connect", f"connect failed: {exc}") from exc
        self.state.connect_us.record(int((time.perf_counter() - t0) * 1e6))
        return sock

    async def stream(self, t_ref: float) -> None:
        """Run one request; count its outcome. Cancellation (end of the run) propagates."""
        state = self.state
        state.started += 1
        state.active += 1
        state.peak_active = max(state.peak_active, state.active)
        sock: socket.socket | None = None
        done = False
        try:
            reused = bool(self.idle)
            first = sock = self.idle.pop() if reused else await self._open()
            try:
                sock = await self._exchange(first, t_ref, reused)
            except _Failed as exc:
                if exc.kind != "stale":
                    raise
                # The server closed an idle keep-alive connection before it answered a byte:
                # the request goes again on a fresh connection (as HTTP clients' pools do),
                # counted apart so a server that keeps doing it shows.
                state.retries += 1
                sock = None
                first.close()
                sock = fresh = await self._open()
                sock = await self._exchange(fresh, t_ref, False)
            done = True
            state.completed += 1
        except _Failed as exc:
            done = True
            state.fail(exc.kind, str(exc))
        finally:
            state.active -= 1
            if not done:
                state.cancelled += 1
            if sock is not None:
                sock.close()

    async def _exchange(
        self, sock: socket.socket, t_ref: float, reused: bool
    ) -> socket.socket | None:
        """Run one request on ``sock``; return the socket if it is closed or still needed."""
        config = self.config
        state = self.state
        exchange = Exchange(self.prepared, self.heads)
        try:
            await send_all(sock, exchange.request_bytes)
        except OSError as exc:
            if reused:
                raise _Failed("stale", str(exc)) from exc
            raise _Failed("disconnect", f"sending the request failed: {exc}") from exc
        timeout_s = config.read_timeout_s
        counter = FrameCounter()
        checker = _Checker(config.dialect) if config.check else None
        gap = state.gap_us
        heartbeat_gap = state.heartbeat_gap_us
        head = None
        decoder = None
        chunked: ChunkedBody | None = None  # the decoder, when the body is chunked
        t_first = 0.0
        t_last_event = 0.0
        t_last_comment = 0.0
        wire = 0
        payload_total = 0
        held = False
        eager = False  # whether the last read filled the buffer (more is likely queued)
        eager_reads = 0
        watch = _Watch(sock, time.perf_counter())
        self.watches.add(watch)
        readiness = Readiness.open(sock)
        try:
            while True:
                if eager and eager_reads < _EAGER_READS:
                    eager_reads += 1
                else:
                    eager_reads = 0
                    await readiness.wait()
                try:
                    data = sock.recv(_RECV_BYTES)
                except BlockingIOError:
                    readiness.consumed()
                    eager = False
                    continue
                readiness.consumed()
                eager = len(data) == _RECV_BYTES
                t = time.perf_counter()
                watch.last = t
                if not data and watch.ended:
                    break  # the watchdog ended the exchange: judged below
                wire += len(data)
                state.bytes += len(data)
                if head is None:
                    if not data:
                        if reused and not wire:
                            raise _Failed("stale", "keep-alive connection was closed")
                        raise _Failed("disconnect", "closed before a response head arrived")
                    if not t_first:
                        t_first = t
                        state.ttfb_us.record(int((t - t_ref) * 1e6))
                    head = exchange.feed_head(data)
                    if head is None:
                        continue
                    state.headers_us.record(int((t - t_ref) * 1e6))
                    state.statuses[head.status] = state.statuses.get(head.status, 0) + 1
                    if head.status != 200:
                        raise _Failed("status", f"{head.status} {head.reason}")
                    if head.media_type != "text/event-stream":
                        raise _Failed("content_type", f"Content-Type {head.media_type!r}")
                    decoder = exchange.body_decoder(head)
                    chunked = decoder if isinstance(decoder, ChunkedBody) else None
                    data = exchange.unused
                    if not data and not decoder.done:
                        continue  # the head came alone: the body is in later reads
                assert decoder is not None
                if not data:
                    decoder.feed_eof()
                    break
                events = comments = 0
                if chunked is not None and chunked.at_chunk_start and counter.at_frame_start:
                    taken = frame_chunks(data)
                    if taken is not None:
                        lines, end, size = taken
                        events, comments = counter.add_frames(lines)
                        payload_total += size
                        if checker is not None:
                            checker.feed(b"\n\n".join(lines) + b"\n\n")
                        data = data[end:]
                payload = decoder.feed(data)
                if payload:
                    payload_total += len(payload)
                    more_events, more_comments = counter.feed(payload)
                    events += more_events
                    comments += more_comments
                    if checker is not None:
                        checker.feed(payload)
                if events or comments:
                    state.events += events
                    state.comments += comments
                    if events > 0:
                        if t_last_event:
                            gap.record(int((t - t_last_event) * 1e6))
                        else:
                            state.first_event_us.record(int((t - t_ref) * 1e6))
                        if events > 1:
                            gap.record(0, events - 1)
                        t_last_event = t
                    if comments > 0:
                        if t_last_comment:
                            heartbeat_gap.record(int((t - t_last_comment) * 1e6))
                        t_last_comment = t
                if decoder.done:
                    break
        except SSEProtocolError as exc:
            raise _Failed("protocol", str(exc)) from exc
        except SSEConnectionError as exc:
            raise _Failed("disconnect", str(exc)) from exc
        except OSError as exc:
            if not watch.ended:
                if reused and not wire:
                    raise _Failed("stale", f"keep-alive connection was lost: {exc!r}") from exc
                raise _Failed("disconnect", f"connection lost: {exc!r}") from exc
        finally:
            readiness.close()
            self.watches.discard(watch)
            state.payload_bytes += payload_total
            if checker is not None:
                # the parsed count is the exact one: replace the fast estimate
                state.events += checker.events - counter.events
            state.stream_us.record(int((time.perf_counter() - t_ref) * 1e6))
        if watch.ended == "timeout":
            raise _Failed("timeout", f"no data for {timeout_s} s")
        if watch.ended:  # the end of the hold
            if decoder is None:
                raise _Failed("timeout", "no response head before the end of the hold")
            held = True
        assert decoder is not None
        assert head is not None
        self._judge(counter, checker, held)
        if (
            config.keepalive
            and not held
            and head.keep_alive
            and not decoder.unused
            and not isinstance(decoder, CloseBody)
        ):
            self.idle.append(sock)
            return None
        return sock

    def _judge(self, counter: FrameCounter, checker: _Checker | None, held: bool) -> None:
        terminal = self.config.terminal
        if checker is not None:
            if checker.failure:
                raise _Failed("check", checker.failure)
            if checker.in_band:
                raise _Failed("in_band", "the stream carried an error frame")
            if held:
                return
            if terminal is not None and not checker.ends_with(terminal):
                raise _Failed("truncated", f"the stream ended without {terminal!r}")
            checker.finish()
            if checker.failure:
                raise _Failed("check", checker.failure)
            return
        if counter.error_frames:
            raise _Failed("in_band", "the stream carried an error frame")
        if held:
            return
        if terminal is not None and not counter.ends_with(terminal.encode()):
            raise _Failed("truncated", f"the stream ended without {terminal!r}")

    async def watchdog(self) -> None:
        """End exchanges that got no bytes for ``read_timeout_s`` (checked every quarter of
        it), and at the end of a hold every exchange still reading; runs until cancelled."""
        timeout_s = self.config.read_timeout_s
        period = timeout_s / 4
        while True:
            now = anyio.current_time()
            wake = min(now + period, self.hold_deadline)
            if now >= self.hold_deadline:
                for watch in list(self.watches):
                    watch.end("hold")
                wake = now + 0.05  # and any exchange that starts after the end
            t = time.perf_counter()
            for watch in list(self.watches):
                if not watch.ended and t - watch.last > timeout_s:
                    watch.end("timeout")
            await anyio.sleep(wake - now)

    def take_ticket(self) -> int | None:
        """The next request's number, or ``None`` when the request budget is spent."""
        k = self.tickets
        if self.config.requests is not None and k >= self.config.requests:
            return None
        self.tickets += 1
        return k

    async def worker(self, index: int) -> None:
        config = self.config
        state = self.state
        if config.ramp_s and index:
            await anyio.sleep(config.ramp_s * index / config.streams)
        if config.hold_s is not None:
            await self.stream(time.perf_counter())
            return
        end = state.t_start + config.duration_s if config.duration_s is not None else math.inf
        while True:
            k = self.take_ticket()
            if k is None:
                return
            if config.rate is not None:
                t_ref = state.t_start + k / config.rate
                wait = t_ref - time.perf_counter()
                if t_ref >= end:
                    return
                if wait > 0:
                    await anyio.sleep(wait)
            else:
                t_ref = time.perf_counter()
                if t_ref >= end:
                    return
            await self.stream(t_ref)


async def _resolve(host: str, port: int) -> str:
    """Resolve once: 10,000 connections must not mean 10,000 name lookups."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    return str(infos[0][4][0])


async def run_bench(config: BenchConfig, state: BenchState) -> None:
    """Run the workload of ``config``, filling ``state`` (see the module contract)."""
    try:
        address = await _resolve(config.target.host, config.target.port)
    except OSError as exc:
        state.t_start = state.t_end = time.perf_counter()
        state.fail("connect", f"cannot resolve {config.target.host!r}: {exc}")
        return
    runner = _Runner(config, state, address)
    state.t_start = time.perf_counter()
    state.cpu_start = time.process_time()
    if config.hold_s is not None:
        runner.hold_deadline = anyio.current_time() + config.ramp_s + config.hold_s
    limit = math.inf
    if config.duration_s is not None:
        limit = config.duration_s + config.grace_s
    try:
        with anyio.move_on_after(limit):
            async with anyio.create_task_group() as outer:
                outer.start_soon(runner.watchdog)
                async with anyio.create_task_group() as tg:
                    for index in range(config.streams):
                        tg.start_soon(runner.worker, index)
                outer.cancel_scope.cancel()
    finally:
        state.t_end = time.perf_counter()
        state.cpu_end = time.process_time()
        for sock in runner.idle:
            sock.close()
        runner.idle.clear()
