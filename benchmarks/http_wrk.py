"""Issue 3's HTTP benchmarks: plain request/response and chunked streaming, measured with wrk.

    python -m benchmarks.http_wrk            # 3 interleaved repeats of 5 s per point
    python -m benchmarks.http_wrk --quick    # 1 repeat of 3 s

Scenarios (wrk, Debian's package, pinned to CPU 1; the server pinned to CPU 0):
- ``plain``: ``GET /plain`` → 13-byte body with Content-Length; ``wrk -t1 -c64``; requests/s.
- ``chunked``: ``GET /chunked?size=4096&count=256`` → a 1 MiB body in 256 chunks of 4 KiB;
  ``wrk -t1 -c16``; MB/s of response bytes.

Servers: rawsse (asyncio, uvloop, trio), uvicorn with its h11 and its httptools protocol
serving a bare ASGI app (no framework: uvicorn's own cost), and the floor (bare
``asyncio.Protocol``). Targets (issue 3): plain requests/s ≥ 1.2x uvicorn-h11; chunked MB/s ≥
the floor's. Writes ``benchmarks/results/http.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from benchmarks import harness as h


def _uvicorn(http: str, loop: str) -> tuple[str, ...]:
    return (h.PY, "-m", "uvicorn", "benchmarks.peers.asgi_raw:app", "--host", "127.0.0.1",
            "--port", "{port}", "--http", http, "--loop", loop, "--no-access-log",
            "--log-level", "warning", "--backlog", "4096", "--lifespan", "off")


SERVERS: dict[str, h.Peer] = {
    "rawsse": h.PEERS["rawsse"],
    "rawsse-uvloop": h.PEERS["rawsse-uvloop"],
    "rawsse-trio": h.PEERS["rawsse-trio"],
    "uvicorn-h11": h.Peer("uvicorn-h11", _uvicorn("h11", "uvloop"),
                          "uvicorn --http h11 --loop uvloop, bare ASGI app"),
    "uvicorn-h11-asyncio": h.Peer("uvicorn-h11-asyncio", _uvicorn("h11", "asyncio"),
                                  "uvicorn --http h11 --loop asyncio, bare ASGI app"),
    "uvicorn-httptools": h.Peer("uvicorn-httptools", _uvicorn("httptools", "uvloop"),
                                "uvicorn --http httptools --loop uvloop, bare ASGI app"),
    "floor": h.PEERS["floor"],
}
SCENARIOS = {
    "plain": ("/plain", 64),
    "chunked": ("/chunked?size=4096&count=256", 16),
}
_UNITS = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024**2 / 1e6, "GB": 1024**3 / 1e6}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wrk(url: str, connections: int, duration_s: float) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(h.CLIENT_CPU), "wrk", "-t1", f"-c{connections}",
           f"-d{duration_s:g}s", "--latency", "--timeout", "10s", url]
    out = subprocess.run(cmd, capture_output=True, timeout=duration_s + 60, check=False)
    text = out.stdout.decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    tps = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", text)
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if rps is None or tps is None:
        raise RuntimeError(f"wrk failed: {text[-1000:]} {out.stderr.decode()[-500:]}")

    def to_ms(m: re.Match[str] | None) -> float | None:
        if m is None:
            return None
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1000.0}.get(unit, 1.0)

    return {
        "requests_per_s": float(rps.group(1)),
        "mb_per_s": float(tps.group(1)) * _UNITS.get(tps.group(2), 1.0),
        "latency_ms": {"p50": to_ms(p50), "p99": to_ms(p99)},
        "socket_errors": errors.group(1) if errors else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_wrk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--out", default=str(h.RESULTS / "http"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    h.install_cleanup()
    servers = args.servers.split(",")
    scenarios = args.scenarios.split(",")
    repeat = args.repeat or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 5.0)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {c: [] for c in scenarios}
                                                        for s in servers}
    started = time.monotonic()
    load_before = h.loadavg()
    context = h.context_line()
    try:
        for rep in range(repeat):
            for name in servers:
                with h.running(SERVERS[name]) as server:
                    for scen in scenarios:
                        path, conns = SCENARIOS[scen]
                        wrk(server.base + path, conns, 1.0)  # warm-up
                        cpu0, t0 = server.cpu_seconds(), time.monotonic()
                        r = wrk(server.base + path, conns, duration)
                        r["server_cpu"] = round((server.cpu_seconds() - cpu0)
                                                / (time.monotonic() - t0), 3)
                        runs[name][scen].append(r)
                        log(f"[{rep + 1}/{repeat}] {name:20} {scen:8} "
                            f"{r['requests_per_s']:>10,.0f} req/s {r['mb_per_s']:>8,.1f} MB/s "
                            f"p99 {r['latency_ms']['p99']} ms cpu {r['server_cpu']} "
                            f"errors {r['socket_errors']} non2xx {r['non_2xx']}")
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        raise SystemExit(130) from None
    load_after = h.loadavg()

    med: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in servers:
        med[name] = {}
        for scen in scenarios:
            rs = runs[name][scen]
            med[name][scen] = {
                "rps": h.median([r["requests_per_s"] for r in rs]),
                "mbs": h.median([r["mb_per_s"] for r in rs]),
                "p99": h.median([r["latency_ms"]["p99"] for r in rs]),
                "cpu": h.median([r["server_cpu"] for r in rs]),
            }
    rows = []
    for name in servers:
        cells = [name]
        if "plain" in scenarios:
            m = med[name]["plain"]
            ref = med.get("uvicorn-h11", {}).get("plain", {}).get("rps")
            cells += [h.fmt(m["rps"]), h.ratio(m["rps"], ref),
                      h.ratio(m["rps"], med.get("rawsse", {}).get("plain", {}).get("rps")),
                      h.fmt(m["p99"], 1)]
        if "chunked" in scenarios:
            m = med[name]["chunked"]
            ref = med.get("floor", {}).get("chunked", {}).get("mbs")
            cells += [h.fmt(m["mbs"], 0), h.ratio(m["mbs"], ref),
                      h.ratio(m["mbs"], med.get("rawsse", {}).get("chunked", {}).get("mbs"))]
        rows.append(cells)
    header = ["server"]
    if "plain" in scenarios:
        header += ["plain req/s", "x uvicorn-h11", "x rawsse", "p99 latency (ms)"]
    if "chunked" in scenarios:
        header += ["chunked MB/s", "x floor", "x rawsse"]
    every = []
    for name in servers:
        for scen in scenarios:
            key = "requests_per_s" if scen == "plain" else "mb_per_s"
            every.append(f"{name} {scen}: " + ", ".join(h.fmt(r[key]) for r in runs[name][scen]))
    targets = []
    if "plain" in scenarios and "uvicorn-h11" in med:
        ref = med["uvicorn-h11"]["plain"]["rps"]
        for name in ("rawsse", "rawsse-uvloop", "rawsse-trio"):
            if name in med:
                x = med[name]["plain"]["rps"]
                ok = None if not (x and ref) else x >= 1.2 * ref
                targets.append(["plain req/s ≥ 1.2x uvicorn-h11 (uvloop)", name, h.ratio(x, ref),
                                "—" if ok is None else ("**met**" if ok else "**not met**")])
    if "chunked" in scenarios and "floor" in med:
        ref = med["floor"]["chunked"]["mbs"]
        for name in ("rawsse", "rawsse-uvloop", "rawsse-trio"):
            if name in med:
                x = med[name]["chunked"]["mbs"]
                ok = None if not (x and ref) else x >= ref
                targets.append(["chunked MB/s ≥ floor", name, h.ratio(x, ref),
                                "—" if ok is None else ("**met**" if ok else "**not met**")])
    md = [
        "## HTTP/1.1: plain and chunked "
        f"(`python -m benchmarks.http_wrk{' --quick' if args.quick else ''}`)",
        "",
        f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: {h.machine_line()} "
        f"{context} Load average before/after: {' '.join(load_before)} / {' '.join(load_after)}.",
        "",
        f"wrk -t1 (CPU 1); plain: `GET /plain`, 64 connections; chunked: `GET "
        f"/chunked?size=4096&count=256` (1 MiB in 256 chunks), 16 connections. Medians of "
        f"{repeat} interleaved run(s) of {duration:g} s after a 1 s warm-up.",
        "",
        h.markdown_table(["target", "server", "measured", "verdict"], targets) if targets else "",
        "",
        h.markdown_table(header, rows),
        "",
        "Servers: " + "; ".join(f"**{n}**: {SERVERS[n].about}" for n in servers) + ".",
        "",
        "Every run: " + "; ".join(every) + ".",
        "",
        f"Total run time {(time.monotonic() - started) / 60:.1f} min.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"date": h.DATE, "machine": h.machine_line(), "runs": runs}, f, indent=1)
    log(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
