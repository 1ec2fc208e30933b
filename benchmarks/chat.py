"""Issue 5's benchmark: events/s of the full chat path, rawsse's demo app vs a vLLM-style app.

    python -m benchmarks.chat            # 3 interleaved repeats of 5 s at 64 and 512 streams
    python -m benchmarks.chat --quick    # 1 repeat of 2 s

Both servers answer ``POST /v1/chat/completions`` with ``{"model": "lorem", "stream": true,
"max_tokens": 200, ...}``: validate the request, generate 200 ``lorem`` tokens with no delay,
encode one ``chat.completion.chunk`` per token (plus the role chunk, the finish chunk and
``[DONE]``: 203 events per stream) and write them.
- ``rawsse``: ``rawsse serve --token-delay 0`` (the demo app: OpenAI dialect, ``id:`` lines for
  resume, replay store on), asyncio; ``rawsse-trio`` the same on trio.
- ``vllm-style``: ``benchmarks/peers/vllm_style.py``, Starlette + pydantic request and chunk
  models (``model_dump_json(exclude_unset=True)``, as vLLM does) + sse-starlette, on uvicorn
  (httptools, uvloop).
Server pinned to CPU 0, ``benchmarks/loadgen.py`` pinned to CPU 1. Writes
``benchmarks/results/chat.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from benchmarks import harness as h

BODY = json.dumps({"model": "lorem", "stream": True, "max_tokens": 200,
                   "messages": [{"role": "user", "content": "Write me something long."}]})
SERVERS = {
    "rawsse": h.Peer("rawsse", (h.PY, "-m", "rawsse", "serve", "--port", "{port}",
                                "--token-delay", "0", "--no-access-log", "--log-level", "warning"),
                     "rawsse serve (demo app), asyncio"),
    "rawsse-trio": h.Peer("rawsse-trio", (h.PY, "-m", "rawsse", "serve", "--port", "{port}",
                                          "--token-delay", "0", "--no-access-log",
                                          "--log-level", "warning", "--backend", "trio"),
                          "rawsse serve (demo app), trio"),
    "vllm-style": h.Peer("vllm-style", (h.PY, "-m", "uvicorn", "benchmarks.peers.vllm_style:app",
                                        "--host", "127.0.0.1", "--port", "{port}", "--http",
                                        "httptools", "--no-access-log", "--log-level", "warning",
                                        "--backlog", "4096"),
                         "Starlette + pydantic + sse-starlette on uvicorn (httptools, uvloop)"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--streams", default="64,512")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--out", default=str(h.RESULTS / "chat"))
    args = parser.parse_args(argv)
    h.install_cleanup()
    servers = args.servers.split(",")
    conc = [int(x) for x in args.streams.split(",")]
    repeat = args.repeat or (1 if args.quick else 3)
    duration = 2.0 if args.quick else 5.0
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {c: [] for c in conc} for s in servers}
    load_before = h.loadavg()
    context = h.context_line()
    started = time.monotonic()
    try:
        for rep in range(repeat):
            for name in servers:
                with h.running(SERVERS[name]) as server:
                    url = f"{server.base}/v1/chat/completions"
                    for c in conc:
                        cpu0, t0 = server.cpu_seconds(), time.monotonic()
                        r = h.loadgen(["run", url, "--streams", str(c), "--duration",
                                       str(duration), "--warmup", "1", "--body", BODY],
                                      timeout_s=duration + 60)
                        r["server_cpu"] = round((server.cpu_seconds() - cpu0)
                                                / (time.monotonic() - t0), 3)
                        runs[name][c].append(r)
                        log(f"[{rep + 1}/{repeat}] {name:12} {c:4} streams: "
                            f"{r['events_per_s']:>9,.0f} ev/s, {r['completed']} streams, "
                            f"errors {r['errors']}, ttfb p99 {r['ttfb_ms']['p99']} ms, "
                            f"cpu {r['server_cpu']} / client {r['client_cpu']}")
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        raise SystemExit(130) from None
    load_after = h.loadavg()
    med = {n: {c: {"ev": h.median([r["events_per_s"] for r in runs[n][c]]),
                   "ttfb50": h.median([r["ttfb_ms"]["p50"] for r in runs[n][c]]),
                   "ttfb99": h.median([r["ttfb_ms"]["p99"] for r in runs[n][c]]),
                   "cpu": h.median([r["server_cpu"] for r in runs[n][c]])}
               for c in conc} for n in servers}
    header = ["server"]
    for c in conc:
        header += [f"events/s @{c}", "x vllm-style", f"TTFB p50/p99 @{c} (ms)"]
    rows = []
    for n in servers:
        cells = [n]
        for c in conc:
            m = med[n][c]
            ref = med.get("vllm-style", {}).get(c, {}).get("ev")
            cells += [h.fmt(m["ev"]), h.ratio(m["ev"], ref),
                      f"{h.fmt(m['ttfb50'], 1)} / {h.fmt(m['ttfb99'], 1)}"]
        rows.append(cells)
    every = "; ".join(f"{n} @{c}: " + ", ".join(h.fmt(r["events_per_s"]) for r in runs[n][c])
                      for n in servers for c in conc)
    md = [
        f"## Chat path: rawsse demo app vs vLLM-style (`python -m benchmarks.chat"
        f"{' --quick' if args.quick else ''}`)",
        "",
        f"Run {datetime.datetime.now().strftime('%H:%M')} on {h.DATE}. Machine: {h.machine_line()} "
        f"{context} Load average before/after: {' '.join(load_before)} / {' '.join(load_after)}.",
        "",
        f"`POST /v1/chat/completions`, model `lorem`, `max_tokens` 200, no token delay: 203 "
        f"events per stream (role chunk, 200 content chunks, finish chunk, `[DONE]`). Medians of "
        f"{repeat} interleaved run(s) of {duration:g} s after 1 s warm-up.",
        "",
        h.markdown_table(header, rows),
        "",
        "Servers: " + "; ".join(f"**{n}**: {SERVERS[n].about}" for n in servers) + ".",
        "",
        f"Every run (events/s): {every}.",
        "",
        f"Total run time {(time.monotonic() - started) / 60:.1f} min.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    with open(args.out + ".json", "w") as f:
        json.dump({"date": h.DATE, "machine": h.machine_line(),
                   "runs": {n: {str(c): v for c, v in d.items()} for n, d in runs.items()}}, f,
                  indent=1)
    log(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
