"""Where a paced config's server time goes: py-spy on the server under a fixed paced load.

    python -m benchmarks.profile_paced rawsse-engine --streams 1500 --seconds 8
    python -m benchmarks.profile_paced floor,rawsse,rawsse-sleep --streams 2000

For each config (see ``benchmarks/paced.py``): a fresh server pinned to CPU 0, N streams at
25 events/s from ``benchmarks/loadgen.py`` on CPU 1, and ``py-spy record --format raw`` on the
server for ``--seconds`` after the warm-up (``pip install py-spy``; needs ptrace rights). Prints
the server's CPU share, the events/s delivered, server CPU microseconds per event, and the
functions with the most self and inclusive samples (shares of the samples taken, which are
the server's busy time: py-spy skips idle samples; a syscall's time counts in its caller).
Raw profiles go to ``benchmarks/results/profiles/CONFIG-N.txt`` (collapsed stacks).

    python -m benchmarks.profile_paced floor,rawsse-asyncio,rawsse --callgrind --streams 200

``--callgrind``: instructions per event instead of samples, the same on a quiet machine and a
busy one (what timing cannot be here). The server runs under ``valgrind --tool=callgrind`` with
instrumentation off, switched on for ``--seconds`` after a warm-up; an event is one call of
orjson's ``dumps`` (every peer encodes each event with exactly one), so Ir per event compares
configs that coalesce sends and configs that do not. Under valgrind a server is ~50x slower:
200 streams saturate it, so every config is measured in the regime that decides capacity (the
loop always busy, many events per wake-up). Only user-space instructions are counted (the
kernel's share of a ``send`` is the same one call per event for every config). The callgrind
files go to ``benchmarks/results/profiles/CONFIG-N.callgrind*`` (``callgrind_annotate`` reads
them).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.paced import CONFIGS, RATE, run_args


def summarise(path: Path, top: int) -> list[str]:
    """Top self and inclusive frames of a collapsed-stack file."""
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"  {total} samples", "  self:"]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in self_n.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top * 2)]
    return out


def profile(config: str, streams: int, seconds: float, rate_hz: int, top: int) -> dict[str, Any]:
    peer, path = CONFIGS[config]
    delay = 1.0 / RATE
    warmup = 3.0
    n = int((warmup + seconds + 10) * RATE)
    outdir = h.RESULTS / "profiles"
    outdir.mkdir(exist_ok=True)
    raw = outdir / f"{config}-{streams}.txt"
    with h.running(h.PEERS[peer]) as server:
        url = f"{server.base}{path}?n={n}&delay={delay}"
        result: dict[str, Any] = {}

        def load() -> None:
            with contextlib.suppress(RuntimeError):
                result.update(
                    h.loadgen(
                        run_args(url, streams, seconds + 1, warmup, 1),
                        timeout_s=seconds + warmup + 120,
                    )
                )

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(warmup)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        pid = max(h.tree_pids(server.proc.pid))  # the python process under taskset
        subprocess.run(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(rate_hz),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            capture_output=True,
            timeout=seconds + 60,
            check=False,
        )
        cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        loader.join()
    ev = result.get("events_per_s") or 0.0
    lines = [
        f"{config} @ {streams} streams: {ev:,.0f} events/s "
        f"({ev / (streams * RATE):.1%} of nominal), "
        f"gap p99 {result.get('gap_ms', {}).get('p99')}"
        f" ms, server CPU {cpu:.2f}, {1e6 * cpu / ev if ev else 0:.1f} us of server CPU per "
        f"event"
    ]
    if raw.exists():
        lines += summarise(raw, top)
    print("\n".join(lines), flush=True)
    return {"events_per_s": ev, "server_cpu": cpu}


def callgrind_counts(path: str) -> dict[str, int]:
    """Total instructions and the calls of a few C functions in one callgrind dump."""
    names: dict[str, str] = {}
    callee = ""
    counts = {"Ir": 0, "events": 0, "sends": 0, "epoll_waits": 0}
    wanted = {"dumps": "events", "sock_send": "sends", "epoll_wait": "epoll_waits"}
    with open(path) as f:
        for line in f:
            if line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.strip())
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    callee = names.get(m.group(1), "")
            elif line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls=") and callee:
                key = wanted.get(callee)
                if key:
                    counts[key] += int(line.split("=", 1)[1].split()[0])
                callee = ""
            elif line.startswith(("summary:", "totals:")):
                counts["Ir"] = int(line.split()[1])
    return counts


def callgrind(config: str, streams: int, seconds: float) -> dict[str, Any]:
    """Instructions per event of one config's server, saturated under valgrind."""
    peer, path = CONFIGS[config]
    port = h.free_port()
    outdir = h.RESULTS / "profiles"
    outdir.mkdir(exist_ok=True)
    out = str(outdir / f"{config}-{streams}.callgrind")
    for old in glob.glob(out + "*"):
        os.remove(old)
    cmd = [
        "taskset",
        "-c",
        str(h.SERVER_CPU),
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *(a.replace("{port}", str(port)) for a in h.PEERS[peer].cmd),
    ]
    env = {**os.environ, "PYTHONPATH": str(h.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        cmd,
        cwd=h.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    warmup = 8.0
    result: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{config} under valgrind did not listen") from None
                time.sleep(0.2)
        n = int((warmup + seconds + 60) * RATE)
        url = f"http://127.0.0.1:{port}{path}?n={n}&delay={1.0 / RATE}"

        def load() -> None:
            with contextlib.suppress(RuntimeError):
                result.update(
                    h.loadgen(
                        run_args(url, streams, seconds, warmup, 2),
                        timeout_s=seconds + warmup + 300,
                    )
                )

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(warmup)
        pid = str(proc.pid)
        subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, timeout=60)
        time.sleep(seconds)
        subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, timeout=60)
        subprocess.run(["callgrind_control", "-d", pid], capture_output=True, timeout=120)
        loader.join()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
    if not dumps:
        raise RuntimeError(f"{config}: callgrind wrote no dump")
    c = callgrind_counts(dumps[0])
    per = c["Ir"] / c["events"] if c["events"] else 0.0
    print(
        f"{config} @ {streams} streams under callgrind: {c['events']:,} events in the window,"
        f" {c['sends']:,} sends, {c['epoll_waits']:,} epoll waits, {c['Ir']:,} Ir:"
        f" {per:,.0f} Ir per event ({c['events'] / max(c['epoll_waits'], 1):.0f} events per"
        f" wake-up; the client saw {result.get('events_per_s', 0):,.0f} events/s)",
        flush=True,
    )
    return {**c, "ir_per_event": per}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_paced",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("configs", help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--streams", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per event under valgrind (try --streams 200) instead of py-spy",
    )
    args = parser.parse_args(argv)
    h.install_cleanup()
    configs = args.configs.split(",")
    for config in configs:
        if config not in CONFIGS:
            sys.exit(f"unknown config {config}")
    per: dict[str, float] = {}
    for config in configs:
        if args.callgrind:
            per[config] = callgrind(config, args.streams, args.seconds)["ir_per_event"]
        else:
            profile(config, args.streams, args.seconds, args.rate, args.top)
    if per:
        floor = per.get("floor")
        for config, ir in per.items():
            ratio = f", {ir / floor:.2f}x the floor's" if floor and ir else ""
            print(f"  {config}: {ir:,.0f} Ir per event{ratio}")


if __name__ == "__main__":
    main()
