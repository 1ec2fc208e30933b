"""This tree against another rawsse checkout, side by side in one run: no speed or memory
regression on the hot paths.

    git worktree add /tmp/base <commit>
    python -m benchmarks.ab --against /tmp/base            # 3 interleaved repeats
    python -m benchmarks.ab --against /tmp/base --quick    # 1 repeat, shorter runs

Each checkout serves its own ``benchmarks/peers/rawsse_app.py`` (``python -P -m rawsse serve``
with only that checkout on ``PYTHONPATH``), pinned to CPU 0; the clients (this tree's
``benchmarks/loadgen.py``, and wrk) run pinned to CPU 1. Servers alternate within each repeat
(this, base, this, base ...), on asyncio and on trio:

- ``burst``: events per server CPU-second, 64 and 512 concurrent streams of 200 events;
- ``plain``: ``GET /plain`` keep-alive requests per second with ``wrk -t1 -c64`` (and per
  server CPU-second);
- ``rss``: KiB of server RSS per held idle stream at 5,000 streams (heartbeats on);
- ``instr``: user-space instructions per plain request and per burst event, counted by
  valgrind's callgrind (``apt-get install valgrind``) on a server that answers 8 connections x
  50 and then x 300 plain requests (8 x 10 and x 40 streams of 200 events), the difference
  divided by the extra work: deterministic where the timings above swing with the machine's
  load, though it leaves out the kernel's share (the same syscalls on both sides).

Prints a markdown table of medians and ``this / base`` ratios, and the spread of the repeats
(the run-to-run noise to read the ratios against). Writes ``benchmarks/results/ab.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.http_wrk import wrk


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def server_peer(name: str, tree: Path, backend: str) -> tuple[h.Peer, dict[str, str]]:
    """The rawsse of ``tree`` on ``backend``, and the environment that selects that tree."""
    cmd = (
        h.PY,
        "-P",
        "-m",
        "rawsse",
        "serve",
        "benchmarks.peers.rawsse_app:app",
        "--port",
        "{port}",
        "--no-access-log",
        "--log-level",
        "warning",
        "--backend",
        backend,
    )
    return h.Peer(name, cmd, f"rawsse from {tree} ({backend})"), {"PYTHONPATH": str(tree)}


def _client(request: bytes, end: bytes) -> Any:
    """A load: ``conns`` connections each sending ``request`` ``per`` times, one at a time,
    reading each answer up to ``end``."""

    def load(port: int, conns: int, per: int) -> None:
        def one() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                for _ in range(per):
                    sock.sendall(request)
                    data = b""
                    while not data.endswith(end):
                        data += sock.recv(1 << 20)

        _in_threads(one, conns)

    return load


_plain_client = _client(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n", b"hello, world\n")
_stream_client = _client(
    b"POST /stream?n=200&delay=0 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    b"\r\n0\r\n\r\n",
)


def _in_threads(target: Any, count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def callgrind_instructions(tree: Path, backend: str, load: Any, per: int) -> int:
    """Instructions (callgrind's total Ir) of a server of ``tree`` that served ``load``."""
    port = h.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                os.path.realpath(sys.executable),
                "-P",
                "-m",
                "rawsse",
                "serve",
                "benchmarks.peers.rawsse_app:app",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--backend",
                backend,
            ],
            cwd=h.ROOT,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the server under valgrind did not start") from None
                    time.sleep(0.2)
            load(port, 8, 2)  # warm-up: first-request caches
            load(port, 8, per)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no instruction total in callgrind's output")


def instructions(tree: Path, backend: str) -> tuple[float, float]:
    """(instructions per plain request, per burst event) of ``tree`` on ``backend``."""
    plain = (
        callgrind_instructions(tree, backend, _plain_client, 300)
        - callgrind_instructions(tree, backend, _plain_client, 50)
    ) / (8 * 250)
    burst = (
        callgrind_instructions(tree, backend, _stream_client, 40)
        - callgrind_instructions(tree, backend, _stream_client, 10)
    ) / (8 * 30 * 200)
    return plain, burst


