"""The load generator's own ceiling: how many events/s ``rawsse bench`` consumes on one core.

The server here costs (almost) nothing per event: a bare ``asyncio.Protocol`` that answers each
chat request with a response encoded once and cached (one realistic OpenAI chunk per chunked
chunk, ``data: [DONE]``, the last chunk), written with one ``transport.write``. It runs in its
own process pinned to one CPU; ``rawsse bench`` runs pinned to the other. Whatever events/s
bench reports is then bench's own limit, not the server's. For scale, the same run measures real
servers pinned the same way with the same bench settings: their events/s per core, which the
ceiling must exceed by far (3x at least) for bench's figures to be about the server.

Run: ``python benchmarks/client_ceiling.py [--quick] [--repeat N]``; prints markdown tables.
Needs 2 CPUs (server on CPU 1, bench on CPU 0). The servers for scale: rawsse's burst app (the
streams benchmark's server: ``benchmarks/peers/rawsse_app.py``, rawsse's fastest per core),
rawsse's demo (the chat path), the Python floor and Node's ``http`` (``benchmarks/peers/``,
when ``node`` is installed), each with the same stream shapes, so each ratio compares like
with like. The last table is the verdict: per shape, the ceiling's events per bench CPU second
over the fastest server's events per server CPU second, which must be 3x at least.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
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


class _ByBody(dict[bytes, bytes]):
    """Responses by request body: bench sends one body over and over, so after the first
    request the server's per-request work is a dict lookup (a short-stream ceiling measures
    the client, not the JSON parsing of this server)."""

    def __missing__(self, body: bytes) -> bytes:
        tokens = int(json.loads(body).get("max_tokens", 16)) if body else 16
        self[body] = RESPONSES[tokens]
        return self[body]


BY_BODY = _ByBody()


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
            assert self.transport is not None
            self.transport.write(BY_BODY[body])


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
    if " listening on " not in line:
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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bench(url: str, streams: int, duration_s: float, *extra: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "rawsse", "bench", url, "--streams", str(streams),
        "--duration", str(duration_s), "--timeout", "10", "--cpu", str(BENCH_CPU), "--json",
        "--no-progress", *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, cwd=REPO, timeout=300, check=False)
    if not done.stdout:
        raise RuntimeError(done.stderr.decode())
    result: dict[str, Any] = json.loads(done.stdout)
    if not result["completed"]:
        raise RuntimeError(f"{url}: {result['error_samples']}")
    return result


# (label, streams, tokens per request): the stream shapes measured for every server (the
# streams benchmark's burst is 64 and 512 streams x 200 events).
SHAPES = [
    ("64 streams x 200 tokens", 64, 200),
    ("512 streams x 200 tokens", 512, 200),
    ("64 streams x 16 tokens", 64, 16),
]
TARGET = 3.0  # the ceiling over the fastest server, per core
DURATION_S = 3.0  # per run; a server that stalls costs a run its figures, not the whole script


def _servers() -> list[tuple[str, list[str], str, tuple[str, ...]]]:
    """(name, command, path template, bench options) of the servers measured for scale."""
    peers = [
        (
            "`rawsse serve` burst app (benchmarks/peers/rawsse_app.py)",
            [sys.executable, "-m", "rawsse", "serve", "benchmarks.peers.rawsse_app:app",
             "--port", "0", "--no-access-log", "--log-level", "warning"],
            "/stream?n={tokens}",
            ("--data", "{}", "--terminal", "[DONE]"),
        ),
        (
            "`rawsse serve` demo (lorem, token delay 0)",
            [sys.executable, "-m", "rawsse", "serve", "--port", "0", "--token-delay", "0",
             "--no-access-log"],
            "/v1/chat/completions",
            (),
        ),
        (
            "Python floor (bare asyncio.Protocol, benchmarks/peers/floor.py)",
            [sys.executable, "-m", "benchmarks.peers.floor", "--port", "0"],
            "/stream?n={tokens}",
            ("--data", "{}", "--terminal", "[DONE]"),
        ),
    ]  # fmt: skip
    if shutil.which("node"):
        peers.append(
            (
                "Node http (benchmarks/peers/node_peer.js)",
                ["node", os.path.join(REPO, "benchmarks", "peers", "node_peer.js"), "0"],
                "/stream?n={tokens}",
                ("--data", "{}", "--terminal", "[DONE]"),
            )
        )
    return peers


def _measure(
    command: list[str],
    path: str,
    extra: tuple[str, ...],
    scale: int,
    backends: list[str],
    repeat: int,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Best of ``repeat`` runs per shape and backend: on a shared machine the best run is the
    one least disturbed by other work, for the ceiling and for the servers alike. Each best
    result also keeps every run's ``(events/s, events per bench CPU s, events per server CPU
    s)`` in ``runs``, for the verdict's worst case."""
    results: dict[tuple[str, str], dict[str, Any]] = {}
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    proc, url = _start(command)
    try:
        for _ in range(repeat):
            for label, streams, tokens in SHAPES:
                duration_s = DURATION_S / scale
                for backend in backends:
                    target = url + path.format(tokens=tokens)
                    options = ("--max-tokens", str(tokens), "--backend", backend, *extra)
                    cpu0 = _cpu_s(proc.pid)
                    result = _bench(target, streams, duration_s, *options)
                    # The server's CPU over the bench process's life: outside the run it idles,
                    # so this is its CPU for the run.
                    result["server_cpu_s"] = server_cpu_s = _cpu_s(proc.pid) - cpu0
                    per_server_cpu = result["events"] / server_cpu_s if server_cpu_s else 0.0
                    runs.setdefault((label, backend), []).append(
                        (result["events_per_s"], result["events_per_cpu_s"], per_server_cpu)
                    )
                    print(
                        f"{command[-1]} {label} {backend} {extra}: "
                        f"{result['events_per_s']:,.0f} events/s, "
                        f"{result['events_per_cpu_s']:,.0f} per bench CPU s, "
                        f"server CPU {result['server_cpu_s']:.2f} s, {result['errors']} failed",
                        file=sys.stderr,
                    )
                    best = results.get((label, backend))
                    if best is None or result["events_per_s"] > best["events_per_s"]:
                        results[label, backend] = result
                    results[label, backend]["runs"] = runs[label, backend]
    finally:
        _stop(proc)
    return results


