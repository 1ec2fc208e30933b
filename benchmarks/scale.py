"""Scale-out on Redis: the shared replay store and broadcast bus beside the in-process ones.

    python -m benchmarks.scale            # 3 repeats of 5 s; 200 resumes; 20 publishes
    python -m benchmarks.scale --quick    # 1 repeat of 2 s; 100 resumes; 10 publishes

Starts its own ``redis-server`` (Debian's; persistence off, ``maxmemory-policy noeviction``) on a
free port, pinned beside the load client. Three measurements, side by side in one run:

1. **Chat path** events/s at 64 and 512 streams (``benchmarks/loadgen.py`` on
   ``POST /v1/chat/completions``, ``lorem``, 200 tokens, no delay): ``rawsse serve`` with the
   in-memory replay store vs with ``--redis URL``. Redis round trips per event: the script calls
   Redis counted (``INFO commandstats``) over the events the server sent.
2. **Resume latency**, request to the first replayed byte, of finished streams resumed from
   ``Last-Event-ID: 10``, one at a time: the in-memory store (same process), the Redis store on
   the process that produced them, and on another process.
3. **Broadcast**: 5,000 subscribers, half on each of two ``rawsse serve`` processes sharing
   Redis; one publish (on the first): the time until the last subscriber has it, p50/p99 over
   the publishes; beside one process holding all 5,000 with the in-process ``Broadcast``.

Servers pinned to CPU 0, Redis and the clients to CPU 1. Writes ``benchmarks/results/scale.md``
(and ``.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import harness as h

BODY = json.dumps({"model": "lorem", "stream": True, "max_tokens": 200,
                   "messages": [{"role": "user", "content": "Write me something long."}]})
SERVE = (h.PY, "-m", "rawsse", "serve", "--port", "{port}", "--token-delay", "0",
         "--no-access-log", "--log-level", "warning")
BROADCAST_APP = "benchmarks.scale:broadcast_app"
SUBSCRIBERS = 5000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the app the broadcast measurement serves ------------------------------------------------


def broadcast_app() -> Any:
    """One channel: ``GET /events`` subscribes, ``POST /publish`` publishes the body's text,
    ``GET /subscribers`` counts this process's subscribers. On Redis when RAWSSE_REDIS_URL is
    set, in the process otherwise."""
    from rawsse.app import App
    from rawsse.broadcast import Broadcast
    from rawsse.response import Response

    bus = None
    if os.environ.get("RAWSSE_REDIS_URL"):
        from rawsse.redis import RedisBus

        bus = RedisBus.shared()
    news = Broadcast(channel="news", bus=bus) if bus is not None else Broadcast()
    app = App()

    @app.get("/events")
    async def events(request: Any) -> Any:
        return news.subscribe(heartbeat_s=0)

    @app.post("/publish")
    async def publish(request: Any) -> Any:
        return Response(f"{news.publish(request.body.decode())}\n")

    @app.get("/subscribers")
    async def subscribers(request: Any) -> Any:
        return Response(f"{news.subscriber_count}\n")

    return app


# -- redis-server --------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        raise SystemExit("benchmarks.scale needs redis-server (apt-get install redis-server)")
    port = h.free_port()
    with tempfile.TemporaryDirectory(prefix="rawsse-bench-redis-") as workdir:
        proc = subprocess.Popen(
            ["taskset", "-c", str(h.CLIENT_CPU), binary, "--port", str(port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
             "--dir", workdir, "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if redis_command(port, "PING") == "PONG":
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def redis_command(port: int, *args: str) -> Any:
    """One command over a fresh connection (bulk and simple replies only)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n")
        if head[:1] == b"+":
            return head[1:].decode()
        if head[:1] == b"$":
            size = int(head[1:])
            while len(rest) < size:
                rest += sock.recv(65536)
            return rest[:size].decode()
        raise RuntimeError(f"unexpected reply {head!r}")


