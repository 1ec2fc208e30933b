"""Peer comparison, one command: the same SSE workload against rawsse and its peers.

    python -m benchmarks.compare                 # full run (a few minutes per repeat)
    python -m benchmarks.compare --quick         # short settings, a smaller set of peers
    python -m benchmarks.compare --peers rawsse,floor,node --scenarios burst64,rss1k

Workload (``benchmarks/peers/workload.py``): ``POST /stream``, 200 OpenAI
``chat.completion.chunk`` events per stream with the JSON built per event, then ``[DONE]``, no
delay. Each peer runs alone, pinned to CPU 0; the load client (``benchmarks/loadgen.py``, or
``rawsse bench`` with ``--client rawsse-bench``) is pinned to CPU 1. Burst figures are medians of
``--repeat`` runs, interleaved (peer A, B, C, then A, B, C again) so drift on a shared machine
hits every peer alike. RSS per held stream = (server RSS while N idle streams are held, heartbeats
on at 15 s - RSS of the warmed idle server) / N, process tree included.

Writes a markdown table to stdout and ``benchmarks/results/peers.md``, the raw runs to
``benchmarks/results/peers.json`` and a chart to ``benchmarks/results/peers.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from benchmarks import harness as h

SCENARIOS = ("burst64", "burst512", "rss1k", "rss10k")
DEFAULT_PEERS = ("rawsse", "rawsse-trio", "floor", "aiohttp", "uvicorn-httptools", "uvicorn-h11",
                 "hypercorn", "granian", "node")
QUICK_PEERS = ("rawsse", "rawsse-trio", "floor", "aiohttp", "uvicorn-httptools", "node")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_bursts(peers: list[str], concurrencies: list[int], repeat: int, duration_s: float,
               warmup_s: float, client: str) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """``{peer: {streams: [run, ...]}}``, the peers interleaved within each repeat."""
    out: dict[str, dict[int, list[dict[str, Any]]]] = {p: {c: [] for c in concurrencies}
                                                       for p in peers}
    for rep in range(repeat):
        for name in peers:
            try:
                with h.running(h.PEERS[name]) as server:
                    for streams in concurrencies:
                        r = h.run_burst(server, streams=streams, duration_s=duration_s,
                                        warmup_s=warmup_s, client=client)
                        out[name][streams].append(r)
                        log(f"[{rep + 1}/{repeat}] {name:18} {streams:4} streams: "
                            f"{r['events_per_s']:>10,.0f} ev/s  ttfb p99 {r['ttfb_ms']['p99']} ms"
                            f"  errors {r['errors']}  server cpu {r['server_cpu']}"
                            f"  client cpu {r.get('client_cpu')}")
            except RuntimeError as exc:
                log(f"[{rep + 1}/{repeat}] {name}: FAILED {exc}")
    return out


def run_rss(peers: list[str], counts: list[int], hb_s: float = 15.0
            ) -> dict[str, dict[int, dict[str, Any]]]:
    """``{peer: {streams: hold result}}``: a fresh server for each count."""
    out: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in peers}
    for count in counts:
        for name in peers:
            try:
                with h.running(h.PEERS[name]) as server:
                    r = h.hold_streams(server, streams=count, hold_for_s=2.0, hb_s=hb_s,
                                       timeout_s=120.0 + count / 100)
                out[name][count] = r
                log(f"rss {name:18} {count:6} streams: held {r['held']}, "
                    f"{r.get('kib_per_stream')} KiB/stream (base {r['base_kib']} KiB)")
            except RuntimeError as exc:
                log(f"rss {name} {count}: FAILED {exc}")
                reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "error"
                out[name][count] = {"failed_reason": reason}
    return out


def summarise(bursts: dict[str, dict[int, list[dict[str, Any]]]],
              rss: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Medians per peer: ``{peer: {"ev64": .., "ttfb64_p99": .., "kib1000": ..}}``."""
    table: dict[str, dict[str, Any]] = {}
    for name in set(bursts) | set(rss):
        row: dict[str, Any] = {}
        for streams, runs in bursts.get(name, {}).items():
            ok = [r for r in runs if r["completed"] > 0]
            row[f"ev{streams}"] = h.median([r["events_per_s"] for r in ok])
            # Events per second of server CPU: robust to time stolen by other tenants.
            row[f"evcpu{streams}"] = h.median([r["events_per_s"] / r["server_cpu"]
                                               for r in ok if r.get("server_cpu")])
            row[f"ev{streams}_runs"] = [r["events_per_s"] for r in runs]
            row[f"ttfb{streams}_p50"] = h.median([r["ttfb_ms"]["p50"] for r in ok])
            row[f"ttfb{streams}_p99"] = h.median([r["ttfb_ms"]["p99"] for r in ok])
            row[f"cpu{streams}"] = h.median([r["server_cpu"] for r in ok])
            row[f"client_cpu{streams}"] = h.median([r.get("client_cpu") for r in ok])
            row[f"errors{streams}"] = sum(r["errors"] for r in runs)
        for count, r in rss.get(name, {}).items():
            row[f"kib{count}"] = r.get("kib_per_stream")
            row[f"held{count}"] = r.get("held")
        table[name] = row
    return table


