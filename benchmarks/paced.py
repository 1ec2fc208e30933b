"""Paced capacity, side by side in one run: how many streams at 25 events/s one core keeps.

    python -m benchmarks.paced                      # 3 interleaved searches (about 40 minutes)
    python -m benchmarks.paced --quick              # 1 search, 4 s per point
    python -m benchmarks.paced --configs floor,rawsse,floor-engine,rawsse-engine

A *config* is a server and a shape. Shapes:
- ``stream`` (``POST /stream``): each stream's own source waits between its events: the floor
  with ``asyncio.sleep`` on a fixed schedule; rawsse with ``anyio.sleep`` on the same schedule
  (``rawsse``, ``rawsse-trio``), with ``rawsse.Ticker`` (``-ticker``), or with
  ``await rawsse.sleep(0.04)`` between events, relative to the last one (``-sleep``: the way
  the demo models and most hand-written producers pace, so every late wake-up costs events),
  or with ``asyncio.sleep`` exactly as the floor (``rawsse-asyncio``: rawsse's cost per event
  without anyio's).
- ``engine`` (``POST /engine``): one producer wakes every 40 ms and hands one token to each
  active stream's queue (vLLM's output loop); each stream encodes and sends it. The floor with
  an ``asyncio.Queue`` per stream, rawsse with an anyio memory object stream per stream (the
  engine waiting in ``anyio.sleep``, or in a ``Ticker`` for the ``-ticker`` servers).
- ``push`` (``POST /engine-push``, the ``-push-engine`` configs): the same engine, but it builds
  and queues each stream's event itself: the floor with ``transport.write``, rawsse with
  ``EventStream.send_nowait`` (its engine on a ``Ticker``). No stream task wakes per token.

A point (N streams, each started within the first second, held for ``--seconds`` after a 2 s
warm-up, on a fresh server pinned to CPU 0; ``benchmarks/loadgen.py`` on CPU 1) *passes* with no
errors, the inter-event gap p99 under 100 ms and at least 95% of the nominal N x 25 events/s
delivered. Each config's search starts at ``--start``, moves by x1.5 until it brackets the
limit, then bisects to a resolution of 125 streams (5% above 2,500). The searches run
interleaved, one point per config per round, so drift on the shared machine hits them alike.
The figure is the largest passing N (median over repeats) beside the events/s it delivered and
the server's share of the core.

Writes ``benchmarks/results/paced.md`` (and ``.json``) and prints the same markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks import harness as h

RATE = 25.0  # events/s per stream
GAP_LIMIT_MS = 100.0
DELIVERED_MIN = 0.95
RESOLUTION = 125
# A failing point where other processes took more than this share of the server's core is
# measured again (up to twice): on a shared machine it says nothing about the server.
DISTURBED = 0.15

# config name -> (peer, path)
CONFIGS: dict[str, tuple[str, str]] = {
    "floor": ("floor", "/stream"),
    "rawsse": ("rawsse", "/stream"),
    "rawsse-ticker": ("rawsse-ticker", "/stream"),
    "rawsse-sleep": ("rawsse-sleep", "/stream"),
    "rawsse-asyncio": ("rawsse-asyncio", "/stream"),
    "rawsse-trio": ("rawsse-trio", "/stream"),
    "rawsse-trio-ticker": ("rawsse-trio-ticker", "/stream"),
    "rawsse-trio-sleep": ("rawsse-trio-sleep", "/stream"),
    "floor-engine": ("floor", "/engine"),
    "rawsse-engine": ("rawsse", "/engine"),
    "rawsse-ticker-engine": ("rawsse-ticker", "/engine"),
    "rawsse-trio-engine": ("rawsse-trio", "/engine"),
    "rawsse-trio-ticker-engine": ("rawsse-trio-ticker", "/engine"),
    "floor-push-engine": ("floor", "/engine-push"),
    "rawsse-push-engine": ("rawsse-ticker", "/engine-push"),
    "rawsse-trio-push-engine": ("rawsse-trio-ticker", "/engine-push"),
}
FLOOR_OF = {"stream": "floor", "engine": "floor-engine", "push": "floor-push-engine"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_args(url: str, streams: int, seconds: float, warmup: float, ramp: float) -> list[str]:
    """The load generator's ``run`` arguments for one paced point."""
    return [
        "run",
        url,
        "--streams",
        str(streams),
        "--duration",
        str(seconds),
        "--warmup",
        str(warmup),
        "--ramp",
        str(ramp),
    ]


