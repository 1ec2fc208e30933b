"""One load process of the held-stream scenario: opens idle SSE streams and watches them end.

Run by ``benchmarks/held.py`` (several at once, one per loopback source address), or alone:

    python -m benchmarks.held_client http://127.0.0.1:8000/v1/chat/completions --streams 5000 \\
        --source 127.0.0.2 --heartbeat 15

Why it exists: one process may hold at most ~20,000 descriptors here, and past ~14,000
connections from one source address Linux scans half the ephemeral port range on every
``connect()``; so each process binds its own source address from 127.0.0.0/8 and picks its
source ports itself (``--first-port`` upwards). Per stream it records, without parsing SSE beyond
what it counts:

- the response head (status 200 or not), when it came;
- heartbeats: a read holding a comment line (``\\n:`` or a body starting with ``:``); the time
  between a heartbeat and the stream's previous write (heartbeat or data) is compared with
  ``--heartbeat``: lateness = interval - heartbeat;
- notices: data holding ``notice@T`` (T a wall-clock time the server stamped when it was due):
  delivery time = arrival wall time - T, per stream and notice;
- how it ended: the chunked terminator ``0\\r\\n\\r\\n`` then EOF (clean), EOF or a reset without
  it (cut), or still open when told to stop; and when (wall clock). A stream the server ended
  is left half-closed until the process quits: closing 16,000 sockets as the server's farewells
  arrive would take the cores the server needs to send them (its shutdown is what is timed).
  The collector is frozen once every stream is open (its full passes would take CPU from every
  later phase).

The process runs as ``SCHED_BATCH`` (``--sched normal`` to not): it gets the same share of the
CPU, but its wake-ups (a packet from the server) do not preempt the server it shares the cores
with. With 100,000 streams ending at once, that halved the load processes' CPU and took ~15%
off the server's (fewer context switches, longer runs for both).

Control on stdin, one word a line: ``report`` prints the JSON summary so far; ``mark`` resets
the heartbeat and notice statistics (start of a phase); ``quit`` aborts every stream and exits.
The process prints ``HELD <n> <failed> <seconds>`` once every stream has its head (or failed),
and ``ENDED <n>`` once every stream has ended.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import os
import re
import resource
import select
import socket
import struct
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def chat_body(model: str) -> bytes:
    """A streaming chat request for ``model``."""
    return json.dumps(
        {
            "model": model,
            "stream": True,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Say something."}],
        }
    ).encode()


_NOTICE = re.compile(rb"notice@(\d+\.\d+)")
TERMINATOR = b"0\r\n\r\n"


class Totals:
    """What every stream of this process adds to."""

    def __init__(self) -> None:
        self.hb_late: list[float] = []
        self.notice_delay: list[float] = []
        # Per notice (its due time as sent): [deliveries, latest delivery delay].
        self.by_notice: dict[str, list[float]] = {}
        self.heartbeats = 0
        self.events = 0
        self.clean = 0
        self.cut = 0
        self.ended = 0
        self.end_times: list[float] = []
        self.open = 0


class Stream:
    """One held stream: a request written once, then reads counted."""

    __slots__ = ("deadline", "head", "in_body", "last_write", "sock", "state", "tail")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.state = CONNECTING
        self.deadline = deadline  # to connect, then to get the head
        self.head = b""
        self.in_body = False
        self.tail = b""
        self.last_write = 0.0

    def readable(self, totals: Totals) -> str | None:
        """Read all there is (edge-triggered); the failure kind if the head was not a 200."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return None
            except OSError:  # a reset
                return self._lost(totals)
            if not data:
                return self._lost(totals)
            if self.state == HEAD:
                failed = self._head(data, totals)
                if failed is not None:
                    return failed
            else:
                self._body(data, totals)

    def _head(self, data: bytes, totals: Totals) -> str | None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return None
        if not self.head.startswith(b"HTTP/1.1 200"):
            self.state = FAILED
            return "no 200 head"
        rest = self.head[end + 4 :]
        self.head = b""
        self.state = BODY
        self.in_body = True
        self.last_write = time.monotonic()
        totals.open += 1
        if rest:
            self._body(rest, totals)
        return None

    def _body(self, data: bytes, totals: Totals) -> None:
        now = time.monotonic()
        view = self.tail[-8:] + data
        events = view.count(b"\ndata:") + data.startswith(b"data:")
        if events:
            totals.events += events
            for match in _NOTICE.finditer(data):
                due = match.group(1).decode()
                delay = time.time() - float(due)
                totals.notice_delay.append(delay)
                entry = totals.by_notice.setdefault(due, [0, 0.0])
                entry[0] += 1
                entry[1] = max(entry[1], delay)
        elif b"\n:" in view or data[:1] == b":" or b"\r\n:" in view:
            totals.heartbeats += 1
            if self.last_write:
                totals.hb_late.append(now - self.last_write)
        self.last_write = now
        self.tail = view[-8:]

    def _lost(self, totals: Totals) -> str | None:
        """The server closed (or reset): the stream has ended. This end is left open
        (half-closed) until the process quits: see the module's docstring."""
        if self.state == HEAD or self.state == CONNECTING:
            self.state = FAILED
            return "no 200 head"
        if self.state != BODY:
            return None
        self.state = ENDED
        totals.open -= 1
        totals.ended += 1
        totals.end_times.append(time.time())
        if self.tail.endswith(TERMINATOR):
            totals.clean += 1
        else:
            totals.cut += 1
        return None


