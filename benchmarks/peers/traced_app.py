"""Apps with tracemalloc on, for finding where a held stream's memory goes.

Run: ``rawsse serve benchmarks.peers.traced_app:chat_app --token-delay 3600 --port 0`` (the demo
chat app) or ``...:plain_app`` (the benchmark workload, ``benchmarks/peers/rawsse_app.py``).
Two extra routes:

- ``GET /_mem/base``: collect garbage and start ``tracemalloc`` (30 frames): only what is
  allocated from then on is traced (call it once the server is warm, before opening the streams
  to measure);
- ``GET /_mem/diff?n=N&top=K``: collect garbage, snapshot, and answer JSON: bytes and blocks
  allocated since the baseline and still alive, per stream (divided by N), grouped two ways:
  by the innermost frame that is rawsse's or the benchmark's own code (``by_site``: who asked
  for the memory), and by the innermost frame of all (``by_line``: what was allocated), plus
  the process's VmRSS,
  and how long its full collection took (the pause every full pass of the cyclic collector
  costs with these streams held; tracemalloc's hooks do not slow a pass that frees nothing).
"""

from __future__ import annotations

import gc
import linecache
import time
import tracemalloc
from typing import Any

from benchmarks.peers import rawsse_app
from rawsse.app import App
from rawsse.cli._demo_app import DemoOptions, create_demo_app
from rawsse.request import Request
from rawsse.response import JSONResponse

_OWN = ("/rawsse/", "/benchmarks/")
_state: dict[str, Any] = {}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _site(tb: tracemalloc.Traceback) -> str:
    # A Traceback runs from the oldest frame to the most recent one.
    frames = list(tb)[::-1]
    for frame in frames:
        if any(part in frame.filename for part in _OWN):
            return _where(frame)
    return _where(frames[0])


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for part in ("/rawsse/", "/benchmarks/", "/site-packages/", "/lib/python3"):
        if part in name:
            name = name.split(part, 1)[1]
            break
    code = linecache.getline(frame.filename, frame.lineno).strip()[:70]
    return f"{name}:{frame.lineno}  {code}"


def _group(stats: list[tracemalloc.Statistic], key: Any, n: int, top: int) -> list[dict[str, Any]]:
    totals: dict[str, list[int]] = {}
    for stat in stats:
        k = key(stat.traceback)
        entry = totals.setdefault(k, [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return [
        {
            "where": k,
            "bytes_per_stream": round(v[0] / n, 1),
            "blocks_per_stream": round(v[1] / n, 2),
        }
        for k, v in rows
    ]


def _add_routes(app: App) -> App:
    async def base(request: Request) -> JSONResponse:
        gc.collect()
        tracemalloc.stop()
        _state["rss"] = _rss_kib()
        _state["tracked"] = len(gc.get_objects())
        tracemalloc.start(30)
        return JSONResponse({"rss_kib": _state["rss"]})

    async def diff(request: Request) -> JSONResponse:
        n = max(1, int(request.query.get("n", "1")))
        top = int(request.query.get("top", "30"))
        started = time.perf_counter()
        gc.collect()
        full_gc_ms = (time.perf_counter() - started) * 1000
        rss = _rss_kib()
        tracked = len(gc.get_objects()) - _state["tracked"]
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snapshot.statistics("traceback")
        total = sum(s.size for s in stats)
        blocks = sum(s.count for s in stats)
        return JSONResponse(
            {
                "streams": n,
                "traced_bytes_per_stream": round(total / n, 1),
                "traced_blocks_per_stream": round(blocks / n, 2),
                "rss_kib_per_stream": round((rss - _state["rss"]) / n, 2),
                # Objects the cyclic collector tracks: what each of its full passes walks.
                "gc_tracked_per_stream": round(tracked / n, 1),
                "full_gc_ms": round(full_gc_ms, 1),
                "by_site": _group(stats, _site, n, top),
                "by_line": _group(stats, lambda tb: _where(list(tb)[-1]), n, top),
            }
        )

    app.add_route("/_mem/base", base, ("GET",))
    app.add_route("/_mem/diff", diff, ("GET",))
    return app


chat_app = _add_routes(create_demo_app(DemoOptions(token_delay_s=3600.0)))
plain_app = _add_routes(rawsse_app.make_app(rawsse_app._anyio_source))
plain_ticker_app = _add_routes(rawsse_app.make_app(rawsse_app._ticker_source, "ticker"))
