"""What ``rawsse bench`` prints: the JSON result, the table, and the live progress line.

Contract: ``result_json(...)`` turns a finished run into one JSON-ready dict whose keys are the
command line's contract: ``streams``, ``completed``, ``errors`` (total failed streams),
``events``, ``events_per_s``, and per latency a nested object of milliseconds, so
``ttfb_ms.p50`` is a path: ``{"ttfb_ms": {"p50", "p90", "p99", "max", "mean"}}`` for
``connect_ms``, ``ttfb_ms``, ``headers_ms``, ``first_event_ms``, ``gap_ms``,
``heartbeat_gap_ms`` and ``stream_ms``; plus ``requests``, ``bytes``, ``mb_per_s``,
``error_kinds`` (count per kind), ``error_samples`` (the first message of each kind),
``retries`` (requests resent after a keep-alive connection died before answering),
``statuses``, and ``cpu_s`` / ``events_per_cpu_s`` (the load generator's own CPU time in the
run, and events per CPU second: its cost per event on a machine shared with other work).
``format_table`` renders the same dict for people; ``progress_line`` is one line about a run
in progress.
"""

from __future__ import annotations

from typing import Any

from rawsse.bench._run import BenchConfig, BenchState
from rawsse.bench._stats import Histogram

__all__ = ["format_table", "progress_line", "result_json"]

_LATENCIES = (
    ("connect_ms", "connect_us", "TCP connect"),
    ("ttfb_ms", "ttfb_us", "first byte"),
    ("headers_ms", "headers_us", "response head"),
    ("first_event_ms", "first_event_us", "first event"),
    ("gap_ms", "gap_us", "between events"),
    ("heartbeat_gap_ms", "heartbeat_gap_us", "between heartbeats"),
    ("stream_ms", "stream_us", "whole stream"),
)


def _mode(config: BenchConfig) -> str:
    if config.hold_s is not None:
        return "hold"
    return "open-loop" if config.rate is not None else "closed-loop"


def result_json(config: BenchConfig, state: BenchState, url: str) -> dict[str, Any]:
    """The run's results as a JSON-ready dict (see the module contract)."""
    elapsed = state.elapsed_s
    result: dict[str, Any] = {
        "url": url,
        "mode": _mode(config),
        "streams": config.streams,
        "rate": config.rate,
        "requests": state.started,
        "completed": state.completed,
        "errors": state.error_count,
        "cancelled": state.cancelled,
        "retries": state.retries,
        "error_kinds": dict(state.errors),
        "error_samples": dict(state.error_samples),
        "statuses": {str(status): count for status, count in sorted(state.statuses.items())},
        "peak_streams": state.peak_active,
        "duration_s": round(elapsed, 3),
        "events": state.events,
        "events_per_s": round(state.events / elapsed, 1) if elapsed else 0.0,
        "heartbeats": state.comments,
        "bytes": state.bytes,
        "payload_bytes": state.payload_bytes,
        "mb_per_s": round(state.bytes / elapsed / 1e6, 3) if elapsed else 0.0,
        # the load generator's own CPU: near duration_s means it, not the server, was the limit
        "cpu_s": round(state.cpu_s, 3),
        "events_per_cpu_s": round(state.events / state.cpu_s, 1) if state.cpu_s else 0.0,
    }
    for key, attribute, _ in _LATENCIES:
        histogram: Histogram = getattr(state, attribute)
        summary = histogram.summary_ms()
        summary["count"] = histogram.count
        result[key] = summary
    heartbeat = state.heartbeat_gap_us
    # Jitter of a periodic heartbeat: how far the slow tail strays from the typical interval.
    result["heartbeat_jitter_ms"] = round(
        (heartbeat.percentile(99) - heartbeat.percentile(50)) / 1000, 3
    )
    return result


def format_table(result: dict[str, Any]) -> str:
    """A few lines of summary and a latency table, for a terminal."""
    lines = [
        f"rawsse bench  {result['url']}  ({result['mode']}, {result['streams']} streams"
        + (f", {result['rate']}/s" if result["rate"] else "")
        + f", {result['duration_s']:.2f} s)",
        f"  requests {result['requests']:,}  completed {result['completed']:,}  "
        f"errors {result['errors']:,}  cancelled {result['cancelled']:,}  "
        f"retries {result['retries']:,}  "
        f"peak streams {result['peak_streams']:,}",
        f"  events {result['events']:,} ({result['events_per_s']:,.0f}/s)  "
        f"heartbeats {result['heartbeats']:,}  "
        f"bytes {result['bytes']:,} ({result['mb_per_s']:.2f} MB/s)",
    ]
    failed = {kind: n for kind, n in result["error_kinds"].items() if n}
    if failed:
        lines.append("  errors by kind: " + ", ".join(f"{k} {n}" for k, n in failed.items()))
        lines.extend(f"    {kind}: {result['error_samples'].get(kind, '')}" for kind in failed)
    lines.append("")
    lines.append(f"  {'latency (ms)':<22}{'count':>9}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}")
    for key, _, label in _LATENCIES:
        row = result[key]
        if not row["count"]:
            continue
        lines.append(
            f"  {label:<22}{row['count']:>9,}{row['p50']:>10.3f}{row['p90']:>10.3f}"
            f"{row['p99']:>10.3f}{row['max']:>10.3f}"
        )
    return "\n".join(lines)


def progress_line(config: BenchConfig, state: BenchState) -> str:
    """One line about a run in progress (for a terminal's stderr)."""
    elapsed = state.elapsed_s
    rate = state.events / elapsed if elapsed else 0.0
    first = state.first_event_us
    return (
        f"[{elapsed:6.1f}s] active {state.active:,}/{config.streams:,}  "
        f"done {state.completed:,}  errors {state.error_count:,}  "
        f"events {state.events:,} ({rate:,.0f}/s)  "
        f"first event p50 {first.percentile(50) / 1000:.1f} ms"
    )