CONNECTING, HEAD, BODY, ENDED, FAILED = range(5)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


def summary(
    totals: Totals, args: argparse.Namespace, held: int, failed: dict[str, int], open_s: float
) -> dict[str, Any]:
    late = [x - args.heartbeat for x in totals.hb_late] if args.heartbeat else []
    ends = totals.end_times
    return {
        "source": args.source,
        "streams": args.streams,
        "held": held,
        "failed": failed,
        "open_s": round(open_s, 3),
        "still_open": totals.open,
        "heartbeats": totals.heartbeats,
        "events": totals.events,
        "hb_late_ms": {
            "p50": ms(pct(late, 50)),
            "p99": ms(pct(late, 99)),
            "max": ms(max(late)) if late else None,
            "n": len(late),
        },
        "notice_ms": {
            "p50": ms(pct(totals.notice_delay, 50)),
            "p99": ms(pct(totals.notice_delay, 99)),
            "max": ms(max(totals.notice_delay)) if totals.notice_delay else None,
            "n": len(totals.notice_delay),
        },
        "by_notice": totals.by_notice,
        "ended": totals.ended,
        "clean": totals.clean,
        "cut": totals.cut,
        "first_end": min(ends) if ends else None,
        "last_end": max(ends) if ends else None,
    }


def run(args: argparse.Namespace) -> None:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = chat_body(args.model) if args.body is None else args.body.encode()
    target = parts.path + ("?" + parts.query if parts.query else "")
    request = (
        f"POST {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    totals = Totals()
    streams: dict[int, Stream] = {}  # by descriptor
    failed: dict[str, int] = {}
    ep = select.epoll()
    next_port = args.first_port
    started = settled = 0
    opening: set[int] = set()  # descriptors still connecting or waiting for their head

    def fail(kind: str, stream: Stream | None = None) -> None:
        nonlocal settled
        failed[kind] = failed.get(kind, 0) + 1
        settled += 1
        if stream is not None:
            fd = stream.sock.fileno()
            opening.discard(fd)
            streams.pop(fd, None)
            stream.sock.close()

    def start_one() -> None:
        nonlocal next_port, started
        started += 1
        for _ in range(5):
            src_port = next_port
            next_port += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((args.source, src_port))
                sock.setblocking(False)
                code = sock.connect_ex((host, port))
                if code not in (0, errno.EINPROGRESS):
                    raise OSError(code, os.strerror(code))
            except OSError as exc:
                sock.close()
                kind = type(exc).__name__ + (f" errno {exc.errno}" if exc.errno else "")
                if exc.errno == errno.EADDRINUSE:  # that port is taken: try the next one
                    failed[kind] = failed.get(kind, 0) + 1
                    continue
                fail(kind)
                return
            fd = sock.fileno()
            streams[fd] = Stream(sock, time.monotonic() + 30)
            opening.add(fd)
            ep.register(fd, select.EPOLLOUT | select.EPOLLIN | select.EPOLLET)
            return
        fail("no free source port")

    def connected(stream: Stream) -> None:
        sock = stream.sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            fail(f"connect errno {code}", stream)
            return
        try:
            sent = sock.send(request)
        except OSError:
            sent = 0
        if sent != len(request):
            fail("request not sent", stream)
            return
        stream.state = HEAD
        stream.deadline = time.monotonic() + 60

    def on_event(fd: int, mask: int) -> None:
        nonlocal settled
        stream = streams.get(fd)
        if stream is None:
            return
        if stream.state == CONNECTING:
            if not mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                return
            connected(stream)
            if stream.state != HEAD:
                return
        was_opening = stream.state == HEAD
        kind = stream.readable(totals)
        if kind is not None:
            fail(kind, stream)
        elif was_opening and stream.state == BODY:
            opening.discard(fd)
            settled += 1

    t0 = time.monotonic()
    next_check = t0 + 1
    while settled < args.streams:
        while started < args.streams and len(opening) < args.concurrency:
            start_one()
        for fd, mask in ep.poll(0.1):
            on_event(fd, mask)
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 1
            for fd in [fd for fd in opening if streams[fd].deadline < now]:
                stream = streams[fd]
                kind = "connect timeout" if stream.state == CONNECTING else "no 200 head"
                fail(kind, stream)
    open_s = time.monotonic() - t0
    held = totals.open
    # What is open now lives until the end: out of the collector's sight, whose full passes
    # over 16,000 streams would otherwise take this process's CPU in every later phase.
    gc.collect()
    gc.freeze()
    print(f"HELD {held} {sum(failed.values())} {open_s:.3f}", flush=True)

    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    ep.register(stdin, select.EPOLLIN)
    pending = b""
    ended_said = False
    quit_ = False
    while not quit_:
        for fd, _mask in ep.poll(0.1):
            if fd != stdin:
                stream = streams.get(fd)
                if stream is not None:
                    stream.readable(totals)
                continue
            try:
                chunk = os.read(stdin, 4096)
            except BlockingIOError:
                continue
            pending += chunk if chunk else b"\nquit\n"
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode().strip()
                if line == "report":
                    print(json.dumps(summary(totals, args, held, failed, open_s)), flush=True)
                elif line == "mark":
                    totals.hb_late.clear()
                    totals.notice_delay.clear()
                    totals.by_notice.clear()
                    totals.heartbeats = 0
                    totals.events = 0
                    print("MARKED", flush=True)
                elif line == "quit":
                    quit_ = True
        if held and totals.ended >= held and not ended_said:
            ended_said = True
            print(f"ENDED {totals.ended}", flush=True)
    for stream in streams.values():
        with contextlib.suppress(OSError):
            # Abort: a reset, not a FIN handshake per stream.
            stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.sock.close()
    print(json.dumps(summary(totals, args, held, failed, open_s)), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.held_client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--source", default="127.0.0.1", help="source address to bind")
    parser.add_argument(
        "--first-port",
        type=int,
        default=10000,
        help="source ports from here up (explicit: no ephemeral-range scans)",
    )
    parser.add_argument("--heartbeat", type=float, default=15.0)
    parser.add_argument("--model", default="lorem", help="model of the chat request")
    parser.add_argument("--body", default=None, help="request body (default: a chat request)")
    parser.add_argument("--concurrency", type=int, default=256, help="connects in flight")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument(
        "--sched",
        choices=("batch", "normal"),
        default="batch",
        help="scheduling policy (default batch: the same share of the CPU, but a wake-up does "
        "not preempt the server it shares the cores with)",
    )
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.sched == "batch":
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run(args)


if __name__ == "__main__":
    main()