def _verdict(
    ceiling: dict[tuple[str, str], dict[str, Any]],
    servers: list[tuple[str, dict[tuple[str, str], dict[str, Any]]]],
) -> None:
    """Per shape: the ceiling per bench CPU second (asyncio: every run, low to high) over the
    fastest server per server CPU second (its best run): the target's ratio, worst case too."""
    print(f"\nVerdict (target: the ceiling at least {TARGET:g}x the fastest server per core):\n")
    print(
        "| stream shape | ceiling per bench CPU s (asyncio runs) | fastest server per core "
        "(best run) | ratio (worst ceiling run) | ratio (best) | met |"
    )
    print("|---|---|---|---:|---:|---|")
    for label, _, _ in SHAPES:
        top = sorted(run[1] for run in ceiling[label, "asyncio"]["runs"])
        fastest, name = max(
            (max(run[2] for run in results[label, "auto"]["runs"]), name)
            for name, results in servers
        )
        worst, best = top[0] / fastest, top[-1] / fastest
        print(
            f"| {label} | {' / '.join(f'{x / 1e6:.2f}M' for x in top)} | "
            f"{fastest:,.0f} ({name}) | {worst:.1f}x | {best:.1f}x | "
            f"{'yes' if worst >= TARGET else 'no'} |"
        )


def _share(result: dict[str, Any]) -> float:
    """The bench process's CPU seconds per second of the run."""
    return float(result["cpu_s"]) / float(result["duration_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    if len(os.sched_getaffinity(0)) < 2:
        print("needs 2 CPUs", file=sys.stderr)
        return 1
    scale = 4 if args.quick else 1
    backends = ["asyncio", "uvloop", "trio"]
    own = [sys.executable, os.path.abspath(__file__), "--serve"]
    repeat = args.repeat
    ceiling = _measure(own, "/v1/chat/completions", (), scale, backends, repeat)
    checked = _measure(own, "/v1/chat/completions", ("--check",), scale, ["asyncio"], repeat)
    servers = [
        (name, _measure(command, path, extra, scale, ["auto"], repeat))
        for name, command, path, extra in _servers()
    ]
    print(
        f"# rawsse bench: the client's ceiling ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})\n"
    )
    print("Ceiling: bench (CPU 0) against pre-encoded frames written as fast as possible (CPU 1).")
    print("Events/s include the role, finish and [DONE] frames. Bench CPU share = its CPU seconds")
    print("/ run seconds (below 1.0: it waited, for the server or for a core shared with other")
    print("work); events per CPU s = events / its CPU seconds, its cost whatever the machine did.")
    print(f"Each figure is the best of {repeat} runs (by events/s).\n")
    print(
        "| stream shape | backend | events/s | bench CPU share | events per CPU s "
        "| ceiling server CPU share | MB/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (label, backend), result in [*ceiling.items(), *checked.items()]:
        name = backend + (" --check" if result in checked.values() else "")
        print(
            f"| {label} | {name} | {result['events_per_s']:,.0f} | {_share(result):.2f} | "
            f"{result['events_per_cpu_s']:,.0f} | "
            f"{result['server_cpu_s'] / result['duration_s']:.2f} | {result['mb_per_s']:.1f} |"
        )
    print("\nServers, one core each, measured by the same bench (default backend). Server CPU")
    print("share near 1.0 means the server was the limit; its events per CPU s is its cost per")
    print("core. Ratios: the ceiling of the same shape (asyncio) over the server, by events/s and")
    print("by events per CPU s (bench's own over the server's):\n")
    print(
        "| server | stream shape | events/s | server CPU share | server events per CPU s "
        "| failed | ceiling / server (events/s) | ceiling / server (per CPU s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, results in servers:
        for (label, _), result in results.items():
            top = ceiling[label, "asyncio"]
            server_share = result["server_cpu_s"] / result["duration_s"]
            per_cpu = result["events"] / result["server_cpu_s"] if result["server_cpu_s"] else 0
            ratio = top["events_per_s"] / result["events_per_s"]
            cpu_ratio = top["events_per_cpu_s"] / per_cpu if per_cpu else float("nan")
            print(
                f"| {name} | {label} | {result['events_per_s']:,.0f} | {server_share:.2f} | "
                f"{per_cpu:,.0f} | {result['errors']} | {ratio:.1f}x | {cpu_ratio:.1f}x |"
            )
    _verdict(ceiling, servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