def shape_of(config: str) -> str:
    if config.endswith("-push-engine"):
        return "push"
    return "engine" if config.endswith("-engine") else "stream"


def point(config: str, streams: int, seconds: float) -> dict[str, Any]:
    """One fresh server, N paced streams: what the client saw and the server's CPU share."""
    peer, path = CONFIGS[config]
    delay = 1.0 / RATE
    ramp, warmup = 1.0, 2.0
    n = int((warmup + seconds + 5) * RATE)  # no stream ends inside the window
    try:
        with h.running(h.PEERS[peer]) as server:
            url = f"{server.base}{path}?n={n}&delay={delay}"
            cpu0, t0, busy0 = server.cpu_seconds(), time.monotonic(), h.cpu_busy()
            r = h.loadgen(
                run_args(url, streams, seconds, warmup, ramp),
                timeout_s=seconds + warmup + 120,
            )
            used = server.cpu_seconds() - cpu0
            r["server_cpu"] = round(used / (time.monotonic() - t0), 3)
            # What other tenants took of the server's core meanwhile: a failing point with a
            # large share here was starved, not slow, and is measured again.
            r["others_cpu"] = h.cpu_others(busy0, h.cpu_busy(), h.SERVER_CPU, used)
    except (RuntimeError, OSError) as exc:
        log(f"paced {config} {streams}: FAILED {exc}")
        return {
            "streams": streams,
            "events_per_s": 0.0,
            "delivered": 0.0,
            "errors": -1,
            "gap_ms": {"p50": None, "p99": None, "max": None},
            "server_cpu": None,
            "others_cpu": None,
            "client_cpu": None,
            "cpu_us_per_event": None,
            "streams_per_core": None,
            "pass": False,
            "failed": str(exc)[-300:],
        }
    r["delivered"] = round(r["events_per_s"] / (streams * RATE), 3)
    # Server CPU per delivered event (whole run incl. ramp and warm-up: an over-estimate that
    # is the same for every config) and the streams one whole core would hold at that cost.
    ev = r["events_per_s"]
    r["cpu_us_per_event"] = round(1e6 * r["server_cpu"] / ev, 2) if ev else None
    r["streams_per_core"] = round(streams / r["server_cpu"]) if r["server_cpu"] else None
    gap = r["gap_ms"]["p99"]
    r["pass"] = bool(
        r["errors"] == 0
        and gap is not None
        and gap < GAP_LIMIT_MS
        and r["delivered"] >= DELIVERED_MIN
    )
    log(
        f"paced {config:26} {streams:6}: {r['events_per_s']:>9,.0f} ev/s ({r['delivered']:.1%}"
        f" of nominal), gap p50/p99 {r['gap_ms']['p50']}/{gap} ms, errors {r['errors']}, "
        f"server cpu {r['server_cpu']} (others {r['others_cpu']}), {r['cpu_us_per_event']} us/ev,"
        f" client cpu {r['client_cpu']} -> "
        f"{'pass' if r['pass'] else 'FAIL'}"
    )
    return r


def _round(n: float) -> int:
    return max(RESOLUTION, round(n / RESOLUTION) * RESOLUTION)


def search(start: int, cap: int) -> Iterator[int]:
    """The N to try next, given (by ``send``) whether the last one passed.

    x1.5 up while passing, /1.5 down while failing, then bisection until the largest pass and
    the smallest fail are one resolution step apart (or 5% of the pass, whichever is larger).
    """
    lo, hi = 0, None
    n = _round(start)
    while True:
        ok = yield n
        if ok:
            lo = n
        else:
            hi = n
        if hi is None:
            if n >= cap:
                return
            n = min(cap, _round(n * 1.5))
            continue
        if lo == 0:
            if n <= RESOLUTION:
                return
            n = _round(n / 1.5)
            if n >= hi:
                n = hi - RESOLUTION
            continue
        if hi - lo <= max(RESOLUTION, lo * 0.05):
            return
        n = _round((lo + hi) / 2)
        if n in (lo, hi):
            return