def render(table: dict[str, dict[str, Any]], peers: list[str], concurrencies: list[int],
           counts: list[int], ref: str = "rawsse") -> str:
    base = table.get(ref, {})
    header = ["server"]
    for c in concurrencies:
        header += [f"events/s @{c}", f"vs {ref}", f"events/CPU-s @{c}", f"vs {ref}"]
    for c in concurrencies:
        header += [f"TTFB p50/p99 @{c} (ms)"]
    for n in counts:
        header += [f"KiB/stream @{n:,}", f"vs {ref}"]
    rows = []
    for name in peers:
        row = table.get(name, {})
        cells = [f"{name}"]
        for c in concurrencies:
            cells += [h.fmt(row.get(f"ev{c}")), h.ratio(row.get(f"ev{c}"), base.get(f"ev{c}")),
                      h.fmt(row.get(f"evcpu{c}")),
                      h.ratio(row.get(f"evcpu{c}"), base.get(f"evcpu{c}"))]
        for c in concurrencies:
            p50, p99 = row.get(f"ttfb{c}_p50"), row.get(f"ttfb{c}_p99")
            cells += [f"{h.fmt(p50, 1)} / {h.fmt(p99, 1)}"]
        for n in counts:
            kib = row.get(f"kib{n}")
            cells += [h.fmt(kib, 1), h.ratio(kib, base.get(f"kib{n}"))]
        rows.append(cells)
    return h.markdown_table(header, rows)


def render_cpu(table: dict[str, dict[str, Any]], peers: list[str], concurrencies: list[int]) -> str:
    header = ["server"] + [f"server CPU @{c}" for c in concurrencies] + \
        [f"client CPU @{c}" for c in concurrencies] + \
        [f"runs @{c} (events/s)" for c in concurrencies]
    rows = []
    for name in peers:
        row = table.get(name, {})
        cells = [name]
        cells += [h.fmt(row.get(f"cpu{c}"), 2) for c in concurrencies]
        cells += [h.fmt(row.get(f"client_cpu{c}"), 2) for c in concurrencies]
        cells += [", ".join(h.fmt(x) for x in row.get(f"ev{c}_runs", [])) or "—"
                  for c in concurrencies]
        rows.append(cells)
    return h.markdown_table(header, rows)