def script_calls(url: str) -> int:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    stats = redis_command(port, "INFO", "commandstats")
    return sum(int(m) for m in re.findall(r"cmdstat_evalsha:calls=(\d+)", stats)) + sum(
        int(m) for m in re.findall(r"cmdstat_eval:calls=(\d+)", stats))


def _metric(port: int, name: str) -> int:
    raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    match = re.search(rb"^" + name.encode() + rb" (\d+)", data, re.M)
    return int(match.group(1)) if match else 0


def events_sent(port: int) -> int:
    """The server's ``rawsse_events_total``."""
    return _metric(port, "rawsse_events_total")


def replay_errors(port: int) -> int:
    """The server's ``rawsse_replay_errors_total`` (appends it dropped)."""
    return _metric(port, "rawsse_replay_errors_total")


# -- 1. the chat path ----------------------------------------------------------------------


def chat_path(url: str, conc: list[int], repeat: int, duration: float) -> dict[str, Any]:
    peers = {
        "in-memory": h.Peer("in-memory", SERVE, "rawsse serve, in-memory replay store"),
        "redis": h.Peer("redis", (*SERVE, "--redis", url), "rawsse serve --redis URL"),
    }
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in conc} for n in peers}
    for rep in range(repeat):
        for name, peer in peers.items():
            with h.running(peer) as server:
                target = f"{server.base}/v1/chat/completions"
                for c in conc:
                    calls0, events0 = script_calls(url), events_sent(server.port)
                    dropped0 = replay_errors(server.port)
                    cpu0, t0 = server.cpu_seconds(), time.monotonic()
                    r = h.loadgen(["run", target, "--streams", str(c), "--duration",
                                   str(duration), "--warmup", "1", "--body", BODY],
                                  timeout_s=duration + 60)
                    elapsed = time.monotonic() - t0
                    r["server_cpu"] = round((server.cpu_seconds() - cpu0) / elapsed, 3)
                    # Script calls (one per batch) over the events the server sent meanwhile.
                    calls = script_calls(url) - calls0
                    sent = events_sent(server.port) - events0
                    r["round_trips_per_event"] = (
                        calls / sent if name == "redis" and sent else None)
                    r["replay_errors"] = replay_errors(server.port) - dropped0
                    runs[name][c].append(r)
                    log(f"[{rep + 1}/{repeat}] {name:9} {c:4} streams: "
                        f"{r['events_per_s']:>9,.0f} ev/s, cpu {r['server_cpu']}, "
                        f"round trips/event {r['round_trips_per_event']}, "
                        f"dropped {r['replay_errors']}")
    return runs


# -- 2. resume latency ---------------------------------------------------------------------


def _post(port: int, body: str) -> str:
    """POST a streaming chat request; read it whole; return its stream id."""
    raw = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    match = re.search(rb"x-rawsse-stream-id: (\S+)", data)
    assert match, data[:300]
    return match.group(1).decode()


def _resume_ms(port: int, stream_id: str) -> float:
    """Milliseconds from sending a resume request to the first byte of the first event."""
    raw = (f"GET /v1/chat/completions/{stream_id}/events HTTP/1.1\r\nHost: x\r\n"
           "Last-Event-ID: 10\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        t0 = time.perf_counter()
        sock.sendall(raw)
        data = b""
        while b"data: " not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"resume ended early: {data[:300]!r}")
            data += chunk
        elapsed = time.perf_counter() - t0
        assert b" 200 " in data.split(b"\r\n", 1)[0], data[:200]
        while sock.recv(65536):
            pass
    return elapsed * 1000


def resume_latency(url: str, samples: int) -> dict[str, list[float]]:
    body = json.dumps({"model": "lorem", "stream": True, "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hi"}]})
    out: dict[str, list[float]] = {}
    memory = h.Peer("in-memory", SERVE, "")
    with h.running(memory) as server:
        ids = [_post(server.port, body) for _ in range(samples)]
        out["in-memory, same process"] = [_resume_ms(server.port, i) for i in ids]
    redis = h.Peer("redis", (*SERVE, "--redis", url), "")
    with h.running(redis) as a, h.running(redis) as b:
        ids = [_post(a.port, body) for _ in range(samples)]
        time.sleep(0.5)  # the last batches reach Redis
        same, other = [], []
        for stream_id in ids:  # interleaved, so both see the same machine
            same.append(_resume_ms(a.port, stream_id))
            other.append(_resume_ms(b.port, stream_id))
        out["redis, same process"] = same
        out["redis, other process"] = other
    return out


