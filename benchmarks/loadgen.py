"""A small SSE load client for the measurements ``rawsse bench`` does not cover.

Why it exists: the benchmarks need (a) a client whose cost per event is far below any server's,
counting events at the wire without parsing them, (b) a *hold* mode that opens thousands of idle
streams, reports when they are all open (so the caller can read the server's RSS) and records
every heartbeat's arrival time (heartbeat jitter), and (c) the same POST request against every
peer server. It is deliberately minimal, and honest about what it measures:

- An event is a ``data:`` line start (``b"\\ndata:"``, found with ``bytes.count`` over each read,
  with a 5-byte carry across reads); a heartbeat is a comment line start (``b"\\n:"``). Chunk
  framing is not decoded: the end of a response is its chunked terminator ``\\r\\n0\\r\\n\\r\\n``
  at the end of a read, or EOF.
- TTFB is from writing the request (on an open keep-alive connection; connect time excluded) to
  the read holding the first event. A gap is the time between two reads holding events; events
  arriving in the same read count as gaps of 0 (what a client sees).
- Connections are reused (HTTP/1.1 keep-alive) until the server closes them.

``python -m benchmarks.loadgen run URL --streams N (--duration S | --requests R) [--warmup S]``
``python -m benchmarks.loadgen hold URL --streams N --hold-for S`` (URL should ask the server to
hold: ``...&n=0&hold=600``); prints ``HELD <n>`` on stdout once all streams have their headers,
then holds for S seconds and prints its JSON. Every run is bounded in time (``--timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit

BODY = json.dumps(
    {
        "model": "lorem",
        "stream": True,
        "messages": [{"role": "user", "content": "Say something."}],
    }
).encode()


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, min(hard, 1 << 20)) if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_request(url: str, body: bytes, method: str = "POST") -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = parts.path + ("?" + parts.query if parts.query else "")
    head = (
        f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\naccept: text/event-stream\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    return host, port, head + body


class Stats:
    __slots__ = (
        "bytes",
        "completed",
        "counting",
        "errors",
        "events",
        "gaps",
        "hb_intervals",
        "heartbeats",
        "ttfb",
        "zero_gaps",
    )

    def __init__(self) -> None:
        self.events = 0
        self.heartbeats = 0
        self.completed = 0
        self.errors = 0
        self.bytes = 0
        self.ttfb: list[float] = []
        self.gaps: list[float] = []
        self.zero_gaps = 0
        self.hb_intervals: list[float] = []
        self.counting = True


class Conn(asyncio.Protocol):
    """One keep-alive connection; ``request()`` returns a future resolved at the response end."""

    __slots__ = (
        "first",
        "head",
        "head_seen",
        "in_body",
        "last_ev",
        "last_hb",
        "lost",
        "stats",
        "status_ok",
        "t_head",
        "t_req",
        "tail",
        "transport",
        "waiter",
    )

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.lost = False
        self.head = b""
        self.in_body = False
        self.tail = b"\r\n"
        self.first = True
        self.status_ok = False
        self.t_req = 0.0
        self.t_head = 0.0
        self.last_ev = 0.0
        self.last_hb = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Resolved once the response head is in (or the connection is lost): the hold mode
        # waits on it instead of polling.
        self.head_seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _head_done(self) -> None:
        if not self.head_seen.done():
            self.head_seen.set_result(None)

    def request(self, payload: bytes) -> asyncio.Future[bool]:
        self.head = b""
        self.in_body = False
        self.tail = b"\r\n"
        self.first = True
        self.last_ev = 0.0
        self.last_hb = 0.0
        self.waiter = asyncio.get_running_loop().create_future()
        self.t_req = time.perf_counter()
        assert self.transport is not None
        self.transport.write(payload)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        stats = self.stats
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.head[:end]
            data = self.head[end + 4 :]
            self.head = b""
            self.in_body = True
            self.t_head = now
            self.status_ok = head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
            self._head_done()
            if not self.status_ok:
                self.finish(False)
                return
        if stats.counting:
            stats.bytes += len(data)
        # Each pattern is counted over the new bytes plus a carry one byte shorter than the
        # pattern, so an occurrence split across reads is counted once and none twice.
        tail = self.tail
        k = (tail[-5:] + data).count(b"\ndata:")
        if k:
            if stats.counting:
                stats.events += k
                if self.first:
                    stats.ttfb.append(now - self.t_req)
                    stats.zero_gaps += k - 1
                else:
                    stats.gaps.append(now - self.last_ev)
                    stats.zero_gaps += k - 1
            self.first = False
            self.last_ev = now
        h = (tail[-1:] + data).count(b"\n:")
        if h:
            if stats.counting:
                stats.heartbeats += h
                if self.last_hb:
                    stats.hb_intervals.append(now - self.last_hb)
            self.last_hb = now
        self.tail = (tail + data)[-7:]
        if self.tail == b"\r\n0\r\n\r\n":
            self.finish(True)

    def finish(self, ok: bool) -> None:
        waiter = self.waiter
        self.waiter = None
        self.in_body = False
        if waiter is not None and not waiter.done():
            waiter.set_result(ok)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        self._head_done()
        self.finish(False)


async def open_conn(host: str, port: int, stats: Stats) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: Conn(stats), host, port)
    return proto


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.encode() if args.body is not None else BODY
    host, port, payload = build_request(args.url, body)
    stats = Stats()
    stats.counting = args.warmup <= 0
    stop = False
    started = 0
    conns: list[Conn] = []

    async def slot(index: int) -> None:
        nonlocal started
        conn: Conn | None = None
        if args.ramp > 0:
            await asyncio.sleep(args.ramp * index / args.streams)
        while not stop and (args.requests is None or started < args.requests):
            started += 1
            try:
                if conn is None or conn.lost:
                    conn = await open_conn(host, port, stats)
                    conns.append(conn)
                ok = await conn.request(payload)
            except OSError:
                ok = False
                conn = None
                await asyncio.sleep(0.01)
            if stop:
                break
            if stats.counting:
                if ok:
                    stats.completed += 1
                else:
                    stats.errors += 1
            if not ok and conn is not None and conn.transport is not None:
                conn.transport.abort()
                conn = None

    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [asyncio.create_task(slot(i)) for i in range(args.streams)]
    if args.warmup > 0:
        await asyncio.sleep(args.warmup)
        stats.counting = True
    t_start = time.perf_counter()
    limit = args.duration if args.duration is not None else args.timeout
    _, pending = await asyncio.wait(tasks, timeout=limit)
    stop = True
    t_end = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = t_end - t_start
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return summary(stats, wall, cpu / max(t_end - t0, 1e-9), args)


def pct(values: list[float], zeros: int, q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values`` plus ``zeros`` zero values."""
    n = len(values) + zeros
    if n == 0:
        return None
    rank = round(q / 100.0 * (n - 1))
    if rank < zeros:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, rank - zeros)]


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000.0, 3)


