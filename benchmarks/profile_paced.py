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
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.paced import CONFIGS, RATE


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
                        [
                            "run",
                            url,
                            "--streams",
                            str(streams),
                            "--duration",
                            str(seconds + 1),
                            "--warmup",
                            str(warmup),
                            "--ramp",
                            "1",
                        ],
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
    args = parser.parse_args(argv)
    h.install_cleanup()
    for config in args.configs.split(","):
        if config not in CONFIGS:
            sys.exit(f"unknown config {config}")
        profile(config, args.streams, args.seconds, args.rate, args.top)


if __name__ == "__main__":
    main()