# -- 3. broadcast to 5,000 subscribers -----------------------------------------------------


async def _subscribers(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /subscribers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return int(data.rsplit(b"\r\n\r\n", 1)[1])


class _Subscriber(asyncio.Protocol):
    def __init__(self, clock: dict[str, Any]) -> None:
        self.clock = clock
        self.head = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        marker = self.clock["marker"]
        if marker is not None and marker in data:
            self.clock["arrivals"].append(time.perf_counter())
        if not self.head and b"\r\n\r\n" in data:
            self.head = True
            self.clock["subscribed"] += 1


async def _broadcast_rounds(ports: list[int], publishes: int) -> list[float]:
    loop = asyncio.get_running_loop()
    clock: dict[str, Any] = {"marker": None, "arrivals": [], "subscribed": 0}
    transports = []
    for k in range(SUBSCRIBERS):
        port = ports[k % len(ports)]
        transport, _ = await loop.create_connection(lambda: _Subscriber(clock), "127.0.0.1",
                                                    port)
        transports.append(transport)
        if k % 200 == 199:
            await asyncio.sleep(0.01)
    deadline = time.monotonic() + 120
    while sum([await _subscribers(port) for port in ports]) < SUBSCRIBERS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {clock['subscribed']} subscribers got their head")
        await asyncio.sleep(0.1)
    results = []
    for n in range(publishes):
        marker = f"round-{n}-".encode()
        clock["marker"] = marker
        clock["arrivals"] = []
        _, writer = await asyncio.open_connection("127.0.0.1", ports[0])
        body = marker + b"x" * 64
        t0 = time.perf_counter()
        writer.write(b"POST /publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 60
        while len(clock["arrivals"]) < SUBSCRIBERS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"round {n}: {len(clock['arrivals'])} of {SUBSCRIBERS}")
            await asyncio.sleep(0.001)
        results.append((max(clock["arrivals"]) - t0) * 1000)
        writer.close()
        await asyncio.sleep(0.2)
    for transport in transports:
        transport.close()
    return results


def broadcast(url: str, publishes: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    app = (h.PY, "-m", "rawsse", "serve", BROADCAST_APP, "--port", "{port}", "--no-access-log",
           "--log-level", "warning", "--max-connections", "0")
    with h.running(h.Peer("in-process", app, "")) as one:
        out["in-process Broadcast, 1 process"] = _run_client([one.port], publishes)
    shared = h.Peer("redis", (*app, "--redis", url), "")
    with h.running(shared, extra_env={"RAWSSE_REDIS_URL": url}) as a, \
            h.running(shared, extra_env={"RAWSSE_REDIS_URL": url}) as b:
        out["Broadcast on Redis, 2 processes"] = _run_client([a.port, b.port], publishes)
    return out


def _run_client(ports: list[int], publishes: int) -> list[float]:
    cmd = ["taskset", "-c", str(h.CLIENT_CPU), h.PY, "-m", "benchmarks.scale",
           "--subscribe-client", ",".join(map(str, ports)), "--publishes", str(publishes)]
    out = subprocess.run(cmd, cwd=h.ROOT, capture_output=True, timeout=600, check=False,
                         env={**os.environ, "PYTHONPATH": str(h.ROOT)})
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("[")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"subscriber client failed: {out.stderr.decode()[-2000:]}")
    return json.loads(lines[-1])


# -- the report ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--streams", default="64,512")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--publishes", type=int, default=None)
    parser.add_argument("--subscribe-client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(h.RESULTS / "scale"))
    args = parser.parse_args(argv)
    if args.subscribe_client:
        h.install_cleanup()
        ports = [int(p) for p in args.subscribe_client.split(",")]
        print(json.dumps(asyncio.run(_broadcast_rounds(ports, args.publishes))), flush=True)
        return
    h.install_cleanup()
    conc = [int(x) for x in args.streams.split(",")]
    repeat = args.repeat or (1 if args.quick else 3)
    duration = 2.0 if args.quick else 5.0
    samples = 100 if args.quick else 200
    publishes = args.publishes or (10 if args.quick else 20)
    load_before = h.loadavg()
    context = h.context_line()
    started = time.monotonic()
    with redis_server() as url:
        chat = chat_path(url, conc, repeat, duration)
        log("resume latency ...")
        resume = resume_latency(url, samples)
        log("broadcast ...")
        fanout = broadcast(url, publishes)
    load_after = h.loadavg()

    header = ["replay store"]
    for c in conc:
        header += [f"events/s @{c}", "x in-memory", f"server CPU @{c}"]
    header += ["Redis round trips per event", "appends dropped"]
    rows = []
    med = {n: {c: h.median([r["events_per_s"] for r in chat[n][c]]) for c in conc} for n in chat}
    for name in chat:
        cells = [name]
        for c in conc:
            cpu = h.median([r["server_cpu"] for r in chat[name][c]])
            cells += [h.fmt(med[name][c]), h.ratio(med[name][c], med["in-memory"][c]),
                      h.fmt(cpu, 2)]
        trips = [r["round_trips_per_event"] for c in conc for r in chat[name][c]
                 if r["round_trips_per_event"] is not None]
        cells.append(", ".join(f"1 per {1 / t:,.0f}" for t in trips if t) if trips else "—")
        cells.append(str(sum(r.get("replay_errors", 0) for c in conc for r in chat[name][c])))
        rows.append(cells)
    resume_rows = [[name, h.fmt(pct(v, 0.5), 2), h.fmt(pct(v, 0.99), 2), str(len(v))]
                   for name, v in resume.items()]
    fanout_rows = [[name, h.fmt(pct(v, 0.5), 1), h.fmt(pct(v, 0.99), 1), str(len(v))]
                   for name, v in fanout.items()]
    every = "; ".join(f"{n} @{c}: " + ", ".join(h.fmt(r["events_per_s"]) for r in chat[n][c])
                      for n in chat for c in conc)
    md = [
        f"## Scale-out on Redis (`python -m benchmarks.scale{' --quick' if args.quick else ''}`)",
        "",
        f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: "
        f"{h.machine_line()} redis-server (persistence off) pinned with the clients to CPU "
        f"{h.CLIENT_CPU}. {context} Load average before/after: {' '.join(load_before)} / "
        f"{' '.join(load_after)}.",
        "",
        f"### Chat path (`lorem`, 200 tokens, no delay; medians of {repeat} interleaved run(s) "
        f"of {duration:g} s)",
        "",
        h.markdown_table(header, rows),
        "",
        f"Every run (events/s): {every}.",
        "",
        f"### Resume latency: request to first replayed byte ({samples} finished streams, "
        "`Last-Event-ID: 10`, one at a time)",
        "",
        h.markdown_table(["where", "p50 (ms)", "p99 (ms)", "samples"], resume_rows),
        "",
        f"### Broadcast: one publish to {SUBSCRIBERS:,} subscribers, time to the last delivery",
        "",
        h.markdown_table(["setup", "p50 (ms)", "p99 (ms)", "publishes"], fanout_rows),
        "",
        f"Total run time {(time.monotonic() - started) / 60:.1f} min.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(
        {"date": h.DATE, "machine": h.machine_line(), "chat": {
            n: {str(c): v for c, v in d.items()} for n, d in chat.items()},
         "resume_ms": resume, "broadcast_ms": fanout,
         "resume_summary": {k: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)}
                            for k, v in resume.items()}}, indent=1))
    log(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