def summary(stats: Stats, wall: float, cpu_frac: float, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "streams": args.streams,
        "completed": stats.completed,
        "errors": stats.errors,
        "events": stats.events,
        "heartbeats": stats.heartbeats,
        "seconds": round(wall, 3),
        "events_per_s": round(stats.events / wall, 1) if wall > 0 else 0.0,
        "mb_per_s": round(stats.bytes / wall / 1e6, 3) if wall > 0 else 0.0,
        "ttfb_ms": {"p50": ms(pct(stats.ttfb, 0, 50)), "p99": ms(pct(stats.ttfb, 0, 99))},
        "gap_ms": {
            "p50": ms(pct(stats.gaps, stats.zero_gaps, 50)),
            "p99": ms(pct(stats.gaps, stats.zero_gaps, 99)),
            "max": ms(max(stats.gaps)) if stats.gaps else None,
        },
        "client_cpu": round(cpu_frac, 3),
    }


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    host, port, payload = build_request(args.url, BODY)
    stats = Stats()
    conns: list[Conn] = []
    waiters: list[asyncio.Future[bool]] = []
    sem = asyncio.Semaphore(args.connect_concurrency)
    failed = 0

    async def open_one() -> None:
        nonlocal failed
        async with sem:
            for _attempt in range(3):
                try:
                    conn = await asyncio.wait_for(open_conn(host, port, stats), 10)
                except (OSError, asyncio.TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                conns.append(conn)
                waiters.append(conn.request(payload))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn.head_seen), 10)
                if conn.in_body and conn.status_ok:
                    return
                break
            failed += 1

    t0 = time.perf_counter()
    openers = [asyncio.create_task(open_one()) for _ in range(args.streams)]
    _, unfinished = await asyncio.wait(openers, timeout=args.timeout)
    for task in unfinished:  # out of time: report what is held rather than nothing
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    ramp = time.perf_counter() - t0
    held = sum(1 for c in conns if c.in_body and not c.lost)
    print(f"HELD {held}", flush=True)
    stats.hb_intervals.clear()
    await asyncio.sleep(args.hold_for)
    still = sum(1 for c in conns if c.in_body and not c.lost)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    await asyncio.sleep(0)
    intervals = stats.hb_intervals
    jitter = [abs(x - args.heartbeat) for x in intervals] if args.heartbeat else []
    return {
        "streams": args.streams,
        "held": held,
        "still_open": still,
        "failed": failed,
        "timed_out": len(unfinished),
        "ramp_s": round(ramp, 3),
        "heartbeats": stats.heartbeats,
        "hb_intervals": len(intervals),
        "hb_interval_ms": {"p50": ms(pct(intervals, 0, 50)), "p99": ms(pct(intervals, 0, 99)),
                           "max": ms(max(intervals)) if intervals else None},
        "hb_jitter_ms": {"p50": ms(pct(jitter, 0, 50)), "p99": ms(pct(jitter, 0, 99)),
                         "max": ms(max(jitter)) if jitter else None},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run", help="fixed-concurrency load")
    run_p.add_argument("url")
    run_p.add_argument("--streams", type=int, default=64)
    run_p.add_argument("--duration", type=float, default=None)
    run_p.add_argument("--requests", type=int, default=None)
    run_p.add_argument("--warmup", type=float, default=0.0)
    run_p.add_argument("--timeout", type=float, default=120.0)
    run_p.add_argument("--ramp", type=float, default=0.0, help="spread slot starts over S s")
    run_p.add_argument("--body", default=None, help="request body (JSON text)")
    hold_p = sub.add_parser("hold", help="open idle streams and hold them")
    hold_p.add_argument("url")
    hold_p.add_argument("--streams", type=int, default=1000)
    hold_p.add_argument("--hold-for", type=float, default=3.0)
    hold_p.add_argument("--heartbeat", type=float, default=0.0, help="expected interval, s")
    hold_p.add_argument("--connect-concurrency", type=int, default=256)
    hold_p.add_argument("--timeout", type=float, default=120.0)
    for p in (run_p, hold_p):
        p.add_argument("--cpu", type=int, default=None, help="pin this process to CPU N")
        p.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "run" and args.duration is None and args.requests is None:
        parser.error("run needs --duration or --requests")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile()
    coro = run_load(args) if args.cmd == "run" else hold(args)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    use_uvloop = uvloop is not None and not args.no_uvloop
    result = uvloop.run(coro) if use_uvloop else asyncio.run(coro)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
