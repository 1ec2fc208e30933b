"""Issue 4's targets for ``EventStream``, measured side by side in one run.

    python -m benchmarks.streams              # everything (about 15-25 minutes)
    python -m benchmarks.streams --quick      # shorter runs, 1,000 streams instead of 10,000
    python -m benchmarks.streams --only burst,paced

Scenarios (server pinned to CPU 0, ``benchmarks/loadgen.py`` pinned to CPU 1):
- ``burst``: events/s at 64 and 512 concurrent streams of 200 events, no delay; rawsse (asyncio
  and trio) vs the floor, aiohttp-sse, uvicorn (httptools) + sse-starlette and Node, as ratios
  to the floor; medians of interleaved repeats. TTFB p99 at 512 streams vs the floor's.
- ``paced``: the most concurrent streams one core sustains at 25 events/s each (40 ms apart) with
  the inter-event gap p99 under 100 ms, no errors and at least 95% of the offered events
  delivered: doubling, then bisection to within 10%. Streams start spread over 1 s (a real
  server's streams do not start in lockstep); each point runs on a fresh server. rawsse runs
  twice per backend: paced with ``anyio.sleep`` (``rawsse``, ``rawsse-trio``) and with its own
  ``rawsse.Ticker`` (``rawsse-ticker``, ``rawsse-trio-ticker``).
- ``rss``: KiB of server RSS per held idle stream at 1,000 and 10,000 streams, heartbeats on;
  rawsse's held streams wait with ``anyio.sleep`` or (the ``-ticker`` peers) a ``Ticker`` tick.
- ``jitter``: 10,000 idle streams with a 1 s heartbeat, held for 10 s: |interval - 1 s| p99.

Writes ``benchmarks/results/streams.md`` (and ``.json``) and prints the same markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Any

from benchmarks import harness as h
from benchmarks.compare import run_bursts, run_rss, summarise

ALL = ("burst", "paced", "rss", "jitter")
BURST_PEERS = ("rawsse", "rawsse-trio", "floor", "aiohttp", "uvicorn-httptools", "node")
CORE_PEERS = ("rawsse", "rawsse-trio", "floor")
# Paced and held streams also run rawsse waiting with its own Ticker (on the shared timer).
PACED_PEERS = ("rawsse", "rawsse-ticker", "rawsse-trio", "rawsse-trio-ticker", "floor")
RAWSSE_PACED = tuple(n for n in PACED_PEERS if n != "floor")
PACED_RATE = 25.0  # events/s per stream
GAP_LIMIT_MS = 100.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def paced_point(name: str, streams: int, duration_s: float) -> dict[str, Any]:
    delay = 1.0 / PACED_RATE
    ramp = 1.0
    warmup = ramp + 1.0
    n = int((warmup + duration_s + 5) * PACED_RATE)  # no stream ends inside the window
    with h.running(h.PEERS[name]) as server:
        url = f"{server.base}/stream?n={n}&delay={delay}"
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        r = h.loadgen(["run", url, "--streams", str(streams), "--duration", str(duration_s),
                       "--warmup", str(warmup), "--ramp", str(ramp)],
                      timeout_s=duration_s + warmup + 90)
        r["server_cpu"] = round((server.cpu_seconds() - cpu0) / (time.monotonic() - t0), 3)
    offered = streams * PACED_RATE
    r["delivered"] = round(r["events_per_s"] / offered, 3)
    gap = r["gap_ms"]["p99"]
    r["pass"] = bool(r["errors"] == 0 and gap is not None and gap < GAP_LIMIT_MS
                     and r["delivered"] >= 0.95)
    log(f"paced {name:12} {streams:6} streams: {r['events_per_s']:>9,.0f} ev/s "
        f"({r['delivered']:.0%} of offered) gap p99 {gap} ms, errors {r['errors']}, "
        f"server cpu {r['server_cpu']}, client cpu {r['client_cpu']} -> "
        f"{'pass' if r['pass'] else 'FAIL'}")
    return r


def paced_search(name: str, start: int, cap: int, duration_s: float,
                 max_points: int = 10) -> dict[str, Any]:
    """Largest passing N: doubling from ``start``, then bisection to within 10%."""
    points: dict[int, dict[str, Any]] = {}
    lo, hi = 0, None
    n = start
    while len(points) < max_points and n <= cap:
        points[n] = paced_point(name, n, duration_s)
        if points[n]["pass"]:
            lo = n
            n *= 2
        else:
            hi = n
            break
    while hi is not None and lo and hi / lo > 1.1 and len(points) < max_points:
        mid = (lo + hi) // 2
        points[mid] = paced_point(name, mid, duration_s)
        if points[mid]["pass"]:
            lo = mid
        else:
            hi = mid
    if lo == 0 and start > 1:
        # Even the first point failed: walk down.
        n = start // 2
        while n >= 50 and len(points) < max_points:
            points[n] = paced_point(name, n, duration_s)
            if points[n]["pass"]:
                lo = n
                break
            hi = n
            n //= 2
        while lo and hi and hi / lo > 1.1 and len(points) < max_points:
            mid = (lo + hi) // 2
            points[mid] = paced_point(name, mid, duration_s)
            if points[mid]["pass"]:
                lo = mid
            else:
                hi = mid
    return {"max_streams": lo or None, "first_fail": hi, "capped": hi is None and lo >= cap // 2,
            "points": {str(k): v for k, v in sorted(points.items())}}


def run_jitter(peers: list[str], streams: int, hold_s: float) -> dict[str, dict[str, Any]]:
    out = {}
    for name in peers:
        try:
            with h.running(h.PEERS[name]) as server:
                r = h.hold_streams(server, streams=streams, hold_for_s=hold_s, hb_s=1.0,
                                   timeout_s=120.0 + streams / 100)
            out[name] = r
            log(f"jitter {name:12} {streams} streams: held {r['held']}, still {r['still_open']}, "
                f"{r['hb_intervals']} intervals, jitter p50/p99/max "
                f"{r['hb_jitter_ms']['p50']}/{r['hb_jitter_ms']['p99']}/"
                f"{r['hb_jitter_ms']['max']} ms")
        except RuntimeError as exc:
            log(f"jitter {name}: FAILED {exc}")
    return out


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(ALL), help=f"from: {', '.join(ALL)}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--paced-peers", default=",".join(PACED_PEERS))
    parser.add_argument("--paced-start", type=int, default=500)
    parser.add_argument("--out", default=str(h.RESULTS / "streams"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the sections of the existing OUT.json that this run does not "
                             "measure (each section says when it was measured)")
    parser.add_argument("--render", metavar="JSON",
                        help="only re-render the report from a saved streams.json")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            write_report(json.load(f), args.out)
        return
    h.install_cleanup()
    only = [s for s in args.only.split(",") if s]
    repeat = args.repeat or (1 if args.quick else 3)
    burst_s = 2.0 if args.quick else 5.0
    paced_s = 4.0 if args.quick else 6.0
    big = 1000 if args.quick else 10000
    paced_repeat = 1 if args.quick else 3
    started = time.monotonic()
    meta = {
        "quick": args.quick, "repeat": repeat, "burst_s": burst_s, "paced_s": paced_s,
        "big": big,
        "header": f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: "
                  f"{h.machine_line()} {h.context_line()}",
    }
    results: dict[str, Any] = {"date": h.DATE, "meta": meta}
    if args.merge and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            old = json.load(f)
        kept = [k for k in ("burst", "paced_runs", "rss", "jitter")
                if k in old and not _measured(k, only)]
        for key in kept:
            results[key] = old[key]
        notes = dict(old["meta"].get("measured", {}))
        meta["measured"] = {k: notes.get(k, old["meta"]["header"]) for k in kept}
    meta.setdefault("measured", {})
    for key in ("burst", "paced_runs", "rss", "jitter"):
        if _measured(key, only):
            meta["measured"][key] = meta["header"]
    try:
        if "burst" in only:
            bursts = run_bursts(list(BURST_PEERS), [64, 512], repeat, burst_s, 1.0, "loadgen")
            results["burst"] = {p: {str(c): runs for c, runs in v.items()}
                                for p, v in bursts.items()}
        if "paced" in only:
            runs = [{name: paced_search(name, args.paced_start, 16000, paced_s)
                     for name in args.paced_peers.split(",")} for _ in range(paced_repeat)]
            results["paced_runs"] = runs
        if "rss" in only:
            rss = run_rss(list(PACED_PEERS), [1000, big])
            results["rss"] = {p: {str(c): r for c, r in v.items()} for p, v in rss.items()}
        if "jitter" in only:
            results["jitter"] = run_jitter(list(CORE_PEERS), big, 5.0 if args.quick else 10.0)
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        raise SystemExit(130) from None
    meta["elapsed_min"] = round((time.monotonic() - started) / 60, 1)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    write_report(results, args.out)


def _measured(key: str, only: list[str]) -> bool:
    return {"burst": "burst", "paced_runs": "paced", "rss": "rss", "jitter": "jitter"}[key] in only


def paced_runs_section(runs: list[dict[str, Any]], paced_s: float) -> list[str]:
    """The paced search repeated: each run's figure per server, their median, every point."""
    names = [n for n in PACED_PEERS if any(n in r for r in runs)]
    floor = h.median([r.get("floor", {}).get("max_streams") for r in runs])
    rows = []
    for name in names:
        maxes = [r.get(name, {}).get("max_streams") for r in runs]
        med = h.median(maxes)
        rows.append([name] + [h.fmt(m) for m in maxes] + [h.fmt(med), h.ratio(med, floor)])
    md = [
        f"### Paced: streams at 25 events/s each, gap p99 < {GAP_LIMIT_MS:g} ms "
        f"({paced_s:g} s per point after 2 s warm-up, streams started over 1 s; the search "
        f"repeated {len(runs)} times)", "",
        h.markdown_table(["server"] + [f"max streams, run {i + 1}" for i in range(len(runs))]
                         + ["median", "x floor"], rows),
        "",
        "A point passes with no errors, gap p99 under the limit and at least 95% of the offered "
        "events delivered. The spread between runs is the shared machine: in failing points the "
        "server often got well under a whole core (CPU column below) while it fell behind.",
        "",
        "Every point (N: events/s, share of offered, gap p99 ms, server CPU, pass):", "",
    ]
    for i, run in enumerate(runs):
        for name in names:
            if name not in run:
                continue
            pts = "; ".join(
                f"{k}: {h.fmt(p['events_per_s'])}, {p['delivered']:.0%}, "
                f"{h.fmt(p['gap_ms']['p99'], 1)}, {h.fmt(p['server_cpu'], 2)}, "
                f"{'pass' if p['pass'] else 'fail'}"
                for k, p in run[name]["points"].items())
            md.append(f"- run {i + 1}, {name}: {pts}")
    md.append("")
    return md


