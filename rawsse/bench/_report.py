"""What ``rawsse bench`` prints: the JSON result, the table, and the live progress line.

Contract: ``result_json(...)`` turns a finished run into one JSON-ready dict whose keys are the
command line's contract: ``streams``, ``completed``, ``errors`` (total failed streams),
``events``, ``events_per_s``, and per latency a nested object of milliseconds, so
``ttfb_ms.p50`` is a path: ``{"ttfb_ms": {"p50", "p90", "p99", "max", "mean"}}`` for
``connect_ms``, ``ttfb_ms``, ``headers_ms``, ``first_event_ms``, ``gap_ms``,
``heartbeat_gap_ms`` and ``stream_ms``; plus ``requests`` (started), ``requests_per_s``
(completed per second), ``connections`` (opened) and ``connections_per_s`` (from the first
connect's start to the last's end), ``bytes``, ``mb_per_s``, ``error_kinds`` (count per kind),
``error_samples`` (the first message of each kind), ``retries`` (requests resent after a
keep-alive connection died before answering), ``statuses``, ``cpu_s`` / ``events_per_cpu_s``
(the load generator's own CPU time in the run, and events per CPU second: its cost per event
on a machine shared with other work), and ``histograms``: for ``first_event_ms``, ``gap_ms``
and ``ttfb_ms`` a list of ``{"le": upper bound in ms, "count": n}`` buckets (1-2-5 steps, not
cumulative, from the first non-empty bucket to the last).

``format_table`` renders the same dict for people, with a text histogram of the time to the
first event and the gaps between events side by side; ``progress_line`` is one line about a
run in progress. Keys the command adds (``server``, ``processes``, ``source_addresses``) are
shown when present.
"""

from __future__ import annotations

from typing import Any

from rawsse.bench._run import BenchConfig, BenchState
from rawsse.bench._stats import Histogram

__all__ = ["format_table", "plural", "progress_line", "result_json"]

_LATENCIES = (
    ("connect_ms", "connect_us", "TCP connect"),
    ("ttfb_ms", "ttfb_us", "first byte"),
    ("headers_ms", "headers_us", "response head"),
    ("first_event_ms", "first_event_us", "first event"),
    ("gap_ms", "gap_us", "between events"),
    ("heartbeat_gap_ms", "heartbeat_gap_us", "between heartbeats"),
    ("stream_ms", "stream_us", "whole stream"),
)
# The distributions given bucket by bucket, and the two the table draws side by side.
_HISTOGRAMS = (
    ("first_event_ms", "first_event_us"),
    ("gap_ms", "gap_us"),
    ("ttfb_ms", "ttfb_us"),
)
_DRAWN = (("first_event_ms", "time to first event"), ("gap_ms", "between events"))
_BAR_WIDTH = 24
_EIGHTHS = " ▏▎▍▌▋▊▉"


def plural(n: int, word: str) -> str:
    """``1 stream``, ``2 streams``, ``1,000 streams``."""
    return f"{n:,} {word}{'' if n == 1 else ('es' if word.endswith('s') else 's')}"


def _mode(config: BenchConfig) -> str:
    if config.hold_s is not None:
        return "hold"
    return "open-loop" if config.rate is not None else "closed-loop"


def _per_s(count: int | float, elapsed: float) -> float:
    return round(count / elapsed, 1) if elapsed else 0.0


