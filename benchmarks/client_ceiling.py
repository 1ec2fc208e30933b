"""The load generator's own ceiling: how many events/s ``rawsse bench`` consumes on one core.

The server here costs (almost) nothing per event: a bare ``asyncio.Protocol`` that answers each
chat request with a response encoded once and cached (one realistic OpenAI chunk per chunked
chunk, ``data: [DONE]``, the last chunk), written with one ``transport.write``. It runs in its
own process pinned to one CPU; ``rawsse bench`` runs pinned to the other. Whatever events/s
bench reports is then bench's own limit, not the server's. For scale, the same run measures
``rawsse serve`` (demo app, token delay 0, pinned the same way) with the same bench settings:
a real server's events/s per core, which the ceiling must exceed by far (3x at least) for
bench's figures to be about the server.

Run: ``python benchmarks/client_ceiling.py [--quick]``; prints a markdown table.
Needs 2 CPUs (server on CPU 1, bench on CPU 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_CPU = 1
BENCH_CPU = 0

# chat.completion.chunk frames as the vendors send them (about 230 bytes on the wire each):
# a valid stream (role first, one finish_reason, [DONE]) so that --check passes too.
_PREFIX = (
    b'data: {"id":"chatcmpl-0123456789abcdef","object":"chat.completion.chunk",'
    b'"created":1795500000,"model":"lorem","system_fingerprint":"fp_rawsse","choices":'
)
ROLE = _PREFIX + (
    b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
)
CHUNK = _PREFIX + (
    b'[{"index":0,"delta":{"content":"lorem "},"logprobs":null,"finish_reason":null}]}\n\n'
)
FINISH = _PREFIX + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}\n\n'
DONE = b"data: [DONE]\n\n"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _framed(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class _Responses(dict[int, bytes]):
    """Pre-encoded responses by max_tokens: encoded once, then only written."""

    def __missing__(self, tokens: int) -> bytes:
        frames = _framed(ROLE) + _framed(CHUNK) * tokens + _framed(FINISH) + _framed(DONE)
        body = HEAD + frames + b"0\r\n\r\n"
        self[tokens] = body
        return body


RESPONSES = _Responses()


class FrameServer(asyncio.Protocol):
    """Answers every request on a keep-alive connection with a cached response."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            tokens = int(json.loads(body).get("max_tokens", 16)) if body else 16
            assert self.transport is not None
            self.transport.write(RESPONSES[tokens])


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FrameServer, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"rawsse listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def _start(command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO)
    os.sched_setaffinity(proc.pid, {SERVER_CPU})
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("rawsse listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _bench(url: str, streams: int, tokens: int, requests: int, *extra: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "rawsse", "bench", url, "--streams", str(streams),
        "--max-tokens", str(tokens), "--requests", str(requests), "--cpu", str(BENCH_CPU),
        "--json", "--no-progress", *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, cwd=REPO, timeout=300, check=False)
    if not done.stdout:
        raise RuntimeError(done.stderr.decode())
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _us_per_event(result: dict[str, Any]) -> float:
    return 1e6 / result["events_per_s"] if result["events_per_s"] else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    if len(os.sched_getaffinity(0)) < 2:
        print("needs 2 CPUs", file=sys.stderr)
        return 1
    scale = 4 if args.quick else 1
    runs = [
        # label, streams, tokens per stream, requests, extra bench options
        ("64 streams x 1000 events", 64, 1000, 640 // scale, ("--backend", "asyncio")),
        ("64 streams x 1000 events, uvloop", 64, 1000, 640 // scale, ("--backend", "uvloop")),
        ("64 streams x 1000 events, trio", 64, 1000, 640 // scale, ("--backend", "trio")),
        ("64 streams x 1000 events, --check", 64, 1000, 256 // scale, ("--check",)),
        ("1 stream x 1000 events", 1, 1000, 200 // scale, ()),
        ("64 streams x 16 events (short)", 64, 16, 12800 // scale, ()),
        ("64 streams x 16 events, uvloop", 64, 16, 12800 // scale, ("--backend", "uvloop")),
    ]
    rows = []
    proc, url = _start([sys.executable, os.path.abspath(__file__), "--serve"])
    try:
        for label, streams, tokens, requests, extra in runs:
            result = _bench(url, streams, tokens, requests, *extra)
            assert result["errors"] == 0, result["error_samples"]
            rows.append((label, result))
    finally:
        _stop(proc)
    # For scale: a real server on the same core, same bench settings.
    proc, url = _start([sys.executable, "-m", "rawsse", "serve", "--port", "0",
                        "--token-delay", "0", "--no-access-log"])  # fmt: skip
    try:
        reference = _bench(url, 64, 16, 3200 // scale)
    finally:
        _stop(proc)
    print(f"# rawsse bench client ceiling ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()})\n")  # fmt: skip
    print("| run | events/s | us per event | MB/s | completed |")
    print("|---|---:|---:|---:|---:|")
    for label, result in rows:
        print(
            f"| {label} | {result['events_per_s']:,.0f} | {_us_per_event(result):.2f} "
            f"| {result['mb_per_s']:.1f} | {result['completed']:,} |"
        )
    print(
        f"| reference: `rawsse serve` demo, 64 streams x 16 tokens | "
        f"{reference['events_per_s']:,.0f} | {_us_per_event(reference):.2f} | "
        f"{reference['mb_per_s']:.1f} | {reference['completed']:,} |"
    )
    ceiling = rows[0][1]["events_per_s"]
    ratio = ceiling / reference["events_per_s"]
    print(f"\nceiling (64 x 1000, asyncio) / rawsse serve: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