def write_report(results: dict[str, Any], out: str) -> None:
    meta = results["meta"]
    repeat, burst_s, paced_s, big = meta["repeat"], meta["burst_s"], meta["paced_s"], meta["big"]
    md: list[str] = [
        "## EventStream targets "
        f"(`python -m benchmarks.streams{' --quick' if meta['quick'] else ''}`)",
        "",
        meta["header"],
        "",
    ]
    targets: list[list[str]] = []
    if "burst" in results:
        bursts = {p: {int(c): runs for c, runs in v.items()} for p, v in results["burst"].items()}
        table = summarise(bursts, {})
        floor = table.get("floor", {})
        rows = []
        for name in BURST_PEERS:
            row = table.get(name, {})
            rows.append([
                name, h.fmt(row.get("ev64")), h.ratio(row.get("ev64"), floor.get("ev64")),
                h.fmt(row.get("evcpu64")), h.ratio(row.get("evcpu64"), floor.get("evcpu64")),
                h.fmt(row.get("ev512")), h.ratio(row.get("ev512"), floor.get("ev512")),
                h.fmt(row.get("evcpu512")), h.ratio(row.get("evcpu512"), floor.get("evcpu512")),
                h.fmt(row.get("ttfb512_p99"), 1),
                h.ratio(row.get("ttfb512_p99"), floor.get("ttfb512_p99")),
                f"{h.fmt(row.get('cpu64'), 2)} / {h.fmt(row.get('client_cpu64'), 2)}",
            ])
        md += [
            f"### Burst: 200 events per stream, no delay ({repeat} interleaved repeat(s) of "
            f"{burst_s:g} s; medians)", "",
            h.markdown_table(["server", "events/s @64", "x floor", "events/CPU-s @64", "x floor",
                              "events/s @512", "x floor", "events/CPU-s @512", "x floor",
                              "TTFB p99 @512 (ms)", "x floor", "CPU server/client @64"], rows),
            "",
            "events/CPU-s: events/s divided by the share of CPU 0 the server got in that run "
            "(median of the quotients); steadier than events/s while other jobs share the cores.",
            "",
        ]
        for name in ("rawsse", "rawsse-trio"):
            row = table.get(name, {})
            for c in (64, 512):
                x, f = row.get(f"evcpu{c}"), floor.get(f"evcpu{c}")
                node = table.get("node", {}).get(f"evcpu{c}")
                raw = h.ratio(row.get(f"ev{c}"), floor.get(f"ev{c}"))
                targets.append([f"1. burst @{c}: ≥ 2.5x floor (goal: Node's rate)", name,
                                f"{h.ratio(x, f)} floor, {h.ratio(x, node)} Node per CPU-s "
                                f"({raw} floor in raw events/s)",
                                verdict(None if not (x and f) else x >= 2.5 * f)])
            t, tf = row.get("ttfb512_p99"), floor.get("ttfb512_p99")
            targets.append(["5. TTFB p99 @512 ≤ floor's", name,
                            f"{h.fmt(t, 1)} ms vs {h.fmt(tf, 1)} ms",
                            verdict(None if not (t and tf) else t <= tf)])
    if "paced_runs" in results:
        md += paced_runs_section(results["paced_runs"], paced_s)
        floor_n = h.median([r.get("floor", {}).get("max_streams") for r in results["paced_runs"]])
        for name in RAWSSE_PACED:
            n = h.median([r.get(name, {}).get("max_streams") for r in results["paced_runs"]])
            targets.append(["2. paced max streams ≥ 0.8x floor's (median of runs)", name,
                            f"{h.fmt(n)} vs {h.fmt(floor_n)} ({h.ratio(n, floor_n)})",
                            verdict(None if not (n and floor_n) else n >= 0.8 * floor_n)])
    elif "paced" in results:
        paced = results["paced"]
        rows = []
        for name, r in paced.items():
            best = r["points"].get(str(r["max_streams"])) if r["max_streams"] else None
            rows.append([
                name, h.fmt(r["max_streams"]) + (" (cap)" if r["capped"] else ""),
                h.fmt(r["first_fail"]),
                h.fmt(best["events_per_s"]) if best else "—",
                h.fmt(best["gap_ms"]["p99"], 1) if best else "—",
                f"{h.fmt(best['server_cpu'], 2)} / {h.fmt(best['client_cpu'], 2)}" if best else "—",
                h.ratio(r["max_streams"], paced.get("floor", {}).get("max_streams")),
            ])
        md += [
            f"### Paced: streams at 25 events/s each, gap p99 < {GAP_LIMIT_MS:g} ms "
            f"({paced_s:g} s per point after 2 s warm-up, streams started over 1 s)", "",
            h.markdown_table(["server", "max streams", "first failing N", "events/s at max",
                              "gap p99 at max (ms)", "CPU server/client at max", "x floor"], rows),
            "",
            "Every point tried (N: events/s, share of offered, gap p99 ms, server CPU, pass):", "",
        ]
        for name, r in paced.items():
            pts = "; ".join(
                f"{k}: {h.fmt(p['events_per_s'])}, {p['delivered']:.0%}, "
                f"{h.fmt(p['gap_ms']['p99'], 1)}, {h.fmt(p['server_cpu'], 2)}, "
                f"{'pass' if p['pass'] else 'fail'}"
                for k, p in r["points"].items())
            md.append(f"- {name}: {pts}")
        md.append("")
        floor_n = paced.get("floor", {}).get("max_streams")
        for name in RAWSSE_PACED:
            if name in paced:
                n = paced[name]["max_streams"]
                targets.append(["2. paced max streams ≥ 0.8x floor's", name,
                                f"{h.fmt(n)} vs {h.fmt(floor_n)} ({h.ratio(n, floor_n)})",
                                verdict(None if not (n and floor_n) else n >= 0.8 * floor_n)])
    if "rss" in results:
        rss = results["rss"]
        rows = []
        for name in [n for n in PACED_PEERS if n in rss]:
            cells = [name]
            for n in (1000, big):
                r = rss.get(name, {}).get(str(n), {})
                cells += [h.fmt(r.get("kib_per_stream"), 2), h.fmt(r.get("held"))]
            rows.append(cells)
        md += [
            "### RSS per held idle stream (heartbeats on, 15 s)", "",
            h.markdown_table(["server", "KiB/stream @1,000", "held", f"KiB/stream @{big:,}",
                              "held"], rows),
            "",
        ]
        for name in [n for n in RAWSSE_PACED if n in rss]:
            for n in (1000, big):
                k = rss.get(name, {}).get(str(n), {}).get("kib_per_stream")
                targets.append([f"3. RSS per idle stream @{n:,} ≤ 6 KiB", name,
                                f"{h.fmt(k, 2)} KiB", verdict(None if k is None else k <= 6)])
    if "jitter" in results:
        jit = results["jitter"]
        rows = []
        for name, r in jit.items():
            j = r["hb_jitter_ms"]
            iv = r["hb_interval_ms"]
            rows.append([name, h.fmt(r["held"]), h.fmt(r["still_open"]),
                         h.fmt(r["hb_intervals"]), h.fmt(iv["p50"], 1), h.fmt(j["p50"], 1),
                         h.fmt(j["p99"], 1), h.fmt(j["max"], 1)])
        md += [
            f"### Heartbeat jitter: {big:,} idle streams, 1 s heartbeat, one process", "",
            h.markdown_table(["server", "held", "still open at end", "intervals",
                              "interval p50 (ms)", "jitter p50 (ms)", "jitter p99 (ms)",
                              "jitter max (ms)"], rows),
            "",
            "Jitter = |time between two heartbeats on a stream, at the client - 1 s|.", "",
        ]
        for name in ("rawsse", "rawsse-trio"):
            if name in jit:
                p99 = jit[name]["hb_jitter_ms"]["p99"]
                targets.append([f"4. heartbeat jitter p99 @{big:,} streams < 50 ms", name,
                                f"{h.fmt(p99, 1)} ms",
                                verdict(None if p99 is None else p99 < 50)])
    measured = meta.get("measured", {})
    if measured and any(v != meta["header"] for v in measured.values()):
        md += ["Sections measured in earlier runs of this script (merged with `--merge`):", ""]
        md += [f"- {key}: {text}" for key, text in measured.items() if text != meta["header"]]
        md.append("")
    if targets:
        md[4:4] = ["### Targets (ratios from this run)", "",
                   h.markdown_table(["target", "server", "measured", "verdict"], targets), ""]
    if "elapsed_min" in meta:
        md.append(f"Total run time {meta['elapsed_min']} min.")
    text = "\n".join(md) + "\n"
    print(text)
    with open(out + ".md", "w") as f:
        f.write(text)
    log(f"wrote {out}.md")


if __name__ == "__main__":
    main()