def result_json(config: BenchConfig, state: BenchState, url: str) -> dict[str, Any]:
    """The run's results as a JSON-ready dict (see the module contract)."""
    elapsed = state.elapsed_s
    result: dict[str, Any] = {
        "url": url,
        "mode": _mode(config),
        "streams": config.streams,
        "rate": config.rate,
        "requests": state.started,
        "requests_per_s": _per_s(state.completed, elapsed),
        "completed": state.completed,
        "errors": state.error_count,
        "cancelled": state.cancelled,
        "retries": state.retries,
        "error_kinds": dict(state.errors),
        "error_samples": dict(state.error_samples),
        "statuses": {str(status): count for status, count in sorted(state.statuses.items())},
        "peak_streams": state.peak_active,
        "connections": state.connections,
        "connections_per_s": round(state.connections_per_s, 1),
        "duration_s": round(elapsed, 3),
        "events": state.events,
        "events_per_s": _per_s(state.events, elapsed),
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
    result["histograms"] = {
        key: [{"le": edge / 1000, "count": count} for edge, count in getattr(state, name).coarse()]
        for key, name in _HISTOGRAMS
    }
    return result


def _bar(count: int, most: int, unicode: bool) -> str:
    if not count:
        return ""
    eighths = max(1, round(count / most * _BAR_WIDTH * 8))
    if not unicode:
        return "#" * max(1, round(eighths / 8))
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _histogram_lines(result: dict[str, Any], unicode: bool) -> list[str]:
    """The drawn distributions side by side on one shared axis of bucket bounds (ms)."""
    columns = [
        {bucket["le"]: bucket["count"] for bucket in result["histograms"][key]} for key, _ in _DRAWN
    ]
    bounds = sorted(set().union(*columns))
    if not bounds:
        return []
    cell = _BAR_WIDTH + 10
    header = f"  {'histogram (ms)':<16}" + "".join(f"{t:<{cell}}" for _, t in _DRAWN)
    lines = ["", header.rstrip()]
    for bound in bounds:
        row = f"  {'≤ ' if unicode else '<= '}{bound:<{14 if unicode else 13}g}"
        for column in columns:
            count = column.get(bound, 0)
            text = (
                f"{_bar(count, max(column.values(), default=1), unicode)} {count:,}"
                if count
                else ""
            )
            row += f"{text:<{cell}}"
        lines.append(row.rstrip())
    return lines


def format_table(result: dict[str, Any], *, unicode: bool = True) -> str:
    """A few lines of summary, a latency table and a histogram, for a terminal (``unicode``:
    draw with block characters, else with ``#``)."""
    lines = [
        f"rawsse bench  {result['url']}  ({result['mode']}, {plural(result['streams'], 'stream')}"
        + (f", {result['rate']}/s" if result["rate"] else "")
        + f", {result['duration_s']:.2f} s)",
    ]
    server = result.get("server")
    if server:
        lines.append(f"  server: {server['description']}")
    sources = result.get("source_addresses") or []
    if result.get("processes", 1) > 1 or sources:
        lines.append(
            f"  load: {plural(result.get('processes', 1), 'process')}"
            + (f" from {', '.join(sources)} (source ports chosen by bench)" if sources else "")
        )
    lines += [
        f"  requests {result['requests']:,} ({result['requests_per_s']:,.0f}/s)  "
        f"completed {result['completed']:,}  "
        f"errors {result['errors']:,}  cancelled {result['cancelled']:,}  "
        f"retries {result['retries']:,}  "
        f"peak streams {result['peak_streams']:,}",
        f"  connections {result['connections']:,} ({result['connections_per_s']:,.0f}/s)  "
        f"events {result['events']:,} ({result['events_per_s']:,.0f}/s)  "
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
    lines.extend(_histogram_lines(result, unicode))
    return "\n".join(lines)


def progress_line(config: BenchConfig, state: BenchState) -> str:
    """One line about a run in progress (for a terminal's stderr)."""
    elapsed = state.elapsed_s
    rate = state.events / elapsed if elapsed else 0.0
    first = state.first_event_us
    return (
        f"[{elapsed:6.1f}s] active {state.active:,}/{config.streams:,}  "
        f"done {state.completed:,}  errors {state.error_count:,}  "
        f"events {state.events:,} ({rate:,.0f}/s)"
        + (f"  first event p50 {first.percentile(50) / 1000:.1f} ms" if first.count else "")
    )