def chart(table: dict[str, dict[str, Any]], peers: list[str], concurrencies: list[int],
          counts: list[int], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (1 if concurrencies else 0) + (1 if counts else 0)
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.8), squeeze=False)
    ax_i = 0
    width = 0.8 / max(1, len(concurrencies) if concurrencies else len(counts))
    xs = range(len(peers))
    if concurrencies:
        ax = axes[0][ax_i]
        ax_i += 1
        for k, c in enumerate(concurrencies):
            vals = [(table.get(p, {}).get(f"evcpu{c}") or 0) / 1000 for p in peers]
            ax.bar([x + k * width for x in xs], vals, width, label=f"{c} streams")
        ax.set_ylabel("thousand events per server CPU-second (median)")
        ax.set_title("burst: 200 events/stream, no delay")
        ax.set_xticks([x + width * (len(concurrencies) - 1) / 2 for x in xs])
        ax.set_xticklabels(peers, rotation=35, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if counts:
        ax = axes[0][ax_i]
        w = 0.8 / len(counts)
        for k, n in enumerate(counts):
            vals = [table.get(p, {}).get(f"kib{n}") or 0 for p in peers]
            ax.bar([x + k * w for x in xs], vals, w, label=f"{n:,} held streams")
        ax.set_ylabel("KiB of server RSS per held idle stream")
        ax.set_title("memory per idle stream (heartbeats on)")
        ax.set_xticks([x + w * (len(counts) - 1) / 2 for x in xs])
        ax.set_xticklabels(peers, rotation=35, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", help=f"comma-separated, from: {', '.join(h.PEERS)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true",
                        help="2 s runs, 1 repeat, no 10,000-stream RSS, fewer peers")
    parser.add_argument("--repeat", type=int, default=None, help="burst repeats (default 3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per burst run")
    parser.add_argument("--client", choices=("loadgen", "rawsse-bench"), default="loadgen")
    parser.add_argument("--out", default=str(h.RESULTS / "peers"),
                        help="output path stem (.md, .json, .png)")
    parser.add_argument("--render", metavar="JSON",
                        help="only re-render the tables and chart from a saved peers.json")
    args = parser.parse_args(argv)
    if args.render:
        render_saved(args.render, args.out)
        return
    h.install_cleanup()

    scenarios = [s for s in args.scenarios.split(",") if s]
    if args.quick and args.scenarios == ",".join(SCENARIOS):
        scenarios = ["burst64", "burst512", "rss1k"]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    default_peers = QUICK_PEERS if args.quick else DEFAULT_PEERS
    peers = args.peers.split(",") if args.peers else list(default_peers)
    for name in peers:
        if name not in h.PEERS:
            parser.error(f"unknown peer {name!r}")
    skipped = [p for p in peers if not h.PEERS[p].available()]
    peers = [p for p in peers if p not in skipped]
    repeat = args.repeat or (1 if args.quick else 3)
    duration = args.duration or (2.0 if args.quick else 5.0)
    warmup = 0.5 if args.quick else 1.0
    concurrencies = [int(s[5:]) for s in scenarios if s.startswith("burst")]
    counts = [{"rss1k": 1000, "rss10k": 10000}[s] for s in scenarios if s.startswith("rss")]

    started = time.monotonic()
    context = h.context_line()
    try:
        bursts = run_bursts(peers, concurrencies, repeat, duration, warmup, args.client) \
            if concurrencies else {}
        rss = run_rss(peers, counts) if counts else {}
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        raise SystemExit(130) from None
    elapsed = time.monotonic() - started
    settings = (f"{repeat} interleaved repeat(s) of {duration:g} s (after {warmup:g} s warm-up) "
                f"per burst point; client: {args.client}; total run {elapsed / 60:.1f} min")
    header_line = (f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: "
                   f"{h.machine_line()} {context}")
    saved = {"date": h.DATE, "machine": h.machine_line(), "settings": settings,
             "header": header_line, "quick": args.quick, "peers": peers, "skipped": skipped,
             "concurrencies": concurrencies, "counts": counts,
             "bursts": {p: {str(c): runs for c, runs in v.items()} for p, v in bursts.items()},
             "rss": {p: {str(c): r for c, r in v.items()} for p, v in rss.items()}}
    with open(args.out + ".json", "w") as f:
        json.dump(saved, f, indent=1)
    write_report(saved, args.out)


def render_saved(path: str, out: str) -> None:
    with open(path) as f:
        saved = json.load(f)
    write_report(saved, out)


def write_report(saved: dict[str, Any], out: str) -> None:
    peers = saved["peers"]
    concurrencies = saved["concurrencies"]
    counts = saved["counts"]
    bursts = {p: {int(c): runs for c, runs in v.items()} for p, v in saved["bursts"].items()}
    rss = {p: {int(c): r for c, r in v.items()} for p, v in saved["rss"].items()}
    skipped = saved.get("skipped", [])
    settings = saved["settings"]
    table = summarise(bursts, rss)
    ref = "rawsse" if "rawsse" in peers else peers[0]
    md = [
        "## Peer comparison "
        f"(`python -m benchmarks.compare{' --quick' if saved['quick'] else ''}`)",
        "",
        saved["header"],
        "",
        f"Settings: {settings}. Workload: POST /stream, 200 `chat.completion.chunk` events per "
        "stream (dict built per event, orjson in every Python peer, JSON.stringify in Node), "
        "then `[DONE]`, no delay; keep-alive connections. TTFB = request written → first event "
        "read. RSS: idle streams held with heartbeats on (15 s), process tree, delta over the "
        "warmed idle server. events/CPU-s = events/s divided by the share of CPU 0 the "
        "server process got (medians of the per-run quotients): the other engineers' jobs take "
        "a varying share of both cores, so this column is the steadier comparison.",
        "",
        render(table, peers, concurrencies, counts, ref),
        "",
        "Servers: " + "; ".join(f"**{p}**: {h.PEERS[p].about}" for p in peers) + ".",
        "",
    ]
    if skipped:
        md += [f"Skipped (not installed): {', '.join(skipped)}.", ""]
    if concurrencies:
        md += ["CPU share of each side during the burst runs (1.00 = one core busy; a client near "
               "1.00 would mean the client, not the server, was the limit), and every run:", "",
               render_cpu(table, peers, concurrencies), ""]
    failed = [f"{p} @{n:,}: {r['failed_reason']}" for p, v in rss.items() for n, r in v.items()
              if r.get("failed_reason")]
    if failed:
        md += ["RSS points that failed: " + "; ".join(failed) + ".", ""]
    text = "\n".join(md)
    print(text)
    with open(out + ".md", "w") as f:
        f.write(text)
    chart(table, peers, concurrencies, counts, out + ".png",
          f"rawsse and peers, {h.DATE}, server on 1 core of a shared 2-core machine")
    log(f"wrote {out}.md, {out}.json, {out}.png")


if __name__ == "__main__":
    main()
