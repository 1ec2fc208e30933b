"""Where a held stream's memory goes: tracemalloc per stream, chat and plain, both backends.

    python -m benchmarks.held_memory                       # 2,000 streams per case
    python -m benchmarks.held_memory --streams 10000 --cases chat-asyncio,chat-trio --top 40
    python -m benchmarks.held_memory --render benchmarks/results/held_memory.json  # no run

Each case is a fresh server (``benchmarks/peers/traced_app.py``: tracemalloc on, 30 frames),
warmed with 50 streams opened and dropped, then a baseline snapshot, then N idle streams held by
``benchmarks/loadgen.py hold`` (heartbeats every 15 s), then a second snapshot. Reported per
held stream: the bytes Python allocated and still holds (traced), the RSS growth, the objects
the cyclic garbage collector tracks (what each of its full passes walks) and how long a full
collection takes with the streams held, and the allocations
grouped by the innermost frame of rawsse's (or the benchmark's) own code: who asked for the
memory. tracemalloc's own bookkeeping inflates RSS, so the RSS column here is only for
comparing cases; ``python -m benchmarks.streams --only rss`` measures RSS without it.

Cases: ``chat-asyncio``/``chat-trio``: the demo app's ``POST /v1/chat/completions`` (model
``lorem``, streaming, token delay 3600 s: the first token, then an idle wait);
``plain-asyncio``/``plain-trio``: ``POST /stream?n=0&hold=...`` of the benchmark workload
(``anyio.sleep``), ``plain-ticker-asyncio``/``plain-ticker-trio``: the same waiting on a Ticker.

Writes ``benchmarks/results/held_memory.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

from benchmarks import harness as h

CASES: dict[str, tuple[str, str, str]] = {
    # name: (app attribute, backend, path)
    "chat-asyncio": ("chat_app", "asyncio", "/v1/chat/completions"),
    "chat-trio": ("chat_app", "trio", "/v1/chat/completions"),
    "plain-asyncio": ("plain_app", "asyncio", "/stream?n=0&hold=3600&hb=15"),
    "plain-trio": ("plain_app", "trio", "/stream?n=0&hold=3600&hb=15"),
    "plain-ticker-asyncio": ("plain_ticker_app", "asyncio", "/stream?n=0&hold=3600&hb=15"),
    "plain-ticker-trio": ("plain_ticker_app", "trio", "/stream?n=0&hold=3600&hb=15"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


def hold(
    url: str, streams: int, on_held: Any, timeout_s: float, hold_for_s: float
) -> dict[str, Any]:
    """Hold ``streams`` idle streams; call ``on_held(held)`` while they are all open (the
    client holds them long enough for the snapshot, which takes a few seconds per thousand)."""
    cmd = [
        h.PY,
        "-m",
        "benchmarks.loadgen",
        "hold",
        url,
        "--streams",
        str(streams),
        "--hold-for",
        str(hold_for_s),
        "--timeout",
        str(timeout_s),
        "--cpu",
        str(h.CLIENT_CPU),
    ]
    proc = subprocess.Popen(
        cmd, cwd=h.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    h._LIVE.append(proc)
    out: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line.startswith("HELD"):
                out["measured"] = on_held(int(line.split()[1]))
            elif line.startswith("{"):
                out["client"] = json.loads(line)
                break
        proc.wait(timeout=60)
    finally:
        h._stop(proc)
    return out


def measure(case: str, streams: int, top: int) -> dict[str, Any]:
    attr, backend, path = CASES[case]
    peer = h.Peer(
        case,
        (
            h.PY,
            "-m",
            "rawsse",
            "serve",
            f"benchmarks.peers.traced_app:{attr}",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backend",
            backend,
            "--heartbeat",
            "15",
        ),
        case,
    )
    with h.running(peer, ready_timeout_s=60) as server:
        hold(server.base + path, 50, lambda n: None, 60, 1)  # warm: first-use caches, imports
        time.sleep(0.5)
        get_json(server.base + "/_mem/base")

        def snap(held: int) -> dict[str, Any]:
            time.sleep(1.0)
            return get_json(f"{server.base}/_mem/diff?n={held}&top={top}")

        # Held while the snapshot is taken (it takes a few seconds per thousand streams).
        r = hold(server.base + path, streams, snap, 120 + streams / 100, 10 + streams / 100)
    m = r.get("measured") or {}
    m["held"] = (r.get("client") or {}).get("held")
    log(
        f"{case}: {m.get('held')} held, {m.get('traced_bytes_per_stream')} B traced/stream, "
        f"{m.get('traced_blocks_per_stream')} blocks, RSS {m.get('rss_kib_per_stream')} "
        f"KiB/stream, {m.get('gc_tracked_per_stream')} objects tracked by the collector, "
        f"a full collection {m.get('full_gc_ms')} ms"
    )
    return m


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.held_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default=str(h.RESULTS / "held_memory"))
    parser.add_argument(
        "--render", metavar="JSON", help="write the markdown of a saved run's .json, run nothing"
    )
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        write_markdown(results, args.render.removesuffix(".json"))
        return
    h.install_cleanup()
    header = (
        f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: "
        f"{h.machine_line()} {h.context_line()}"
    )
    results: dict[str, Any] = {
        "date": h.DATE,
        "header": header,
        "streams": args.streams,
        "cases": {},
    }
    for case in args.cases.split(","):
        results["cases"][case] = measure(case, args.streams, args.top)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(results, args.out)


def write_markdown(results: dict[str, Any], out: str) -> None:
    """Print a run's results as markdown and write them to ``out + ".md"``."""
    md = [
        f"## Memory per held stream, tracemalloc (`python -m benchmarks.held_memory "
        f"--streams {results['streams']}`)",
        "",
        results["header"],
        "",
        h.markdown_table(
            [
                "case",
                "held",
                "traced B/stream",
                "blocks/stream",
                "gc-tracked objects/stream",
                "a full gc.collect(), ms (tracing on)",
                "RSS KiB/stream (tracemalloc on)",
            ],
            [
                [
                    c,
                    h.fmt(m.get("held")),
                    h.fmt(m.get("traced_bytes_per_stream")),
                    h.fmt(m.get("traced_blocks_per_stream"), 1),
                    h.fmt(m.get("gc_tracked_per_stream"), 1),
                    h.fmt(m.get("full_gc_ms"), 1),
                    h.fmt(m.get("rss_kib_per_stream"), 2),
                ]
                for c, m in results["cases"].items()
            ],
        ),
        "",
    ]
    for case, m in results["cases"].items():
        md += [f"### {case}: who allocated what is still held (bytes per stream)", "", "```"]
        md += [
            f"{row['bytes_per_stream']:8.1f} B {row['blocks_per_stream']:6.2f}  {row['where']}"
            for row in m.get("by_site", [])
        ]
        md += ["```", ""]
    text = "\n".join(md)
    print(text)
    with open(out + ".md", "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
