"""Counters for streams and requests, rendered in the Prometheus text format.

Contract: ``StreamMetrics`` holds plain integers that the stream layer bumps on its hot path
(an attribute increment, no locks: one event loop per process). ``render_prometheus`` turns
them, with a server's ``ServerStats``, into the text exposition format (version 0.0.4) under
the names of the public contract. ``metrics_handler`` serves that at any path of an App; when
``prometheus_client`` is installed, ``register_with_prometheus_client`` exposes the same numbers
through its registry instead of duplicating them.

With ``--workers N`` every process counts its own streams; scrape each worker or aggregate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from rawsse._counters import METRICS, ServerStats, StreamMetrics
from rawsse.request import Request
from rawsse.response import Response

__all__ = [
    "METRICS",
    "StreamMetrics",
    "metrics_handler",
    "register_with_prometheus_client",
    "render_prometheus",
]


_HELP: list[tuple[str, str, str]] = [
    ("rawsse_streams_active", "gauge", "Event streams currently open."),
    ("rawsse_streams_total", "counter", "Event streams started."),
    ("rawsse_events_total", "counter", "Events written to event streams."),
    ("rawsse_bytes_sent_total", "counter", "Bytes written to client sockets."),
    ("rawsse_heartbeats_total", "counter", "Heartbeat frames written to idle streams."),
    ("rawsse_client_disconnects_total", "counter", "Streams ended by the client going away."),
    ("rawsse_slow_client_evictions_total", "counter", "Streams dropped for not reading in time."),
    ("rawsse_replay_errors_total", "counter", "Appends or reads the shared store could not do."),
]


def _samples(
    metrics: StreamMetrics, stats: ServerStats | None
) -> Iterator[tuple[str, str, str, Any]]:
    values = {
        "rawsse_streams_active": metrics.streams_active,
        "rawsse_streams_total": metrics.streams_total,
        "rawsse_events_total": metrics.events_total,
        "rawsse_bytes_sent_total": (stats.bytes_sent if stats else 0) + metrics.bytes_sent_total,
        "rawsse_heartbeats_total": metrics.heartbeats_total,
        "rawsse_client_disconnects_total": metrics.client_disconnects_total,
        "rawsse_slow_client_evictions_total": metrics.slow_client_evictions_total,
        "rawsse_replay_errors_total": metrics.replay_errors_total,
    }
    for name, kind, help_text in _HELP:
        yield name, kind, help_text, values[name]


def _by_status(stats: ServerStats | None) -> list[tuple[int, int]]:
    """Responses counted by status; ``200`` is there from the start, at 0, so that the series
    (and the name) exists before the first response is counted, as Prometheus advises for a
    label value known in advance (a first scrape of a fresh server is itself not counted yet)."""
    counts = dict(stats.requests_by_status) if stats else {}
    counts.setdefault(200, 0)
    return sorted(counts.items())


def render_prometheus(metrics: StreamMetrics = METRICS, stats: ServerStats | None = None) -> str:
    """The counters in the Prometheus text exposition format."""
    lines: list[str] = []
    for name, kind, help_text, value in _samples(metrics, stats):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    lines += [
        "# HELP rawsse_http_requests_total HTTP responses sent, by status.",
        "# TYPE rawsse_http_requests_total counter",
    ]
    for status, count in _by_status(stats):
        lines.append(f'rawsse_http_requests_total{{status="{status}"}} {count}')
    if stats is not None:
        lines += [
            "# HELP rawsse_connections_active Client connections currently open.",
            "# TYPE rawsse_connections_active gauge",
            f"rawsse_connections_active {stats.connections_active}",
        ]
    return "\n".join(lines) + "\n"


def metrics_handler(
    stats: ServerStats | Callable[[], ServerStats | None] | None = None,
    metrics: StreamMetrics = METRICS,
    *,
    use_prometheus_client: bool | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A handler serving ``/metrics``; ``stats`` may be a callable (the server is made later).

    When ``prometheus_client`` is installed (or ``use_prometheus_client`` is True), the page is
    its registry's output, with rawsse's counters registered as a collector: one page with the
    process metrics and any of the application's own, and no number counted twice.
    """
    current_stats: Callable[[], ServerStats | None] = stats if callable(stats) else (lambda: stats)
    generate = None
    if use_prometheus_client is not False:
        generate = _prometheus_client_page(current_stats, metrics)
        if generate is None and use_prometheus_client:
            raise RuntimeError("prometheus_client is not installed")

    async def serve_metrics(request: Request) -> Response:
        if generate is not None:
            body, content_type = generate()
            return Response(body, content_type=content_type)
        return Response(
            render_prometheus(metrics, current_stats()),
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )

    return serve_metrics


def _prometheus_client_page(
    stats: Callable[[], ServerStats | None], metrics: StreamMetrics
) -> Callable[[], tuple[bytes, str]] | None:
    try:
        from prometheus_client import (  # type: ignore[import-not-found,unused-ignore]
            CONTENT_TYPE_LATEST,
            REGISTRY,
            CollectorRegistry,
            generate_latest,
        )
    except ImportError:
        return None
    collector = _make_collector(stats, metrics)
    if collector is None:
        return None
    # rawsse's numbers belong to this App's server, so they live in a registry of their own;
    # the page is the process-wide registry (the application's metrics, process_*) plus them.
    own = CollectorRegistry(auto_describe=False)
    own.register(collector)

    def page() -> tuple[bytes, str]:
        return generate_latest(REGISTRY) + generate_latest(own), str(CONTENT_TYPE_LATEST)

    return page


def _make_collector(stats: Callable[[], ServerStats | None], metrics: StreamMetrics) -> Any:
    try:
        from prometheus_client.core import (  # type: ignore[import-not-found,unused-ignore]
            CounterMetricFamily,
            GaugeMetricFamily,
        )
    except ImportError:
        return None

    class RawsseCollector:
        """Exposes rawsse's counters through prometheus_client under the contract's names."""

        def collect(self) -> Iterator[Any]:
            current = stats()
            for name, kind, help_text, value in _samples(metrics, current):
                if kind == "gauge":
                    yield GaugeMetricFamily(name, help_text, value=value)
                else:
                    # prometheus_client appends _total itself.
                    yield CounterMetricFamily(name.removesuffix("_total"), help_text, value=value)
            family = CounterMetricFamily(
                "rawsse_http_requests", "HTTP responses sent, by status.", labels=["status"]
            )
            for status, count in _by_status(current):
                family.add_metric([str(status)], count)
            yield family
            if current is not None:
                yield GaugeMetricFamily(
                    "rawsse_connections_active",
                    "Client connections currently open.",
                    value=current.connections_active,
                )

    return RawsseCollector()


def register_with_prometheus_client(
    stats: ServerStats | None = None, metrics: StreamMetrics = METRICS
) -> bool:
    """Expose the counters through ``prometheus_client``'s registry, if it is installed.

    Returns False (and does nothing) when ``prometheus_client`` is not importable.
    """
    collector = _make_collector(lambda: stats, metrics)
    if collector is None:
        return False
    from prometheus_client.core import REGISTRY  # type: ignore[import-not-found,unused-ignore]

    REGISTRY.register(collector)
    return True