def spread(values: list[float]) -> str:
    """max / min of the repeats, as the run-to-run noise."""
    good = [v for v in values if v]
    if len(good) < 2:
        return "-"
    return f"{max(good) / min(good):.2f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--against", required=True, type=Path, help="the other checkout")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--backends", default="asyncio,trio")
    parser.add_argument("--only", default="burst,plain,rss", help="from burst, plain, rss, instr")
    parser.add_argument("--out", default=str(h.RESULTS / "ab"))
    args = parser.parse_args(argv)
    only = args.only.split(",")
    if "plain" in only and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if "instr" in only and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    h.install_cleanup()
    repeat = args.repeat or (1 if args.quick else 3)
    burst_s = 2.0 if args.quick else 4.0
    plain_s = 3.0 if args.quick else 5.0
    held = 5000
    trees = {"this": h.ROOT, "base": args.against.resolve()}
    started = time.monotonic()
    load_before = h.loadavg()
    runs: dict[str, dict[str, list[float]]] = {}
    try:
        for rep in range(repeat):
            for backend in args.backends.split(","):
                for side, tree in trees.items():
                    key = f"{side}-{backend}"
                    peer, env = server_peer(key, tree, backend)
                    row = runs.setdefault(key, {})
                    with h.running(peer, extra_env=env) as server:
                        if "burst" in only:
                            for streams in (64, 512):
                                r = h.run_burst(server, streams=streams, duration_s=burst_s)
                                per_cpu = (
                                    r["events_per_s"] / r["server_cpu"]
                                    if r.get("server_cpu")
                                    else 0.0
                                )
                                row.setdefault(f"burst{streams}", []).append(per_cpu)
                                log(
                                    f"[{rep + 1}/{repeat}] {key:13} burst @{streams}: "
                                    f"{per_cpu:>10,.0f} events/CPU-s (cpu {r['server_cpu']},"
                                    f" errors {r['errors']})"
                                )
                        if "plain" in only:
                            wrk(server.base + "/plain", 64, 1.0)  # warm-up
                            cpu0, t0 = server.cpu_seconds(), time.monotonic()
                            r = wrk(server.base + "/plain", 64, plain_s)
                            cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                            row.setdefault("plain", []).append(r["requests_per_s"])
                            row.setdefault("plain_cpu", []).append(
                                r["requests_per_s"] / cpu if cpu else 0.0
                            )
                            log(
                                f"[{rep + 1}/{repeat}] {key:13} plain: "
                                f"{r['requests_per_s']:>10,.0f} req/s (cpu {cpu:.2f})"
                            )
                    if "instr" in only:
                        plain, burst = instructions(tree, backend)
                        row.setdefault("instr_plain", []).append(plain)
                        row.setdefault("instr_burst", []).append(burst)
                        log(
                            f"[{rep + 1}/{repeat}] {key:13} instructions: {plain:,.0f} per "
                            f"plain request, {burst:,.0f} per burst event"
                        )
                    if "rss" in only:
                        with h.running(peer, extra_env=env) as server:
                            r = h.hold_streams(
                                server,
                                streams=held,
                                hold_for_s=2.0,
                                hb_s=15.0,
                                timeout_s=120.0 + held / 100,
                            )
                        row.setdefault("rss", []).append(r.get("kib_per_stream") or 0.0)
                        log(
                            f"[{rep + 1}/{repeat}] {key:13} rss @{held}: "
                            f"{r.get('kib_per_stream')} KiB/stream (held {r.get('held')})"
                        )
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        raise SystemExit(130) from None
    metrics = [
        ("burst64", "burst events / server CPU-s @64", 0),
        ("burst512", "burst events / server CPU-s @512", 0),
        ("plain", "plain requests/s (wrk -c64)", 0),
        ("plain_cpu", "plain requests / server CPU-s", 0),
        ("rss", f"KiB per held stream @{held:,}", 2),
        ("instr_plain", "instructions per plain request (callgrind)", 0),
        ("instr_burst", "instructions per burst event (callgrind)", 0),
    ]
    lines = [
        f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}, {repeat} repeat(s); "
        f"this tree {h.ROOT} vs {trees['base']}. Load average before {load_before}, "
        f"after {h.loadavg()}; {round((time.monotonic() - started) / 60, 1)} min.",
        "",
        "| backend | measure | this | base | this / base | spread this | spread base |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend in args.backends.split(","):
        this, base = runs.get(f"this-{backend}", {}), runs.get(f"base-{backend}", {})
        for key, label, digits in metrics:
            if key not in this:
                continue
            a, b = h.median(this[key]), h.median(base.get(key, []))
            lines.append(
                f"| {backend} | {label} | {h.fmt(a, digits)} | {h.fmt(b, digits)} | "
                f"{h.ratio(a, b)} | {spread(this[key])} | {spread(base.get(key, []))} |"
            )
    text = "\n".join(lines)
    print(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"date": h.DATE, "runs": runs, "report": text}, f, indent=1)


if __name__ == "__main__":
    main()