def run_searches(
    configs: list[str], start: int, cap: int, seconds: float, retries: int = 2
) -> dict[str, dict[str, Any]]:
    """All configs' searches, interleaved: each round tries one point per unfinished config."""
    gens = {c: search(start, cap) for c in configs}
    nexts: dict[str, int | None] = {c: next(g) for c, g in gens.items()}
    points: dict[str, dict[int, dict[str, Any]]] = {c: {} for c in configs}
    while any(v is not None for v in nexts.values()):
        for config in configs:
            n = nexts[config]
            if n is None:
                continue
            if n in points[config]:  # already measured (a search may revisit): reuse it
                ok = points[config][n]["pass"]
            else:
                r = point(config, n, seconds)
                for _ in range(retries):
                    if r["pass"] or (r.get("others_cpu") or 0) < DISTURBED:
                        break
                    log(f"  (others took {r['others_cpu']:.0%} of the server's core: again)")
                    r = {**point(config, n, seconds), "disturbed_before": r}
                points[config][n] = r
                ok = r["pass"]
            try:
                nexts[config] = gens[config].send(ok)
            except StopIteration:
                nexts[config] = None
    out = {}
    for config in configs:
        passing = [n for n, r in points[config].items() if r["pass"]]
        failing = [
            n for n, r in points[config].items() if not r["pass"] and n > max(passing, default=0)
        ]
        best = max(passing, default=None)
        out[config] = {
            "max_streams": best,
            "first_fail": min(failing, default=None),
            "at_max": points[config][best] if best else None,
            "points": {str(k): v for k, v in sorted(points[config].items())},
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paced",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"from: {', '.join(CONFIGS)}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per point")
    parser.add_argument("--start", type=int, default=2000)
    parser.add_argument("--cap", type=int, default=12000)
    parser.add_argument(
        "--cost-at",
        type=int,
        default=1000,
        help="also measure every config at this N (0: skip), interleaved, "
        "--repeat times: server CPU per event, the steadier comparison",
    )
    parser.add_argument(
        "--searches",
        type=int,
        default=None,
        help="capacity searches to run (default: --repeat; 0: only the cost rounds)",
    )
    parser.add_argument(
        "--into",
        metavar="JSON",
        help="add to a saved paced.json (same configs): its searches plus the new ones; the "
        "new cost rounds replace its own (when any are measured); then render that",
    )
    parser.add_argument("--out", default=str(h.RESULTS / "paced"))
    parser.add_argument("--render", metavar="JSON", help="only re-render a saved paced.json")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            write_report(json.load(f), args.out)
        return
    h.install_cleanup()
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs: {', '.join(unknown)}")
    repeat = args.repeat or (1 if args.quick else 3)
    seconds = args.seconds or (4.0 if args.quick else 6.0)
    started = time.monotonic()
    meta = {
        "repeat": repeat,
        "seconds": seconds,
        "quick": args.quick,
        "command": "python -m benchmarks.paced"
        + (" --quick" if args.quick else "")
        + ("" if args.configs == ",".join(CONFIGS) else f" --configs {args.configs}"),
        "header": f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: "
        f"{h.machine_line()} {h.context_line()}",
    }
    runs = []
    cost: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    try:
        for i in range(repeat if args.cost_at else 0):
            log(f"-- cost at {args.cost_at} streams, round {i + 1} of {repeat}")
            for config in configs:
                cost[config].append(point(config, args.cost_at, seconds))
        searches = repeat if args.searches is None else args.searches
        for i in range(searches):
            log(f"-- search {i + 1} of {searches}")
            runs.append(run_searches(configs, args.start, args.cap, seconds))
    except KeyboardInterrupt:
        log("interrupted: servers stopped; reporting the searches that finished")
    meta["elapsed_min"] = round((time.monotonic() - started) / 60, 1)
    meta["cost_at"] = args.cost_at
    results = {"date": h.DATE, "meta": meta, "configs": configs, "runs": runs, "cost": cost}
    if args.into:
        with open(args.into) as f:
            saved = json.load(f)
        notes = []
        if any(cost.values()):
            saved["cost"] = cost
            notes.append(f"{repeat} cost round(s)")
        if runs:
            saved["runs"] += runs
            notes.append(f"{len(runs)} search(es)")
        saved["meta"]["cost_note"] = " ".join(
            [saved["meta"].get("cost_note", ""), f"Then {' and '.join(notes)}: {meta['header']}"]
        ).strip()
        saved["meta"]["elapsed_min"] = round(
            saved["meta"].get("elapsed_min", 0) + meta["elapsed_min"], 1
        )
        results = saved
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    write_report(results, args.out)


def cost_section(cost: dict[str, list[dict[str, Any]]], configs: list[str], n: int) -> list[str]:
    """Server CPU per delivered event at one N, medians of the interleaved rounds."""
    us = {c: h.median([p["cpu_us_per_event"] for p in cost.get(c, [])]) for c in configs}
    rows = []
    for config in configs:
        pts = cost.get(config, [])
        floor = us.get(FLOOR_OF[shape_of(config)])
        per_core = h.median([p["streams_per_core"] for p in pts])
        rows.append(
            [
                config,
                ", ".join(h.fmt(p["cpu_us_per_event"], 1) for p in pts),
                h.fmt(us[config], 1),
                h.ratio(floor, us[config]),
                h.fmt(per_core),
                h.fmt(h.median([p["delivered"] * 100 for p in pts]), 1) + "%",
                h.fmt(h.median([p["gap_ms"]["p99"] for p in pts]), 1),
                h.fmt(h.median([p.get("others_cpu") for p in pts]), 2),
            ]
        )
    return [
        f"### Cost per event at {n:,} streams (interleaved rounds; the steadier comparison)",
        "",
        h.markdown_table(
            [
                "config",
                "server CPU us per delivered event, each round",
                "median",
                "floor's cost / this (x floor)",
                "streams per whole core at this cost",
                "delivered (median)",
                "gap p99 ms (median)",
                "others' share of the server's core",
            ],
            rows,
        ),
        "",
        "CPU is the server process's user+system time over the whole point (ramp and warm-up "
        "included) divided by the events delivered in the measured window: an over-estimate "
        "common to every config. `x floor` > 1 means cheaper per event than the floor.",
        "",
    ]


def write_report(results: dict[str, Any], out: str) -> None:
    meta, runs, configs = results["meta"], results["runs"], results["configs"]
    md = [
        f"## Paced capacity (`{meta['command']}`)",
        "",
        meta["header"],
        "",
        *([meta["cost_note"], ""] if meta.get("cost_note") else []),
        f"25 events/s per stream, gap p99 < {GAP_LIMIT_MS:g} ms, ≥ {DELIVERED_MIN:.0%} of the "
        f"nominal events delivered, no errors; {meta['seconds']:g} s per point after a 2 s "
        f"warm-up; {len(runs)} interleaved search(es), resolution {RESOLUTION} streams.",
        "",
    ]
    cost = results.get("cost") or {}
    if any(cost.values()):
        md += cost_section(cost, configs, meta["cost_at"])
    medians = {c: h.median([r[c]["max_streams"] for r in runs if c in r]) for c in configs}
    rows = []
    for config in configs:
        floor = medians.get(FLOOR_OF[shape_of(config)])
        per_run = []
        for r in runs:
            x = r.get(config, {})
            at = x.get("at_max") or {}
            cpu = at.get("server_cpu")
            per_run.append(
                f"{h.fmt(x.get('max_streams'))} ({h.fmt(at.get('events_per_s'))} ev/s, "
                f"{at.get('delivered', 0):.1%}, cpu {h.fmt(cpu, 2)}, "
                f"others {h.fmt(at.get('others_cpu'), 2)})"
                if at
                else "—"
            )
        rows.append([config, *per_run, h.fmt(medians[config]), h.ratio(medians[config], floor)])
    md += [
        h.markdown_table(
            ["config"]
            + [
                f"run {i + 1}: max N (delivered events/s, share of nominal, server CPU, "
                "others' share of its core)"
                for i in range(len(runs))
            ]
            + ["median max N", "x floor (same shape)"],
            rows,
        ),
        "",
    ]
    md += [
        "Every point (N: events/s, share of nominal, gap p99 ms, server CPU, others' share of "
        "the server's core, verdict; a failing point with others above "
        f"{DISTURBED:.0%} was measured again, the last measurement is shown):",
        "",
    ]
    for i, r in enumerate(runs):
        for config in configs:
            if config not in r:
                continue
            pts = "; ".join(
                f"{k}: {h.fmt(p['events_per_s'])}, {p['delivered']:.1%}, "
                f"{h.fmt(p['gap_ms']['p99'], 1)}, {h.fmt(p['server_cpu'], 2)}, "
                f"{h.fmt(p.get('others_cpu'), 2)}, {'pass' if p['pass'] else 'fail'}"
                for k, p in r[config]["points"].items()
            )
            md.append(f"- run {i + 1}, {config}: {pts}")
    md += ["", f"Total run time {meta.get('elapsed_min')} min."]
    text = "\n".join(md) + "\n"
    print(text)
    with open(out + ".md", "w") as f:
        f.write(text)
    log(f"wrote {out}.md")


if __name__ == "__main__":
    main()
