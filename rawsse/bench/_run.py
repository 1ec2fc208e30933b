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

Connections come from the address and ports the kernel picks, or with ``source_address`` from
that address and ports bench picks itself (``rawsse.bench._sources``); ``connections`` counts
those opened, and ``connections_per_s`` how fast.

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
Each response is read by a ``rawsse.bench._response.ResponseReader``: the head judged once per
distinct head (``rawsse.bench._head``), then ``frame_chunks``, which de-chunks and counts in one
pass the chunks of one single-line frame each (most servers' events), and the lean chunked
decoder and ``FrameCounter`` for what is left: no per-event parsing unless ``check`` is on.
A connection's readiness waiter lives as long as the connection (``rawsse.bench._io``).
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from dataclasses import dataclass, field

import anyio

from rawsse.bench._head import HeadCache
from rawsse.bench._io import Readiness, send_all
from rawsse.bench._response import Checker, Failed, ResponseReader
from rawsse.bench._sources import SourcePorts, open_socket_from
from rawsse.bench._stats import Histogram
from rawsse.client._errors import SSEConnectionError, SSEProtocolError
from rawsse.client._exchange import PreparedRequest, Target

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
    # Bind every connection to this source address and a port bench picks
    # (``rawsse.bench._sources``); None: the kernel chooses both.
    source_address: str | None = None

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ValueError("streams must be at least 1")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be at least 1")
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
    # Connections opened, and when the first began and the last was made (perf_counter).
    connections: int = 0
    t_first_connect: float = 0.0
    t_last_connect: float = 0.0
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

    @property
    def connections_per_s(self) -> float:
        """Connections opened per second, from the first connect's start to the last's end."""
        span = self.t_last_connect - self.t_first_connect
        return self.connections / span if self.connections and span > 0 else 0.0

    def fail(self, kind: str, detail: str) -> None:
        """Count a failed stream of ``kind``; keep the first detail of each kind."""
        self.errors[kind] += 1
        self.error_samples.setdefault(kind, detail)


class _Conn:
    """One connection: its socket, its readiness waiter (kept across keep-alive exchanges),
    and the exchange it carries as the watchdog sees it: when it last got bytes, and why the
    watchdog ended it (``"timeout"``, ``"hold"``; ``""`` while it runs)."""

    __slots__ = ("ended", "last", "readiness", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.readiness = Readiness.open(sock)
        self.last = 0.0
        self.ended = ""

    def end(self, why: str) -> None:
        """Mark the exchange ended and wake its read: a shut-down socket reads as EOF."""
        self.ended = why
        with contextlib.suppress(OSError):  # closed by the peer already: the read wakes anyway
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop watching the socket and close it."""
        self.readiness.close()
        self.sock.close()


class _Runner:
    def __init__(self, config: BenchConfig, state: BenchState, address: str) -> None:
        self.config = config
        self.state = state
        self.address = address
        # Connections are plain non-blocking sockets that bench reads itself: a read is one
        # ``recv`` and, when nothing is queued, one readiness wait (no stream objects, buffers
        # or protocol callbacks in between).
        self.idle: list[_Conn] = []
        # Read timeouts and the end of a hold are the watchdog's: a cancel scope per request
        # cost about 8 % of bench's time, a timestamp per read costs nothing measurable.
        self.watches: set[_Conn] = set()
        self.tickets = 0
        self.hold_deadline = math.inf
        self.source = SourcePorts(config.source_address) if config.source_address else None
        # Every request is the same: validated and serialised once, its heads judged once.
        prepared = PreparedRequest.build(
            config.target, config.method, list(config.headers), config.body
        )
        self.request = prepared.data
        self.heads = HeadCache(prepared)

    async def _open(self) -> _Conn:
        config = self.config
        state = self.state
        t0 = time.perf_counter()
        if not state.t_first_connect:
            state.t_first_connect = t0
        # In hold mode a connection not made by the end of the hold never will be useful.
        timeout_s = min(config.connect_timeout_s, self.hold_deadline - anyio.current_time())
        if timeout_s <= 0:  # the ramp fell behind: this stream's turn came after the hold
            raise Failed("connect", "the hold ended before this stream could connect")
        try:
            with anyio.fail_after(max(timeout_s, 0.0)):
                sock = await open_socket_from(self.address, config.target.port, self.source)
        except TimeoutError as exc:
            raise Failed("connect", f"connect timed out after {timeout_s:.3g} s") from exc
        except OSError as exc:
            raise Failed("connect", f"connect failed: {exc}") from exc
        t = state.t_last_connect = time.perf_counter()
        state.connections += 1
        state.connect_us.record(int((t - t0) * 1e6))
        return _Conn(sock)

    async def stream(self, t_ref: float) -> None:
        """Run one request; count its outcome. Cancellation (end of the run) propagates."""
        state = self.state
        state.started += 1
        state.active += 1
        state.peak_active = max(state.peak_active, state.active)
        conn: _Conn | None = None
        done = False
        try:
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await self._open()
            try:
                pooled = await self._exchange(conn, t_ref, reused)
            except Failed as exc:
                if exc.kind != "stale":
                    raise
                # The server closed an idle keep-alive connection before it answered a byte:
                # the request goes again on a fresh connection (as HTTP clients' pools do),
                # counted apart so a server that keeps doing it shows.
                state.retries += 1
                stale, conn = conn, None
                stale.close()
                conn = await self._open()
                pooled = await self._exchange(conn, t_ref, False)
            if pooled:
                conn = None
            done = True
            state.completed += 1
        except Failed as exc:
            done = True
            state.fail(exc.kind, str(exc))
        finally:
            state.active -= 1
            if not done:
                state.cancelled += 1
            if conn is not None:
                conn.close()

    def _send_now(self, conn: _Conn, reused: bool) -> bytes:
        """Send the request without waiting; return what the socket did not take (nearly
        always nothing: a request is far smaller than a socket buffer)."""
        request = self.request
        try:
            sent = conn.sock.send(request)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _send_failure(exc, reused) from exc
        return request[sent:] if sent < len(request) else b""

    async def _send_rest(self, conn: _Conn, rest: bytes, reused: bool) -> None:
        try:
            await send_all(conn.sock, rest)
        except OSError as exc:
            raise _send_failure(exc, reused) from exc

    async def _exchange(self, conn: _Conn, t_ref: float, reused: bool) -> bool:
        """Run one request on ``conn``; return whether ``conn`` went back to the pool."""
        config = self.config
        readiness = conn.readiness
        readiness.resume()
        rest = self._send_now(conn, reused)
        if rest:
            await self._send_rest(conn, rest, reused)
        checker = Checker(config.dialect) if config.check else None
        reader = ResponseReader(self.state, self.heads, t_ref, reused, config.terminal, checker)
        sock = conn.sock
        conn.ended = ""
        conn.last = time.perf_counter()
        self.watches.add(conn)
        # The read loop is here rather than in a coroutine of its own: each wake-up resumes
        # every frame of the await chain, and a request has one or two.
        wait = True
        eager_reads = 0  # reads in a row made without waiting
        try:
            while True:
                if wait and not readiness.ready:
                    await readiness.wait()
                try:
                    data = sock.recv(_RECV_BYTES)
                except BlockingIOError:
                    readiness.consumed()
                    wait = True
                    continue
                readiness.consumed()
                t = conn.last = time.perf_counter()
                if not data:
                    if not conn.ended:  # else the watchdog ended the exchange: judged below
                        reader.eof()
                    break
                if reader.take(data, t):
                    break
                # A full buffer: more is likely queued, read it at once (a few times in a row).
                wait = len(data) < _RECV_BYTES or eager_reads >= _EAGER_READS
                eager_reads = 0 if wait else eager_reads + 1
        except (OSError, SSEConnectionError) as exc:  # malformed framing is one too
            failure = _read_failure(exc, conn, reused and not reader.wire)
            if failure is not None:
                raise failure from exc
        finally:
            self.watches.discard(conn)
            reader.close()
            self.state.stream_us.record(int((time.perf_counter() - t_ref) * 1e6))
        if conn.ended == "timeout":
            raise Failed("timeout", f"no data for {config.read_timeout_s} s")
        if not reader.finish(held=bool(conn.ended)) or not config.keepalive:
            return False
        readiness.park()
        self.idle.append(conn)
        return True

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


def _send_failure(exc: OSError, reused: bool) -> Failed:
    if reused:  # the server closed the idle connection: the request may go again
        return Failed("stale", str(exc))
    return Failed("disconnect", f"sending the request failed: {exc}")


def _read_failure(exc: OSError | SSEConnectionError, conn: _Conn, stale: bool) -> Failed | None:
    """What a read that raised ``exc`` means for the stream; ``None`` when the watchdog had
    ended the exchange (judged by why), ``stale`` when a reused connection had sent nothing."""
    if isinstance(exc, SSEProtocolError):
        return Failed("protocol", str(exc))
    if isinstance(exc, SSEConnectionError):
        return Failed("disconnect", str(exc))
    if conn.ended:
        return None
    if stale:
        return Failed("stale", f"keep-alive connection was lost: {exc!r}")
    return Failed("disconnect", f"connection lost: {exc!r}")


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
        for conn in runner.idle:
            conn.close()
        runner.idle.clear()
